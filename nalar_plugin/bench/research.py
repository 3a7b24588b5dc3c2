"""``nalar bench research``: a deep-research LangGraph app, plain and served by nalar.

The app (:mod:`.research_app`) is written the way a LangGraph user writes it, with
nothing nalar-specific inside: ``plan`` asks the model for k topics (2..6), a
``Send`` fan-out runs ``research`` per topic (an ``async`` ``web_search`` tool, then
one summary call), and ``write`` makes one final call over the summaries. Every
model call is ``await llm.ainvoke(messages)`` on a ``ChatOpenAI`` client; the app
balances its calls over the R replicas itself, round robin (``itertools.cycle``).
This module is the harness that serves and measures it.

Two systems run the same app on the same requests:

* ``langgraph`` - ``app.ainvoke`` per request, with a ``thread_id``;
* ``nalar`` - the same, plus ``rt.callback()`` in the config and
  ``rt.deploy_model("llm", llms, capacity=...)`` on a threads-mode ``Runtime()``:
  nalar chooses the replica of every call (least loaded, session affinity).

The replicas are :class:`~nalar_plugin.testing.EngineServer` s in a separate
process (:mod:`.replicas`), fresh for every run, so engine caches start empty and
the driver's CPU is the app's. Each (rate, system) run is also a fresh driver
subprocess: one asyncio loop in its main thread starts every request of a seeded
open-loop Poisson schedule at its absolute time. Latencies are **wall seconds**
from the scheduled arrival to completion, so a generator that falls behind is
penalised; the engines' clock runs at ``time_scale`` wall seconds per model second.

Each run reports requests scheduled, issued and completed, the generator's start lag,
latency mean/p50/p95/p99/max, model and tool calls per second (a callback handler
counts them), the driver's CPU per call (``getrusage``, threads included, from the
first arrival to the end of the drain), and the replicas' requests and prefix-cache
hit rates (``GET /v1/metrics``). The parent adds the ratios nalar/langgraph and each
system's knee (:data:`KNEE_DEFINITION`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.config
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from tqdm import tqdm

from .. import errors as nalar_errors
from ..errors import ConfigError, NalarError, RuntimeStateError
from ..runtime import Runtime
from .plots import pyplot
from .replicas import Job, Replicas, make_schedule, replica_metrics, schedule_digest
from .research_app import SEARCH_SCALE_ENV, ResearchContext, build_app, make_llms, web_search
from .stats import latency_stats

__all__ = ["Job", "ResearchContext", "ResearchSettings", "SYSTEMS", "bench_research", "build_app", "format_table",
           "knee", "make_llms", "make_schedule", "plot_research", "run_system", "schedule_digest", "web_search"]

SYSTEMS = ("langgraph", "nalar")
BASELINE = "langgraph"
KNEE_FACTOR = 2.0
KNEE_DEFINITION = (f"the highest offered rate r such that at every rate <= r the system completed every request "
                   f"with mean latency <= {KNEE_FACTOR:g}x its mean latency at the lowest rate")


# ------------------------------------------------------- one system, in its own process
class CallCounter(BaseCallbackHandler):
    """Counts the model and tool calls a run made (the same handler for both systems)."""

    run_inline = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = {"model": 0, "tool": 0, "errors": 0}

    def _add(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        """Count a finished model call."""
        self._add("model")

    def on_tool_end(self, output: Any, **kwargs: Any) -> None:
        """Count a finished tool call."""
        self._add("tool")

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        """Count a failed model call."""
        self._add("errors")

    def on_tool_error(self, error: BaseException, **kwargs: Any) -> None:
        """Count a failed tool call."""
        self._add("errors")


@dataclass
class _Record:
    """One issued request: its scheduled and actual start, its end (``perf_counter``) and outcome."""

    scheduled: float
    started: float = 0.0
    ended: float = 0.0
    ok: bool = False
    report: str | None = None
    error: str | None = None


async def _drive(app: Any, jobs: Sequence[Job], context: ResearchContext, config_for: Callable[[Job], RunnableConfig],
                 drain_s: float, on_done: Callable[[_Record], None]) -> tuple[list[_Record], float]:
    """Start every job at its absolute time, then wait up to ``drain_s`` past the last arrival.

    Returns:
        One record per issued job, and the wall time (``perf_counter``) of time 0.
    """
    t0 = time.perf_counter() + 0.2
    records: list[_Record] = []

    async def one(job: Job, rec: _Record) -> None:
        rec.started = time.perf_counter()
        try:
            out = await app.ainvoke({"question": job.question}, config_for(job), context=context)
            rec.report, rec.ok = out["report"], True
        except Exception as exc:  # a failed request is a measurement, not a crash
            rec.error = f"{type(exc).__name__}: {exc}"[:300]
        rec.ended = time.perf_counter()
        on_done(rec)

    tasks = []
    for job in jobs:
        delay = t0 + job.at_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        rec = _Record(t0 + job.at_s)
        records.append(rec)
        tasks.append(asyncio.create_task(one(job, rec)))
    _, pending = await asyncio.wait(tasks, timeout=drain_s) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return records, t0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_system(spec: dict[str, Any], get_urls: Callable[[], Sequence[str]],
               on_done: Callable[[_Record], None] = lambda r: None) -> dict[str, Any]:
    """Serve one schedule with one system in this process and measure it.

    Args:
        spec: ``system``, ``rps``, ``duration_s``, ``seed``, ``time_scale``, ``capacity``,
            ``drain_s``, ``keep_answers``, ``processes`` and ``nalar_config``.
        get_urls: Returns the replicas' base URLs (called once, after nalar's Runtime started).
        on_done: Called with each finished request's record.

    Returns:
        The run's JSON summary.
    """
    importlib.import_module("langchain_openai")  # while the replicas start, not after

    os.environ[SEARCH_SCALE_ENV] = repr(spec["time_scale"])
    system, seed, rps = spec["system"], spec["seed"], spec["rps"]
    jobs = make_schedule(seed, rps, spec["duration_s"])
    app, counter = build_app(), CallCounter()
    with contextlib.ExitStack() as stack:
        callback: Callable[[], list[Any]] = list
        rt: Any = None
        if system == "nalar":
            if spec.get("nalar_config"):
                stack.enter_context(dask.config.set({"nalar": spec["nalar_config"]}))
            # A fresh journal: the same schedule makes the same idempotency keys.
            state_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="nalar-research-"))
            rt = stack.enter_context(Runtime(state_dir=state_dir, processes=spec.get("processes") or None))
        elif system != BASELINE:
            raise ConfigError(f"no system {system!r}; choose from {list(SYSTEMS)}")
        urls = list(get_urls())
        llms = make_llms(urls)
        context = ResearchContext(llms)
        if rt is not None:
            rt.deploy_model("llm", llms, capacity=spec["capacity"])
            callback = lambda: [rt.callback()]  # noqa: E731

        def config_for(job: Job, tag: str = str(seed)) -> RunnableConfig:
            return {"callbacks": [*callback(), counter], "configurable": {"thread_id": f"research-{tag}-{job.index}"}}

        async def measure() -> tuple[list[_Record], float, float, list[dict[str, Any]]]:
            # A model call per replica and a tool call first, outside the measurement and in
            # the same loop (the clients' connection pools belong to it): lazy imports,
            # connections, nalar's adapters.
            warm = config_for(Job(-1, 0.0, ""), "warmup")
            await asyncio.gather(web_search.ainvoke({"query": "warm-up"}, warm),
                                 *(llm.ainvoke([HumanMessage("Say hello.")], warm) for llm in llms))
            counter.counts = dict.fromkeys(counter.counts, 0)
            before = replica_metrics(urls)
            cpu0 = _cpu_s()
            records, t0 = await _drive(app, jobs, context, config_for, spec["drain_s"], on_done)
            return records, t0, _cpu_s() - cpu0, before

        records, t0, cpu, before = asyncio.run(measure())
        end = max((r.ended for r in records if r.ended), default=t0)
        control = rt.stats()["control"] if rt is not None else None
    after = replica_metrics(urls)
    return _summary(spec, urls, jobs, records, t0, end, cpu, counter, before, after, control)


def _summary(spec: dict[str, Any], urls: Sequence[str], jobs: Sequence[Job], records: Sequence[_Record], t0: float,
             end: float, cpu: float, counter: CallCounter, before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]],
             control: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON summary of one run."""
    done = [r for r in records if r.ok]
    lags = [r.started - r.scheduled for r in records if r.started]
    wall = max(end - t0, 1e-9)
    calls = counter.counts["model"] + counter.counts["tool"]
    replicas = []
    for b, a in zip(before, after):
        prompt, cached = a["prompt_tokens"] - b["prompt_tokens"], a["cached_tokens"] - b["cached_tokens"]
        replicas.append({"name": a["name"], "requests": a["admitted"] - b["admitted"], "prompt_tokens": prompt,
                         "cached_tokens": cached, "prefix_cache_hit_rate": round(cached / prompt, 3) if prompt else None,
                         "busy_s": round(a["busy_s"] - b["busy_s"], 2)})
    prompt = sum(r["prompt_tokens"] for r in replicas)
    answers = [[i, r.report] for i, r in enumerate(records) if r.ok]
    return {
        "benchmark": "research", "system": spec["system"], "rps_offered": spec["rps"], "duration_s": spec["duration_s"],
        "seed": spec["seed"], "time_scale": spec["time_scale"], "replicas": len(urls),
        "capacity": spec["capacity"] if spec["system"] == "nalar" else None,
        "routing": "nalar (least loaded, session affinity)" if spec["system"] == "nalar" else "client round robin",
        "schedule_sha256": schedule_digest(jobs), "requests_scheduled": len(jobs), "requests_issued": len(records),
        "completed": len(done), "failed": len(jobs) - len(done),
        "max_start_lag_s": round(max(lags, default=0.0), 4),
        "mean_start_lag_s": round(sum(lags) / len(lags), 4) if lags else None,
        "latency_s": latency_stats([r.ended - r.scheduled for r in done]),
        "rps_completed": round(len(done) / wall, 3),
        "calls": {**counter.counts, "total": calls},
        "calls_per_s": round(calls / wall, 2), "wall_s": round(wall, 3),
        "driver_cpu_s": round(cpu, 3), "driver_cpu_per_wall": round(cpu / wall, 3),
        "driver_cpu_per_call_us": round(1e6 * cpu / calls, 1) if calls else None,
        "server_requests": sum(r["requests"] for r in replicas),
        "prefix_cache_hit_rate": round(sum(r["cached_tokens"] for r in replicas) / prompt, 3) if prompt else None,
        "replica_metrics": replicas,
        "answers_sha256": hashlib.sha256(json.dumps(answers).encode()).hexdigest(),
        **({"answers": answers} if spec.get("keep_answers") else {}),
        "errors": sorted({r.error for r in records if r.error})[:5] + ([f"{len(records) - len(done)} unfinished"]
                                                                         if any(not r.ended for r in records) else []),
        "nalar": None if control is None else {k: v for k, v in control.items()
                                               if k in ("ticks", "tick_ms_p50", "tick_ms_max", "futures_max")},
    }


def _child_main(argv: Sequence[str]) -> int:
    """``python -m nalar_plugin.bench.research SPEC_JSON``: one run; JSON lines on stdout.

    The replicas' URLs arrive on stdin (one JSON list), so the driver starts while the
    replicas do.
    """
    spec = json.loads(argv[0])
    lock = threading.Lock()

    def emit(obj: dict[str, Any]) -> None:
        with lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    def urls() -> list[str]:
        line = sys.stdin.readline()
        if not line:
            raise RuntimeStateError("no replica URLs on stdin")
        return list(json.loads(line))

    try:
        result = run_system(spec, urls, lambda rec: emit({"done": 1, "ok": rec.ok}))
    except NalarError as exc:
        emit({"error": {"type": type(exc).__name__, "message": str(exc)}})
        return 2
    emit({"result": result})
    return 0


# ---------------------------------------------------------------------- the parent
@dataclass(frozen=True)
class ResearchSettings:
    """What ``nalar bench research`` runs.

    Attributes:
        rps: Offered rates, requests per wall second.
        duration_s: Wall seconds of arrivals per run.
        replicas: LLM replicas (engine servers).
        seed: Seed of the schedule and the model's answers.
        time_scale: Wall seconds per model second of the engines and the search tool
            (0.3: a 1k-token prompt with 130 output tokens takes about 0.65 s).
        capacity: The nalar system's admitted calls per replica (default: the engines'
            ``max_batch`` plus 2, so a call waits in each engine while the next one is
            admitted: the admission round trip never leaves a batch slot idle).
        systems: Systems to run (``langgraph``, ``nalar``).
        drain_s: Wall seconds to wait past the last arrival; unfinished requests fail.
        max_batch: Batch slots per engine.
        keep_answers: Put every completed request's report in the run's JSON.
        processes: Run nalar's workers as processes (default: threads; their CPU is then
            not in ``driver_cpu_s``).
        progress: Show a progress bar.
    """

    rps: tuple[float, ...] = (4.0, 8.0, 12.0, 16.0, 20.0)
    duration_s: float = 20.0
    replicas: int = 4
    seed: int = 0
    time_scale: float = 0.3
    capacity: int | None = None
    systems: tuple[str, ...] = SYSTEMS
    drain_s: float | None = None
    max_batch: int = 16
    keep_answers: bool = False
    processes: bool = False
    progress: bool = True
    nalar_config: dict[str, Any] = field(default_factory=dict)

    def slots(self) -> int:
        """The admitted calls per replica (see ``capacity``)."""
        return self.capacity if self.capacity is not None else self.max_batch + 2

    def drain(self) -> float:
        """Wall seconds to wait past the last arrival (default: 60 s plus twice the duration)."""
        return self.drain_s if self.drain_s is not None else 60.0 + 2 * self.duration_s


def _run_child(spec: dict[str, Any], replicas: Replicas, bar: Any) -> dict[str, Any]:
    """Run one driver subprocess against ``replicas``; forward its progress to ``bar``.

    Returns:
        The run's summary.

    Raises:
        NalarError: The run was refused (e.g. ``PolicyNotFoundError``), as the driver raised it.
        RuntimeStateError: The driver or the replicas failed.
    """
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen([sys.executable, "-m", "nalar_plugin.bench.research", json.dumps(spec)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        result: dict[str, Any] | None = None
        failure: dict[str, Any] | None = None
        failed = 0
        try:
            urls = replicas.ready()
            with proc.stdin:
                proc.stdin.write(json.dumps(urls) + "\n")
            for line in proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "done" in msg:
                    failed += 0 if msg["ok"] else 1
                    bar.update(1)
                    if failed:
                        bar.set_postfix(failed=failed, refresh=False)
                result = msg.get("result", result)
                failure = msg.get("error", failure)
        finally:
            if proc.poll() is None and result is None and failure is None:  # interrupted, or no replicas
                proc.kill()
            for stream in (proc.stdin, proc.stdout):
                stream.close()
            code = proc.wait()
        if failure is not None:  # re-raised with its type, e.g. PolicyNotFoundError
            kind = getattr(nalar_errors, str(failure["type"]), None)
            cls = kind if isinstance(kind, type) and issubclass(kind, NalarError) else ConfigError
            raise cls(failure["message"])
        if result is None:
            errors.seek(0)
            raise RuntimeStateError(f"the {spec['system']} driver exited with {code} and no result:\n"
                                    f"{errors.read()[-3000:]}")
        return result


def knee(runs: Sequence[dict[str, Any]], factor: float = KNEE_FACTOR) -> float | None:
    """The knee of one system's runs (see :data:`KNEE_DEFINITION`); ``None`` if even the lowest rate fails."""
    ordered = sorted(runs, key=lambda r: r["rps_offered"])
    if not ordered or ordered[0]["failed"] or ordered[0]["latency_s"]["mean"] is None:
        return None
    base, best = ordered[0]["latency_s"]["mean"], None
    for r in ordered:
        mean = r["latency_s"]["mean"]
        if r["failed"] or mean is None or mean > factor * base:
            break
        best = float(r["rps_offered"])
    return best


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def bench_research(settings: ResearchSettings) -> dict[str, Any]:
    """Run every system at every rate, each in a fresh driver with fresh replicas; compare them.

    Args:
        settings: What to run.

    Returns:
        ``{"runs": {system: [summary, ...]}, "ratios": [...], "knee": {...}, "checks": {...}, ...}``.

    Raises:
        ConfigError: A bad setting, or a run refused by nalar.
        RuntimeStateError: A driver or the replicas failed.
    """
    s = settings
    unknown = [x for x in s.systems if x not in SYSTEMS]
    if unknown or not s.systems or not s.rps or s.duration_s <= 0 or s.replicas < 1 or s.time_scale <= 0:
        raise ConfigError(f"bad research settings: systems {list(s.systems)} (choose from {list(SYSTEMS)}), "
                          f"rps {list(s.rps)}, duration {s.duration_s}, replicas {s.replicas}, time_scale {s.time_scale}")
    total = sum(len(make_schedule(s.seed, r, s.duration_s)) for r in s.rps) * len(s.systems)
    load = os.getloadavg()[0]  # other work on the host skews every figure: report it
    runs: dict[str, list[dict[str, Any]]] = {x: [] for x in s.systems}
    with tqdm(total=total, desc="research", unit="req", disable=not s.progress, leave=False) as bar:
        for rate in s.rps:
            for system in s.systems:
                bar.set_description(f"research {system} {rate:g} rps")
                spec = {"system": system, "rps": rate, "duration_s": s.duration_s, "seed": s.seed,
                        "time_scale": s.time_scale, "capacity": s.slots(), "drain_s": s.drain(),
                        "keep_answers": s.keep_answers, "processes": s.processes, "nalar_config": s.nalar_config}
                with Replicas(s.replicas, s.time_scale, s.seed, max_batch=s.max_batch) as replicas:
                    runs[system].append(_run_child(spec, replicas, bar))
    return _report(s, runs, (load, os.getloadavg()[0]))


def _report(s: ResearchSettings, runs: dict[str, list[dict[str, Any]]],
            load: tuple[float, float]) -> dict[str, Any]:
    """The parent's JSON: every run, the ratios nalar/langgraph, the knees and the checks."""
    ratios = []
    if "nalar" in runs and BASELINE in runs:
        for n, b in zip(runs["nalar"], runs[BASELINE]):
            ratios.append({"rps": n["rps_offered"], "nalar/langgraph": {
                "mean": _ratio(n["latency_s"]["mean"], b["latency_s"]["mean"]),
                "p99": _ratio(n["latency_s"]["p99"], b["latency_s"]["p99"]),
                "calls_per_s": _ratio(n["calls_per_s"], b["calls_per_s"]),
                "driver_cpu_per_call": _ratio(n["driver_cpu_per_call_us"], b["driver_cpu_per_call_us"])}})
    columns = list(zip(*runs.values()))
    return {
        "benchmark": "research", "seed": s.seed, "time_scale": s.time_scale, "duration_s": s.duration_s,
        "replicas": s.replicas, "max_batch": s.max_batch, "capacity": s.slots(), "systems": list(s.systems),
        "rps": list(s.rps),
        "units": {"latency_s": "wall seconds from scheduled arrival to completion",
                  "rps": "requests per wall second, open-loop Poisson",
                  "time_scale": "wall seconds per model second of the engines and the search tool",
                  "driver_cpu_s": "user+sys CPU of the driver process (all its threads) from the first "
                                  "arrival to the end of the drain",
                  "calls": "model and tool calls that finished, counted by a callback handler"},
        "runs": runs,
        "ratios": ratios,
        "knee": {"definition": KNEE_DEFINITION, "factor": KNEE_FACTOR,
                 **{f"{x}_rps": knee(r) for x, r in runs.items()}},
        "checks": {"schedule_identical": all(len({r["schedule_sha256"] for r in col}) == 1 for col in columns),
                   "answers_identical": all(len({r["answers_sha256"] for r in col}) == 1 for col in columns)},
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": sys.platform,
                 "loadavg_1m_start": round(load[0], 2), "loadavg_1m_end": round(load[1], 2)},
    }


def format_table(data: dict[str, Any]) -> str:
    """A plain-text table: each system's figures side by side, and the ratios nalar/langgraph."""
    head = (f"{'rps':>5} {'system':<9} {'done':>9} {'lag':>6} {'mean':>7} {'p50':>7} {'p99':>7} {'calls/s':>8} "
            f"{'cpu/call':>9} {'cache':>6} | {'mean x':>6} {'p99 x':>6}")
    lines = [f"research (seed {data['seed']}, {data['replicas']} replicas, time_scale {data['time_scale']}): "
             "latency in wall seconds; cpu/call in us of driver CPU; x = nalar / langgraph", head, "-" * len(head)]
    ratios = {r["rps"]: r["nalar/langgraph"] for r in data["ratios"]}

    def f(x: Any, w: int, d: int = 2) -> str:
        return f"{x:>{w}.{d}f}" if isinstance(x, (int, float)) else f"{'-':>{w}}"

    for i, rate in enumerate(data["rps"]):
        for system, rs in data["runs"].items():
            m, lat = rs[i], rs[i]["latency_s"]
            x = ratios.get(rate, {}) if system == "nalar" else {}
            lines.append(f"{rate:>5g} {system:<9} {m['completed']:>4}/{m['requests_scheduled']:<4} "
                         f"{f(m['max_start_lag_s'], 6)} {f(lat['mean'], 7)} {f(lat['p50'], 7)} {f(lat['p99'], 7)} "
                         f"{f(m['calls_per_s'], 8, 1)} {f(m['driver_cpu_per_call_us'], 9, 0)} "
                         f"{f(m['prefix_cache_hit_rate'], 6)} | {f(x.get('mean'), 6)} {f(x.get('p99'), 6)}")
    k = data["knee"]
    lines.append(f"knee ({KNEE_FACTOR:g}x the lowest-rate mean): "
                 + ", ".join(f"{x} {k.get(f'{x}_rps')}" for x in data["runs"]))
    lines.append(f"same schedule for every system: {data['checks']['schedule_identical']}; "
                 f"same answers: {data['checks']['answers_identical']}")
    host = data["host"]
    lines.append(f"host: {host['cpus']} CPUs, 1-minute load average {host['loadavg_1m_start']} at the start, "
                 f"{host['loadavg_1m_end']} at the end")
    return "\n".join(lines)


def plot_research(data: dict[str, Any], path: str) -> None:
    """Write a PNG of mean and P99 latency against offered rate for every system.

    Raises:
        ConfigError: matplotlib is missing.
    """
    plt = pyplot()
    colors = {"nalar": "tab:blue", "langgraph": "tab:red"}
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for system, rs in data["runs"].items():
        rates = [r["rps_offered"] for r in rs]
        ax.plot(rates, [r["latency_s"]["mean"] for r in rs], "o-", color=colors.get(system), label=f"{system} mean")
        ax.plot(rates, [r["latency_s"]["p99"] for r in rs], "s--", color=colors.get(system), alpha=0.7,
                label=f"{system} p99")
    ax.set_xlabel("offered load (requests per second)")
    ax.set_ylabel("latency (wall seconds)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"research: {data['replicas']} replicas, seed {data['seed']}, time_scale {data['time_scale']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_child_main(sys.argv[1:]))
