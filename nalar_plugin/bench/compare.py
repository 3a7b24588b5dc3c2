"""``nalar bench compare``: every system on the same trace, and the ratios between them.

Each offered rate makes one trace (one seed) that every system runs in turn, so
a ratio compares the same requests, decisions and token counts. Ratios are
``system / langgraph`` of model-second latencies (below 1 is better), except the
sustained rate, where above 1 is better.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from typing import Any

from tqdm import tqdm

from .plots import latencies_of
from .runner import SYSTEMS, RunSettings, run

__all__ = ["GOALS", "compare", "format_table", "knee", "parse_system", "sustained_rps"]

# The goals of the benchmark issue, checked on one run's ratios.
GOALS = {
    "financial": "nalar p99 <= 0.35x langgraph past the baseline's knee, <= 1.05x at the lowest rate",
    "router": "highest rate nalar sustains (mean latency under the bound) >= 1.5x the baseline's",
    "swe": "langgraph mean job completion time >= 3x nalar's",
    "all": "nalar mean latency at its best load <= 1.3x the lower bound",
}

BASELINE = "langgraph"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or (isinstance(a, float) and math.isnan(a)):
        return None
    return round(a / b, 3)


def sustained_rps(runs: Sequence[dict[str, Any]], slo_factor: float) -> float:
    """The highest offered rate whose run completed every request with mean latency under the bound.

    The bound is ``slo_factor`` times the run's lower bound (the mean latency on an
    idle farm); rates above one that fails do not count.
    """
    best = 0.0
    for r in sorted(runs, key=lambda r: r["rps_offered"]):
        mean = r["latency_s"]["mean"]
        if r["failed"] or mean is None or mean > slo_factor * r["lower_bound_s"]:
            break
        best = r["rps_offered"]
    return best


def knee(runs: Sequence[dict[str, Any]], factor: float = 2.0) -> float | None:
    """The lowest offered rate at which P99 exceeds ``factor`` times its P99 at the lowest rate."""
    ordered = sorted(runs, key=lambda r: r["rps_offered"])
    if not ordered or ordered[0]["latency_s"]["p99"] is None:
        return None
    base = ordered[0]["latency_s"]["p99"]
    for r in ordered[1:]:
        p99 = r["latency_s"]["p99"]
        if r["failed"] or p99 is None or p99 > factor * base:
            return float(r["rps_offered"])
    return None


def _goals(workload: str, by_system: dict[str, list[dict[str, Any]]], slo_factor: float) -> dict[str, Any]:
    """Each goal's measured value and whether it is met."""
    nalar, base = by_system.get("nalar", []), by_system.get(BASELINE, [])
    out: dict[str, Any] = {}
    if nalar:
        best = min((r["latency_s"]["mean"] / r["lower_bound_s"] for r in nalar if r["latency_s"]["mean"] is not None),
                   default=None)
        out["mean_over_lower_bound_at_best_load"] = {"value": _r(best), "goal": 1.3,
                                                     "met": best is not None and best <= 1.3}
    if not (nalar and base):
        return out
    pairs = [(n, b) for n in nalar for b in base if n["rps_offered"] == b["rps_offered"]]
    if workload == "financial":
        k = knee(base)
        low = [_ratio(n["latency_s"]["p99"], b["latency_s"]["p99"]) for n, b in pairs[:1]]
        past = [_ratio(n["latency_s"]["p99"], b["latency_s"]["p99"]) for n, b in pairs
                if k is not None and n["rps_offered"] >= k]
        out["p99_ratio_lowest_rate"] = {"value": low[0] if low else None, "goal": 1.05,
                                        "met": bool(low) and low[0] is not None and low[0] <= 1.05}
        out["p99_ratio_past_knee"] = {"knee_rps": k, "values": past, "goal": 0.35,
                                      "met": bool(past) and all(v is not None and v <= 0.35 for v in past)}
    elif workload == "router":
        sn, sb = sustained_rps(nalar, slo_factor), sustained_rps(base, slo_factor)
        out["sustained_rps"] = {"nalar": sn, BASELINE: sb, "ratio": _ratio(sn, sb), "slo_factor": slo_factor,
                                "goal": 1.5, "met": sb > 0 and sn / sb >= 1.5}
    elif workload == "swe":
        speed = [_ratio(b["latency_s"]["mean"], n["latency_s"]["mean"]) for n, b in pairs]
        out["jct_speedup"] = {"values": speed, "goal": 3.0,
                              "met": bool(speed) and all(v is not None and v >= 3.0 for v in speed)}
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def parse_system(spec: str) -> dict[str, str | None]:
    """``nalar``, ``nalar/graph``, ``nalar@least_loaded`` or ``nalar/graph@least_loaded+srtf``: system, app, policy."""
    head, _, policy = spec.partition("@")
    system, _, app = head.partition("/")
    return {"system": system, "app": app or None, "policy": policy or None}


def _run_rate(workload: str, rate: float, systems: Sequence[str],
              settings: dict[str, Any]) -> list[tuple[str, dict[str, Any], list[float]]]:
    """Every system at one rate: ``(label, summary, latencies)`` per system, in order."""
    base = RunSettings(workload, BASELINE, rate, **settings)
    out = []
    for system in systems:
        spec = parse_system(system)
        result = run(replace(base, system=spec["system"] or BASELINE, app=spec["app"] or base.app,
                             policy=spec["policy"] or base.policy))
        result.summary["label"] = system
        out.append((system, result.summary, latencies_of(result)))
    return out


def _run_rates(workload: str, rps: Sequence[float], systems: Sequence[str], settings: dict[str, Any],
               jobs: int) -> Iterator[list[tuple[str, dict[str, Any], list[float]]]]:
    """Each rate's runs, in order of rate; with ``jobs`` > 1, that many rates at once, each in its own process."""
    if jobs <= 1 or len(rps) < 2:
        for rate in rps:
            yield _run_rate(workload, rate, systems, settings)
        return
    progress = settings.get("progress", True)
    quiet = {**settings, "progress": False}  # one bar, over the rates, instead of one per run
    # A fresh interpreter per process (spawn): the embedded cluster and its threads are not forked.
    with ProcessPoolExecutor(max_workers=min(jobs, len(rps)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_run_rate, workload, rate, systems, quiet) for rate in rps]
        with tqdm(total=len(futures), desc=f"{workload}: rates", unit="rate", disable=not progress) as bar:
            try:
                for fut in as_completed(futures):
                    fut.result()
                    bar.update()
            except BaseException:
                for fut in futures:
                    fut.cancel()  # a failed rate fails the comparison: no rate not yet started starts
                raise
        for fut in futures:
            yield fut.result()


def compare(workload: str, rps: Sequence[float], *, systems: Sequence[str] = SYSTEMS, slo_factor: float = 2.0,
            on_run: Callable[[dict[str, Any], list[float]], None] | None = None, jobs: int = 1,
            **settings: Any) -> dict[str, Any]:
    """Run every system at every offered rate on the same seed; return runs, ratios and goals.

    Args:
        workload: ``financial``, ``router`` or ``swe``.
        rps: Offered rates.
        systems: Systems to run (the ratios need ``langgraph``); each may name its
            app and policy, ``nalar/graph@least_loaded`` (see :func:`parse_system`).
        slo_factor: The latency bound for "sustained", as a multiple of the lower bound.
        on_run: Called with each run's summary and the model-second latencies of its
            completed requests (for plots), in order of rate and system.
        jobs: Rates run at once, each in its own process (1: one after the other, here).
            The systems of one rate always run one after the other, in the same process.
        **settings: Further :class:`~nalar_plugin.bench.runner.RunSettings` fields.

    Returns:
        ``{"workload", "seed", "runs": {system: [summary, ...]}, "ratios": [...], "goals": {...}}``.
    """
    seed = RunSettings(workload, BASELINE, rps[0], **settings).seed  # checks the settings before any run
    by_system: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for runs in _run_rates(workload, rps, systems, settings, jobs):
        for system, summary, latencies in runs:
            by_system[system].append(summary)
            if on_run is not None:
                on_run(summary, latencies)
    ratios = []
    for i, rate in enumerate(rps):
        if BASELINE not in by_system:
            break
        b = by_system[BASELINE][i]
        row: dict[str, Any] = {"rps": rate}
        for system in systems:
            if system == BASELINE:
                continue
            m = by_system[system][i]
            row[f"{system}/{BASELINE}"] = {
                **{k: _ratio(m["latency_s"][k], b["latency_s"][k]) for k in ("mean", "p50", "p95", "p99")},
                "makespan": _ratio(m["makespan_s"], b["makespan_s"]),
                "goodput": _ratio(m.get("goodput"), b.get("goodput")),
                "engine_s": _ratio(m.get("engine_s"), b.get("engine_s")),
                "imbalance": _ratio(m["per_engine_load_imbalance"], b["per_engine_load_imbalance"]),
            }
        ratios.append(row)
    return {"workload": workload, "seed": seed, "runs": by_system, "ratios": ratios,
            "goals": _goals(workload, by_system, slo_factor), "goal_text": {workload: GOALS[workload], "all": GOALS["all"]}}


def format_table(result: dict[str, Any]) -> str:
    """One plain-text table: each system's latencies and its ratios to the baseline, per rate."""
    lines = [f"{result['workload']} (seed {result['seed']}): latencies in model seconds; ratio = system / {BASELINE}"]
    width = max([10, *(len(s) for s in result["runs"])])
    head = f"{'rps':>6} {'system':<{width}} {'done':>9} {'mean':>8} {'p50':>8} {'p95':>8} {'p99':>8} {'makespan':>9} " \
           f"{'lb':>7} {'imb':>5} | {'mean':>6} {'p95':>6} {'p99':>6} {'mksp':>6}"
    lines.append(head)
    lines.append("-" * len(head))
    runs = result["runs"]
    systems = list(runs)
    for i, row in enumerate(result["ratios"] or [{"rps": r["rps_offered"]} for r in runs[systems[0]]]):
        for system in systems:
            m = runs[system][i]
            lat = m["latency_s"]
            ratio = row.get(f"{system}/{BASELINE}", {})

            def f(x: Any, w: int = 8) -> str:
                return f"{x:>{w}.2f}" if isinstance(x, (int, float)) else f"{'-':>{w}}"

            lines.append(
                f"{row['rps']:>6g} {system:<{width}} {m['completed']:>4}/{m['requests']:<4} {f(lat['mean'])} {f(lat['p50'])} "
                f"{f(lat['p95'])} {f(lat['p99'])} {f(m['makespan_s'], 9)} {f(m['lower_bound_s'], 7)} "
                f"{f(m['per_engine_load_imbalance'], 5)} | {f(ratio.get('mean'), 6)} {f(ratio.get('p95'), 6)} "
                f"{f(ratio.get('p99'), 6)} {f(ratio.get('makespan'), 6)}"
            )
    for name, goal in result.get("goals", {}).items():
        verdict = "met" if goal.get("met") else "NOT met"
        detail = {k: v for k, v in goal.items() if k != "met"}
        lines.append(f"goal {name}: {verdict} {detail}")
    return "\n".join(lines)
