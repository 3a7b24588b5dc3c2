"""The numbers of a run: latency percentiles, makespan, bounds, imbalance, breakdown."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .deploy import Deployment
from .env import RequestRecord
from .trace import Trace

__all__ = ["percentile", "summarize"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of already sorted values, by linear interpolation."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _r(x: float, n: int = 3) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, n)


def latency_stats(latencies: Sequence[float]) -> dict[str, float | None]:
    """Mean, p50, p95, p99 and max of a sample."""
    lat = sorted(latencies)
    mean = sum(lat) / len(lat) if lat else math.nan
    return {"mean": _r(mean), "p50": _r(percentile(lat, 0.5)), "p95": _r(percentile(lat, 0.95)),
            "p99": _r(percentile(lat, 0.99)), "max": _r(lat[-1] if lat else math.nan)}


def _breakdown(dep: Deployment) -> dict[str, Any]:
    """Where model calls spent their time, from the engines' own records (model seconds)."""
    gens = list(dep.ledger.generations)
    n = len(gens) or 1
    prompt = sum(g.prompt_tokens for g in gens) or 1
    return {
        "model_calls": len(gens),
        "model_call_s_mean": _r(sum(g.latency_s for g in gens) / n),
        "tool_calls": dep.ledger.tool_calls,
        "engine_queue_s_mean": _r(sum(g.queued_s for g in gens) / n),
        "prefill_s_mean": _r(sum(g.prefill_s for g in gens) / n),
        "decode_s_mean": _r(sum(g.decode_s for g in gens) / n),
        "batch_mean": _r(sum(g.batch for g in gens) / n, 2),
        "prefix_cache_hit": _r(sum(g.cached_tokens for g in gens) / prompt),
    }


def summarize(s: Any, trace: Trace, records: Sequence[RequestRecord], t0: float, dep: Deployment,
              pools: Mapping[str, int], control: Mapping[str, Any] | None) -> dict[str, Any]:
    """The JSON summary of a run (every duration in model seconds).

    Args:
        s: The resolved :class:`~nalar_plugin.bench.runner.RunSettings`.
        trace: The trace that was run.
        records: Every request the clients recorded.
        t0: Wall time of model time 0.
        dep: The run's deployment (engines and their records).
        pools: Engines per agent type at the start.
        control: The global controller's statistics (``None`` without nalar).
    """
    ts = s.time_scale
    done = [r for r in records if r.error is None]
    latencies = [(r.end - r.start) / ts for r in done]
    first = min((c.arrival_s for c in trace.clients), default=0.0)
    last_end = max((r.end for r in done), default=t0)
    makespan = max(0.0, (last_end - t0) / ts - first)
    busy = dep.busy_s()
    mean_busy = sum(busy.values()) / len(busy) if busy else 0.0
    slots = sum(pools.values()) * s.max_batch
    demand = trace.demand(dep.config)
    errors = sorted({r.error for r in records if r.error is not None})
    slo = s.slo_s if getattr(s, "slo_s", None) is not None else 2.0 * trace.lower_bound_s()
    good = sum(1 for lat in latencies if lat <= slo)
    return {
        "workload": s.workload,
        "system": s.system,
        "app": s.app,
        "policy": s.policy if s.system != "langgraph" else "client-side router",
        "rps_offered": s.rps,
        # Throughput over the arrival window: it equals the offered rate while the
        # system keeps up, and its capacity once it does not.
        "rps_completed": _r(sum(1 for r in done if (r.end - t0) / ts <= s.duration_s) / s.duration_s),
        "requests": trace.requests,
        "completed": len(done),
        "failed": trace.requests - len(done),
        "latency_s": latency_stats(latencies),
        # Mean time above each request's own critical path: queueing, plumbing, cache misses.
        # Requests finished within the SLO, per model second of arrivals (late and failed ones do not count).
        "goodput": _r(good / s.duration_s if s.duration_s else math.nan),
        "goodput_slo_s": _r(slo),
        "within_slo": good,
        "excess_s_mean": _r(sum((r.end - r.start) / ts - trace.critical_paths[r.request] for r in done) / len(done)
                            if done else math.nan),
        "makespan_s": _r(makespan),
        "lower_bound_s": _r(trace.lower_bound_s()),
        # The same bound per request: no system's P99 can be below the critical paths' P99.
        "critical_path_s": latency_stats(list(trace.critical_paths.values())),
        "offered_load": _r(sum(demand.values()) / (slots * s.duration_s)),
        "per_engine_load_imbalance": _r(max(busy.values()) / mean_busy if mean_busy > 0 else 1.0),
        "control": {k: (_r(v) if isinstance(v, float) else v) for k, v in (control or {}).items()
                    if k in ("ticks", "tick_ms_p50", "tick_ms_max", "futures_max")} or
                   {"ticks": 0, "tick_ms_p50": None, "tick_ms_max": None, "futures_max": None},
        "seed": s.seed,
        "time_scale": ts,
        "duration_s": s.duration_s,
        "engines": dict(pools),
        "max_batch": s.max_batch,
        "warmup_s": dep.config.warmup_s,
        "trace": {"clients": len(trace.clients), "demand_s": {a: _r(v, 1) for a, v in demand.items()}, **trace.info},
        "breakdown": _breakdown(dep),
        "errors": errors[:5],
    }
