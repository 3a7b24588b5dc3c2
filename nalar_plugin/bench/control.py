"""``nalar bench control``: the control plane's cost with many outstanding futures.

Reports the global controller's tick time (p50, max) with N outstanding futures
over M instances, running the default ``nalar`` policy, and the local
controllers' CPU cost per call (enqueue + admit + complete). No Dask is involved:
this measures the controllers themselves, the part whose cost the paper reports.
"""

from __future__ import annotations

import time
from typing import Any

from tqdm import tqdm

from ..context import CallContext
from ..plugins import PluginManager
from ..scheduler.controller import Call, ControlPlane, LocalController
from ..scheduler.global_controller import GlobalController

__all__ = ["bench_control"]


class _Inert:
    """Stands in for a future: the controllers only finish it on dispatch errors."""

    def _finish(self, *args: Any, **kwargs: Any) -> bool:
        return True


def _calls(n: int, sessions: int, component: str) -> list[Call]:
    inert = _Inert()
    return [
        Call(context=CallContext(session=f"s{i % sessions}", call_id=f"c{i}", component=component),
             target=None, args=(), kwargs={}, future=inert, stateful=True)
        for i in range(n)
    ]


def bench_control(futures: int = 131072, instances: int = 64, *, capacity: int = 16, calls_per_session: int = 8,
                  ticks: int = 30, policy: str = "nalar", progress: bool = True) -> dict[str, Any]:
    """Measure tick time with ``futures`` outstanding and the per-call local cost.

    Args:
        futures: Outstanding (queued + in-flight) calls during the ticks.
        instances: Instances of the one component, each with ``capacity`` slots.
        capacity: Slots per instance.
        calls_per_session: Calls per session (sessions = futures / this).
        ticks: Ticks to time.
        policy: The policy the global controller runs.
        progress: Show a progress bar.

    Returns:
        A JSON-able dict.
    """
    running: list[Call] = []

    def dispatch(call: Call, ctl: LocalController) -> None:
        running.append(call)

    sessions = max(1, futures // calls_per_session)
    plane = ControlPlane(dispatch)
    plane.add_component("llm", instances, capacity)
    pol = PluginManager().policy(policy)
    plane.chooser = pol.choose
    gc = GlobalController(plane, pol)
    batch = _calls(futures, sessions, "llm")
    bar = tqdm(total=futures * 2 + ticks, desc="control", disable=not progress, leave=False)

    # Local enforcement: enqueue (with admission) every call, then complete them all;
    # each completion admits the next queued call.
    t0 = time.process_time()
    for call in batch:
        plane.enqueue(call)
    t_enqueue = time.process_time() - t0
    bar.update(futures)
    outstanding = plane.snapshot().futures

    tick_ms: list[float] = []
    for _ in range(ticks):
        t = time.perf_counter()
        gc.tick()
        tick_ms.append((time.perf_counter() - t) * 1000)
        bar.update(1)

    t0 = time.process_time()
    done = 0
    while running:
        call = running.pop()
        plane.complete(call)
        done += 1
    t_complete = time.process_time() - t0
    bar.update(futures)
    bar.close()

    tick_ms.sort()
    per_call_us = (t_enqueue + t_complete) / futures * 1e6
    return {
        "benchmark": "control",
        "futures": futures,
        "futures_outstanding_at_ticks": outstanding,
        "instances": instances,
        "capacity": capacity,
        "sessions": sessions,
        "policy": policy,
        "ticks": ticks,
        "tick_ms_p50": round(tick_ms[len(tick_ms) // 2], 3),
        "tick_ms_max": round(tick_ms[-1], 3),
        "local_us_per_call": round(per_call_us, 2),
        "enqueue_admit_us_per_call": round(t_enqueue / futures * 1e6, 2),
        "complete_admit_us_per_call": round(t_complete / done * 1e6, 2),
        "goals": {"tick_ms_p50": 150, "local_us_per_call": 50},
    }
