"""Admission with an SLO: the expected time to completion of a new call, and what to do when it is over budget.

A component may have an SLO (``rt.deploy(..., slo_s=...)``), and a call may ask for
its deadline to be one (``on_slo``). When a call arrives, its expected time to
completion is estimated from the component's queue, its slots and its mean service
per call: no wait while a slot is free, else ``(calls ahead - slots + 1) x service /
slots``, plus one service. A call that would break its budget is either refused at
once with :class:`~nalar_plugin.errors.AdmissionRejectedError` (``reject``) or
queued behind every call that can still make it (``defer``). Until a call of the
component has completed, its service is unknown and every call is admitted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import AdmissionRejectedError
from .local import Call, ComponentRecord, LocalController

__all__ = ["DEFER_PRIORITY", "check", "expected_s"]

# How far a deferred call's priority drops: behind every call that can still make its SLO.
DEFER_PRIORITY = 1e12


def expected_s(comp: ComponentRecord, instances: Mapping[str, LocalController]) -> float | None:
    """Expected wall seconds from now until a new call of ``comp`` completes: wait plus service.

    ``None`` when it cannot be told: no call completed yet, or an instance without a bound.
    Deferred calls still queued do not count: a call that can make its SLO passes them.
    """
    now = time.monotonic()
    busy, done, slots, load, soonest = comp.busy_s, comp.completed, 0, len(comp.shared), None
    for iid in comp.instances:
        ctl = instances[iid]
        if ctl.draining:
            continue
        if ctl.capacity is None:
            return None
        busy, done = busy + ctl.busy_s, done + ctl.completed
        load += len(ctl.queue) + ctl.in_flight
        if ctl.ready_at <= now:
            slots += ctl.capacity
        else:
            soonest = ctl.ready_at if soonest is None else min(soonest, ctl.ready_at)
    if done == 0:
        return None
    service = busy / done
    load -= comp.deferred_waiting
    if slots == 0:
        if soonest is None:
            return None
        return soonest - now + (load + 1) * service  # every instance warms up: the first one ready
    wait = 0.0 if load < slots else (load - slots + 1) * service / slots
    return wait + service


def check(comp: ComponentRecord, call: Call, expected: Callable[[], float | None]) -> AdmissionRejectedError | None:
    """Check a call against its SLO; the error to fail it with, or ``None``.

    A call that would break its budget and asked for deferral (or whose component
    defers) is marked deferred: its priority drops by :data:`DEFER_PRIORITY`.
    ``expected`` is asked only when there is a budget.
    """
    mode: Any = call.extra.get("on_slo")
    deadline = call.context.deadline if mode is not None else None
    if comp.slo_s is None and deadline is None:
        return None
    budgets = [b for b in (comp.slo_s, None if deadline is None else deadline - time.time()) if b is not None]
    budget = min(budgets)
    eta = expected()
    if eta is None or eta <= budget:
        return None
    if (mode or comp.on_slo) == "defer":
        comp.deferred += 1
        comp.deferred_waiting += 1
        call.extra["deferred"] = True
        call.context.priority -= DEFER_PRIORITY
        return None
    comp.rejected += 1
    return AdmissionRejectedError(
        f"call {call.context.call_id} of {comp.name} shed at admission: expected {eta:.3g} s to "
        f"complete (queue and service), over its budget of {budget:.3g} s"
        + ("" if deadline is None else " (its deadline)"),
        component=comp.name, expected_s=eta, slo_s=budget)
