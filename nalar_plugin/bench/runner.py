"""One benchmark run: a workload's trace served by one system, measured in model seconds.

Systems:

* ``langgraph`` - the app as users run it today: concurrent ``ainvoke`` per
  request, each call sent to the engine the app's static client-side router
  picks, FCFS at each engine (the engine's own queue);
* ``nalar`` - the same app with ``rt.callback()`` in its config and the models
  declared with ``rt.deploy_model``: every model and tool call is a future, the
  local controllers admit at most ``max_batch`` calls per engine and the policy
  (default ``nalar``: least-loaded routing, migration, re-allocation) decides
  where and in which order they run; for ``swe`` the default app is the futures
  workflow (``--app futures``);
* ``fcfs`` - nalar itself with the ``fcfs`` policy: no migration, no
  re-allocation, first come first served; it separates what the policies win
  from what the plumbing costs.

Latencies are wall seconds divided by ``time_scale``: model seconds, so results
do not depend on how fast the simulation runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from tqdm import tqdm

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..runtime import Runtime
from ..scheduler.decisions import Migrate, Provision, SetPriority
from ..testing import EngineConfig, FarmProvisioner
from .bound import capacity_bound
from .deploy import Deployment, ModelProvisioner
from .env import Env, RequestRecord
from .policies import BenchPolicies, make_policy
from .stats import summarize
from .trace import Trace, apportion
from .workloads import Workload, workload

__all__ = ["SYSTEMS", "RunResult", "RunSettings", "run"]

logger = logging.getLogger(__name__)

SYSTEMS = ("nalar", "langgraph", "fcfs")


@dataclass(frozen=True)
class RunSettings:
    """What to run; ``None`` takes the workload's default.

    Attributes:
        workload: ``financial``, ``router`` or ``swe``.
        system: ``nalar``, ``langgraph`` or ``fcfs``.
        rps: Offered requests per model second.
        duration_s: Model seconds of arrivals.
        seed: Seed of the trace and the farm.
        time_scale: Wall seconds per model second.
        engines: Engines of the farm (split over agent types by demand).
        max_batch: Batch slots per engine.
        warmup_s: Model seconds an engine needs when it moves to another agent type
            (default: the engine model's 30).
        app: ``graph`` or ``futures`` (``swe`` only); default: ``futures`` for
            nalar and fcfs on ``swe``, else ``graph``.
        policy: The policy of the ``nalar`` system: an installed policy's name, or
            names joined by ``+`` (default: the workload's).
        admit: Calls the local controllers admit per instance at once. ``None``
            admits ``max_batch + 1``: a slot is held from admission until Dask
            reports the call done, so one call waiting in the engine hides that
            round trip (admitting exactly ``max_batch`` idles every engine for it);
            0 admits everything (the engines queue, as with the baseline).
        tick_s: Global controller period in model seconds (100 ms, as a real
            deployment would tick; the wall period is this times ``time_scale``).
        drain: Model seconds to wait past the last expected completion, as a
            multiple of ``duration_s``; requests still running then count as failed.
        slo_s: The per-request latency SLO of ``goodput`` (model seconds; default twice
            the trace's lower bound, the bound of a sustained rate).
        shed: nalar only: every model component gets this admission SLO per call (model
            seconds); calls expected to take longer are rejected at admission and their
            requests fail (``AdmissionRejectedError``). ``None``: no shedding.
        max_engines: nalar only: the farm grows to at most this many live engines when the
            policy provisions new ones (``autoscale``); ``None``: as many as it asks for.
        progress: Show a progress bar.
    """

    workload: str
    system: str
    rps: float
    duration_s: float | None = None
    seed: int = 0
    time_scale: float | None = None
    engines: int | None = None
    max_batch: int | None = None
    warmup_s: float | None = None
    app: str | None = None
    policy: str | None = None
    admit: int | None = None
    tick_s: float = 0.1
    drain: float = 2.0
    slo_s: float | None = None
    shed: float | None = None
    max_engines: int | None = None
    progress: bool = True

    def resolved(self) -> RunSettings:
        """These settings with every default filled in.

        Raises:
            ConfigError: An unknown workload, system or app.
        """
        wl = workload(self.workload)
        if self.system not in SYSTEMS:
            raise ConfigError(f"no system {self.system!r}; choose one of {list(SYSTEMS)}")
        app = self.app or ("futures" if "futures" in wl.apps and self.system != "langgraph" else "graph")
        if app not in wl.apps:
            raise ConfigError(f"workload {wl.name} has no {app!r} app; it has {list(wl.apps)}")
        if app == "futures" and self.system == "langgraph":
            raise ConfigError("the futures workflow runs on nalar; the langgraph baseline runs the graph app")
        return replace(
            self,
            duration_s=self.duration_s if self.duration_s is not None else wl.duration_s,
            time_scale=self.time_scale if self.time_scale is not None else wl.time_scale,
            engines=self.engines if self.engines is not None else wl.engines,
            max_batch=self.max_batch if self.max_batch is not None else wl.max_batch,
            app=app,
            policy=self.policy if self.policy and self.system == "nalar" else
            {"nalar": wl.policy, "fcfs": "fcfs"}.get(self.system),
        )


@dataclass
class RunResult:
    """A run's JSON summary and its raw records (answers included, for correctness checks)."""

    summary: dict[str, Any]
    records: list[RequestRecord] = field(default_factory=list)
    critical_paths: dict[str, float] = field(default_factory=dict)  # per request, its latency on an idle farm

    def answers(self) -> dict[str, Any]:
        """Each completed request's answer, by request id."""
        return {r.request: r.answer for r in self.records if r.error is None}


class _Observer:
    """Counts the policy's decisions and times each component's calls (observer hooks)."""

    def __init__(self) -> None:
        self.migrations = 0
        self.provisions = 0
        self.priorities = 0
        self._lock = threading.Lock()
        self.calls: dict[str, list[float]] = {}  # component -> [calls, wait, run] (wall seconds)

    @hookimpl
    def nalar_tick(self, snapshot: Any, decisions: list[Any]) -> None:
        for d in decisions:
            if isinstance(d, Migrate):
                self.migrations += 1
            elif isinstance(d, Provision):
                self.provisions += 1
            elif isinstance(d, SetPriority):
                self.priorities += 1

    @hookimpl
    def nalar_call_finished(self, call: Any, status: str, error: BaseException | None) -> None:
        if not call.admitted_at:
            return
        with self._lock:
            acc = self.calls.setdefault(call.context.component, [0.0, 0.0, 0.0])
            acc[0] += 1
            acc[1] += call.admitted_at - call.enqueued_at
            acc[2] += call.finished_at - call.admitted_at

    def per_component(self, time_scale: float) -> dict[str, dict[str, float]]:
        """Per component: calls, mean wait in the controllers' queues and mean admitted time (model s)."""
        with self._lock:
            return {c: {"calls": int(n), "queue_s_mean": round(w / n / time_scale, 3),
                        "admitted_s_mean": round(r / n / time_scale, 3)}
                    for c, (n, w, r) in sorted(self.calls.items()) if n}


@contextlib.contextmanager
def _runtime(s: RunSettings, dep: Deployment, wl: Workload, counter: _Observer) -> Iterator[tuple[Any, Any]]:
    """A fresh Runtime (with its own state directory) serving the deployment, or ``None``."""
    if s.system == "langgraph":
        yield None, None
        return
    assert s.time_scale is not None and s.policy is not None  # resolved settings

    # A fresh journal per run: the same trace makes the same idempotency keys,
    # and a journal left by an earlier run would replay its results.
    with tempfile.TemporaryDirectory(prefix="nalar-bench-") as state_dir, \
            Runtime(policy="fcfs", tick_interval=s.tick_s * s.time_scale, state_dir=state_dir) as rt:
        rt.register_plugin(BenchPolicies(), name="nalar-bench-policies")
        rt.set_policy(make_policy(rt, s.policy))
        rt.register_plugin(counter, name="nalar-bench-decisions")
        if s.app == "futures":
            prov: Any = FarmProvisioner(rt, dep.farm)
            for agent, engines in dep.farm.pools().items():
                rt.deploy(agent, [dep.farm.engine(n) for n in engines], capacity=_admit(s),
                          stateful=agent in dep.stateful)
            rt.register_plugin(prov, name="nalar-bench-farm-provisioner")
        else:
            prov = ModelProvisioner(rt, dep, max_engines=s.max_engines)
            prov.deploy(_admit(s), slo_s=None if s.shed is None else s.shed * s.time_scale)
        yield rt, prov


def _admit(s: RunSettings) -> int | None:
    """Admission slots per instance: ``max_batch + 1`` by default, ``None`` (unbounded) for 0."""
    if s.admit is None:
        assert s.max_batch is not None
        return s.max_batch + 1
    return s.admit or None


def _horizon_s(trace: Trace) -> float:
    """Model time by which every client would be done on an idle farm."""
    end = trace.duration_s
    for client in trace.clients:
        turns = getattr(client, "turns", None)
        if turns:  # a session: its turns and think times add up
            span = sum(trace.critical_paths[t.request] + t.think_s for t in turns)
        else:
            span = max((v for k, v in trace.critical_paths.items() if k == client.request), default=0.0)
        end = max(end, client.arrival_s + span)
    return end


async def _drive(trace: Trace, env: Env, app: Any, wl: Workload, timeout_s: float) -> float:
    """Launch every client at its arrival time; return the wall time of model time 0."""
    ts = env.time_scale
    t0 = time.monotonic() + 0.05

    async def launch(client: Any) -> None:
        delay = t0 + client.arrival_s * ts - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await wl.run_client(app, client, env)

    tasks = [asyncio.create_task(launch(c)) for c in trace.clients]
    _, pending = await asyncio.wait(tasks, timeout=timeout_s) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return t0


def run(settings: RunSettings) -> RunResult:
    """Run one workload on one system at one offered rate and measure it.

    Returns:
        The result: the JSON summary (see ``docs/benchmarks.md``) and the records.

    Raises:
        ConfigError: A bad setting.
    """
    s = settings.resolved()
    assert s.duration_s is not None and s.time_scale is not None and s.engines is not None and s.max_batch is not None
    wl = workload(s.workload)
    trace = wl.make_trace(s.seed, s.rps, s.duration_s)
    config = EngineConfig(max_batch=s.max_batch, time_scale=s.time_scale,
                          warmup_s=s.warmup_s if s.warmup_s is not None else EngineConfig.warmup_s)
    pools = apportion(trace.demand(config), s.engines)
    dep = Deployment(trace.book, pools, config, trace.stateful, wl.tools, s.seed)
    counter = _Observer()
    bar = tqdm(total=trace.requests, desc=f"{s.workload} {s.system} {s.rps:g} rps", unit=wl.unit,
               disable=not s.progress, leave=False)
    env_box: list[Env] = []

    def on_record(rec: RequestRecord) -> None:
        bar.update(1)
        if rec.error is not None:
            bar.set_postfix(failed=sum(1 for r in env_box[0].records if r.error is not None), refresh=False)

    # Model time bounds the wait, plus a wall margin for the plumbing's fixed cost
    # per call, which a fast clock (small time_scale) turns into many model seconds.
    timeout = (_horizon_s(trace) + s.drain * s.duration_s) * s.time_scale + 30.0
    cpu0 = time.process_time()
    with bar, _runtime(s, dep, wl, counter) as (rt, prov):
        env = Env(trace, dep, s.system, s.app or "graph", rt, [rt.callback()] if rt is not None and s.app == "graph" else [],
                  on_record=on_record)
        env_box.append(env)
        app = wl.build_app(env)
        wall0 = time.monotonic()
        t0 = asyncio.run(_drive(trace, env, app, wl, timeout))
        wall = time.monotonic() - wall0
        stats = rt.stats() if rt is not None else None
        control = stats["control"] if stats is not None else None
        admission = stats.get("admission") if stats is not None else None
        rt_used = rt is not None
        moves = list(getattr(prov, "moves", []))
        move_times = list(getattr(prov, "move_times", []))
        grown = list(getattr(prov, "provisions", []))
        shrunk = list(getattr(prov, "kills", []))
    cpu = time.process_time() - cpu0
    summary = summarize(s, trace, env.records, t0, dep, pools, control)
    summary["admit"] = _admit(s) if rt_used else None
    summary["shed"] = {"call_slo_s": s.shed, **({k: admission[k] for k in ("rejected", "deferred")}
                                                 if admission else {"rejected": 0, "deferred": 0})}
    summary["decisions"] = {"migrations": counter.migrations, "reallocations": len(moves),
                            "priority_changes": counter.priorities, "engines_added": len(grown),
                            "engines_removed": len(shrunk)}
    # Engine time used from model time 0 to the last answer (engines added count from their
    # creation, warm-up included, removed ones until they were killed).
    end = max((r.end for r in env.records), default=t0)
    summary["engine_s"] = round(dep.farm.engine_seconds(t0, end) / s.time_scale, 1)
    summary["engines_max"] = dep.farm.engines_alive_max(t0, end)
    # The mean no scheduler beats on this farm at its largest (the critical paths with the slots counted).
    summary["capacity_bound_s"] = capacity_bound(trace, max(s.engines, summary["engines_max"]), s.max_batch)["mean_s"]
    # When engines were added (+) or removed (-), model seconds since time 0, for the report.
    summary["scaling"] = sorted([round((t - t0) / s.time_scale, 1), engine, agent, sign]
                                for sign, events in (("+", grown), ("-", shrunk)) for t, engine, agent in events)
    if rt_used:
        # Where nalar's calls spent their time: waiting in the local controllers, then admitted.
        summary["breakdown"]["components"] = counter.per_component(s.time_scale)
    # When each engine moved (model seconds since time 0), for the report.
    summary["reallocations"] = [[round((t - t0) / s.time_scale, 1), *m] for t, m in zip(move_times, moves)]
    summary["host"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cpu_per_wall": round(cpu / max(wall, 1e-9), 3)}
    return RunResult(summary, env.records, dict(trace.critical_paths))
