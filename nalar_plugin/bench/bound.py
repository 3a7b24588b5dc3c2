"""A capacity bound on the mean latency of a trace, for any scheduler on its farm.

The critical path (``Trace.lower_bound_s``) says what a request costs on an idle
farm; it ignores that the farm has finitely many slots. This module adds the
farm's capacity, and the result is still a bound no system can beat.

By Little's law, the mean latency is ``∫ N(t) dt / n``, where ``N(t)`` counts the
requests in the system. At every instant ``N(t)`` is at least:

- the requests still inside their critical path (arrived at ``a``, ``t < a + path``);
- the requests with engine work left, which is at least the count a single server
  running at the speed of all the farm's slots leaves, serving shortest remaining
  work first (SRPT), when every request's engine work arrives with the request.

The second holds because SRPT on one server minimises the jobs left at every instant
over every schedule, preemptive or shared, and any schedule of the farm is one
such schedule: a slot serves at most one service-second (:func:`service_s`: batch of
one, warm prefix cache) per model second, whatever its batch, and moves, warm-up
and queueing only slow it. Pooling every engine into one server also makes the
bound hold for systems that move engines between agent types (free and instant
moves). The larger of the two counts, integrated, divided by ``n``, bounds the mean.

For ``financial`` a request is a turn, and a session's next turn arrives only after
its previous answer and a think time, so turns do not arrive at fixed times.
Sessions do: the bound is taken over sessions (their engine work and their path
through every turn and think time), and the think time, which no system changes,
is taken out: ``Σ turn latency = Σ session span − Σ think``.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from ..testing import EngineConfig
from .trace import Trace, service_s
from .workloads import workload as get_workload

__all__ = ["capacity_bound", "capacity_bound_of", "integral_of_max", "srpt_counts"]


def srpt_counts(jobs: Iterable[tuple[float, float]], speed: float) -> list[tuple[float, int]]:
    """Jobs left over time on one server of ``speed`` that serves shortest remaining work first.

    Args:
        jobs: ``(release, work)`` pairs; work in service-seconds (jobs with no work are
            ignored).
        speed: Service-seconds the server does per second.

    Returns:
        ``(time, jobs left from then on)`` steps, in time order, ending at 0.

    Raises:
        ConfigError: ``speed`` is not positive.
    """
    if not speed > 0:
        raise ConfigError(f"speed must be > 0, got {speed!r}")
    pending = sorted((r, w) for r, w in jobs if w > 0)
    left: list[float] = []
    steps: list[tuple[float, int]] = []
    t, i = 0.0, 0
    while i < len(pending) or left:
        if not left:
            t = max(t, pending[i][0])
        while i < len(pending) and pending[i][0] <= t:
            heapq.heappush(left, pending[i][1])
            i += 1
        steps.append((t, len(left)))
        release = pending[i][0] if i < len(pending) else math.inf
        finish = t + left[0] / speed
        if finish <= release:
            heapq.heappop(left)
            t = finish
            if not left:
                steps.append((t, 0))
        else:
            heapq.heapreplace(left, left[0] - (release - t) * speed)
            t = release
    return steps


def _window_counts(windows: Iterable[tuple[float, float]]) -> list[tuple[float, int]]:
    """Steps of how many ``[start, end)`` windows hold each instant."""
    deltas: dict[float, int] = {}
    for start, end in windows:
        if end > start:
            deltas[start] = deltas.get(start, 0) + 1
            deltas[end] = deltas.get(end, 0) - 1
    steps, n = [], 0
    for t in sorted(deltas):
        n += deltas[t]
        steps.append((t, n))
    return steps


def integral_of_max(*curves: Sequence[tuple[float, int]]) -> float:
    """``∫ max(curves) dt`` for step functions given as ``(time, value from then on)``, 0 before."""
    points = sorted({t for c in curves for t, _ in c})
    at = [0] * len(curves)
    value = [0] * len(curves)
    total, last, top = 0.0, None, 0
    for t in points:
        if last is not None:
            total += top * (t - last)
        for k, c in enumerate(curves):
            while at[k] < len(c) and c[at[k]][0] <= t:
                value[k] = c[at[k]][1]
                at[k] += 1
        top, last = max(value), t
    return total


def _request_of(key: str, requests: Mapping[str, Any]) -> str:
    """The request a step belongs to: the longest request id its key starts with."""
    parts = key.split("/")
    for n in range(len(parts) - 1, 0, -1):
        rid = "/".join(parts[:n])
        if rid in requests:
            return rid
    raise ConfigError(f"trace step {key!r} belongs to no request")


def capacity_bound(trace: Trace, engines: int, max_batch: int, *,
                   paths: Mapping[str, float] | None = None,
                   config: EngineConfig | None = None) -> dict[str, Any]:
    """The mean latency no scheduler can beat on ``engines`` engines of ``max_batch`` slots.

    Args:
        trace: The trace.
        engines: Engines of the farm (pooled: any engine may serve any agent type).
        max_batch: Slots per engine.
        paths: Per request, the least latency on an idle farm; the trace's critical
            paths by default (for a LangGraph app on ``swe``, pass its barrier paths).
        config: The engine model (the default :class:`EngineConfig` otherwise).

    Returns:
        ``mean_s`` (the bound), ``path_mean_s`` (the paths' mean, the bound without
        capacity), ``slots``, and ``capacity_share``: the part of the bound above the
        paths' mean that comes from capacity, as a share of the bound.

    Raises:
        ConfigError: No engines, no requests, or a step that belongs to no request.
    """
    if engines < 1 or max_batch < 1:
        raise ConfigError(f"the farm needs engines and slots, got {engines} x {max_batch}")
    paths = dict(trace.critical_paths if paths is None else paths)
    if not paths:
        raise ConfigError("the trace has no request")
    cfg = config or EngineConfig()
    work = dict.fromkeys(paths, 0.0)
    for step in trace.book.model_steps():
        work[_request_of(step.key, paths)] += service_s(step, cfg)
    slots = engines * max_batch
    jobs, windows, think = [], [], 0.0
    for client in trace.clients:
        turns = getattr(client, "turns", None)
        if turns is None:  # an open request: it arrives at a fixed time
            jobs.append((client.arrival_s, work[client.request]))
            windows.append((client.arrival_s, client.arrival_s + paths[client.request]))
        else:  # a session: its turns follow each other, with think time between
            pause = sum(t.think_s for t in turns)
            think += pause
            jobs.append((client.arrival_s, sum(work[t.request] for t in turns)))
            windows.append((client.arrival_s, client.arrival_s + pause + sum(paths[t.request] for t in turns)))
    area = integral_of_max(_window_counts(windows), srpt_counts(jobs, float(slots)))
    mean = (area - think) / len(paths)
    path_mean = sum(paths.values()) / len(paths)
    return {"mean_s": round(mean, 3), "path_mean_s": round(path_mean, 3), "slots": slots,
            "capacity_share": round((mean - path_mean) / mean, 3) if mean > 0 else 0.0}


@functools.lru_cache(maxsize=256)
def _bound_of(workload: str, seed: int, rps: float, duration_s: float, engines: int, max_batch: int,
              barrier: bool) -> float:
    trace = get_workload(workload).make_trace(seed, rps, duration_s)
    paths = trace.info.get("barrier_path_s") if barrier else None
    return float(capacity_bound(trace, engines, max_batch, paths=paths)["mean_s"])


def capacity_bound_of(row: Mapping[str, Any], *, barrier: bool = False) -> float:
    """:func:`capacity_bound`'s ``mean_s`` for one row of ``nalar bench compare`` (its trace made again).

    Traces are keyed by seed, so the row's workload, seed, rate and duration give
    back the trace every system ran; the farm is the row's engines (at the most that were
    alive at once, for a farm that grew) and slots.

    Args:
        row: One run of a comparison (``workload``, ``seed``, ``rps_offered``,
            ``duration_s``, ``engines``, ``max_batch``; ``engines_max`` if it has one).
        barrier: Take the trace's barrier paths as the least latency (a LangGraph
            app on ``swe``) instead of its critical paths.

    Raises:
        ConfigError: The row lacks one of these fields, or ``barrier`` on a trace without barrier paths.
    """
    if not barrier and row.get("capacity_bound_s") is not None:
        return float(row["capacity_bound_s"])
    try:
        engines = row["engines"]
        count = sum(engines.values()) if isinstance(engines, Mapping) else int(engines)
        count = max(count, int(row.get("engines_max") or 0))  # a farm that grew counts at its largest
        key = (row["workload"], int(row["seed"]), float(row["rps_offered"]), float(row["duration_s"]),
               count, int(row["max_batch"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"a comparison row without the farm or trace it ran on: {exc!r}") from None
    if barrier and not (row.get("trace") or {}).get("barrier_path_s"):
        raise ConfigError(f"the {row['workload']} trace has no barrier paths")
    return _bound_of(*key, barrier)
