"""Local controllers: one per instance, event-driven.

A call waits in its instance's priority queue (higher priority first, ties in
arrival order) and is admitted only when the instance has a free slot. The
instance is bound at admission (late binding): until then a migration or a new
priority still reaches the call. Decisions apply at once, not at the next tick.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..context import CallContext
from .decisions import ComponentStats, InstanceStats, SessionStats, Snapshot

__all__ = ["Call", "ControlPlane", "LocalController"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Call:
    """One call as the controllers see it."""

    context: CallContext
    target: Any  # the stub (or adapter target) the worker runs
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: Any
    resources: dict[str, float] = field(default_factory=dict)
    stateful: bool = False
    enqueued_at: float = 0.0
    admitted_at: float = 0.0
    finished_at: float = 0.0
    instance: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class LocalController:
    """The controller of one instance: its queue, its slots and its metrics."""

    def __init__(self, instance: str, component: str, capacity: int | None, *, address: Any = None) -> None:
        self.instance = instance
        self.component = component
        self.capacity = capacity
        self.address = address  # what a call needs to reach the instance
        self.in_flight = 0
        self.completed = 0
        self.busy_s = 0.0
        self._heap: list[tuple[float, int, Call]] = []
        self._removed: set[int] = set()  # ids of calls moved out (lazy deletion)
        self._queued = 0
        self._latencies: deque[float] = deque(maxlen=2048)
        self.draining = False

    @property
    def queue_len(self) -> int:
        """Calls waiting in this instance's queue."""
        return self._queued

    def push(self, call: Call, priority: float, seq: int) -> None:
        heapq.heappush(self._heap, (-priority, seq, call))
        call.instance = self.instance
        self._queued += 1

    def pop_admissible(self) -> Call | None:
        """Pop the next call if a slot is free, else ``None``."""
        if self.capacity is not None and self.in_flight >= self.capacity:
            return None
        while self._heap:
            _, _, call = heapq.heappop(self._heap)
            if id(call) in self._removed:
                self._removed.discard(id(call))
                continue
            self._queued -= 1
            self.in_flight += 1
            return call
        return None

    def take(self, predicate: Callable[[Call], bool]) -> list[Call]:
        """Remove and return the queued calls for which ``predicate`` holds."""
        taken = [c for _, _, c in self._heap if id(c) not in self._removed and predicate(c)]
        for c in taken:
            self._removed.add(id(c))
        self._queued -= len(taken)
        if len(self._removed) > 64 and len(self._removed) > len(self._heap) // 2:
            self._heap = [e for e in self._heap if id(e[2]) not in self._removed]
            heapq.heapify(self._heap)
            self._removed.clear()
        return taken

    def record(self, call: Call) -> None:
        self.in_flight -= 1
        self.completed += 1
        service = max(0.0, call.finished_at - call.admitted_at)
        self.busy_s += service
        self._latencies.append(call.finished_at - call.enqueued_at)

    def stats(self) -> InstanceStats:
        lat = sorted(self._latencies)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0

        return InstanceStats(
            instance=self.instance,
            component=self.component,
            queue_len=self._queued,
            in_flight=self.in_flight,
            capacity=self.capacity,
            completed=self.completed,
            busy_s=self.busy_s,
            latency_p50=pct(0.5),
            latency_p95=pct(0.95),
            latency_p99=pct(0.99),
        )


class ControlPlane:
    """Components, their instances' local controllers, routes and session metrics.

    ``dispatch(call, controller)`` is supplied by the Runtime; it runs the call
    (for example as a Dask task) and must later call :meth:`complete`.
    """

    def __init__(self, dispatch: Callable[[Call, LocalController], None], *, seed: int = 0) -> None:
        self._dispatch = dispatch
        self._lock = threading.RLock()
        self._seq = itertools.count()
        self._rng = random.Random(seed)
        self.components: dict[str, list[str]] = {}
        self.instances: dict[str, LocalController] = {}
        self._routes: dict[tuple[str, str], str] = {}  # (session, component) -> instance
        self._weights: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {}
        self._rr: dict[str, itertools.count[int]] = {}
        self._priorities: dict[str, float] = {}
        self._sessions: dict[str, SessionStats] = {}

    # -- topology ----------------------------------------------------------
    def add_component(self, component: str, instances: int = 1, capacity: int | None = None, addresses: list[Any] | None = None) -> list[str]:
        """Declare ``component`` with ``instances`` instances; return their ids."""
        with self._lock:
            ids = self.components.setdefault(component, [])
            for n in range(instances):
                address = addresses[n] if addresses else None
                self.add_instance(component, capacity, address=address)
            return list(ids)

    def add_instance(self, component: str, capacity: int | None, *, address: Any = None, instance: str | None = None) -> str:
        with self._lock:
            ids = self.components.setdefault(component, [])
            iid = instance or f"{component}/{len(ids)}"
            while iid in self.instances:
                iid = f"{iid}+"
            self.instances[iid] = LocalController(iid, component, capacity, address=address)
            ids.append(iid)
            return iid

    def ensure_component(self, component: str, capacity: int | None = None) -> None:
        with self._lock:
            if component not in self.components:
                self.add_component(component, 1, capacity)

    # -- the call path ---------------------------------------------------
    def enqueue(self, call: Call) -> None:
        """Queue a call whose inputs exist, then admit what fits."""
        ctx = call.context
        with self._lock:
            self.ensure_component(ctx.component)
            call.enqueued_at = time.monotonic()
            sess = self._session(ctx.session)
            sess.queued += 1
            if ctx.deadline is not None:
                sess.deadline = ctx.deadline
            ctl = self.instances[self._pick(ctx.session, ctx.component)]
            prio = self._priorities.get(ctx.session, ctx.priority)
            ctl.push(call, prio, next(self._seq))
            if call.stateful:
                self._routes[(ctx.session, ctx.component)] = ctl.instance
                sess.location[ctx.component] = ctl.instance
        self._admit(ctl)

    def _session(self, session: str) -> SessionStats:
        s = self._sessions.get(session)
        if s is None:
            s = self._sessions[session] = SessionStats(session)
        return s

    def _pick(self, session: str, component: str) -> str:
        routed = self._routes.get((session, component))
        if routed is not None and routed in self.instances and not self.instances[routed].draining:
            return routed
        ids = [i for i in self.components[component] if not self.instances[i].draining] or self.components[component]
        weights = self._weights.get(component)
        if weights is not None:
            cands = [(i, w) for i, w in zip(*weights) if i in ids and w > 0]
            if cands:
                return self._rng.choices([c[0] for c in cands], [c[1] for c in cands])[0]
        rr = self._rr.setdefault(component, itertools.count())
        return ids[next(rr) % len(ids)]

    def _admit(self, ctl: LocalController) -> None:
        while True:
            with self._lock:
                call = ctl.pop_admissible()
                if call is None:
                    return
                call.admitted_at = time.monotonic()
                call.instance = ctl.instance
                call.context.executor = ctl.instance
                sess = self._session(call.context.session)
                sess.queued -= 1
                sess.in_flight += 1
                sess.waiting_s += call.admitted_at - call.enqueued_at
            try:
                self._dispatch(call, ctl)
            except Exception as exc:  # the dispatcher could not even start the call
                logger.exception("dispatch of call %s failed", call.context.call_id)
                call.future._finish("error", exception=exc)
                self.complete(call)

    def complete(self, call: Call) -> None:
        """Record a finished call and admit the next one on its instance."""
        with self._lock:
            ctl = self.instances.get(call.instance or "")
            if ctl is None:
                return
            call.finished_at = time.monotonic()
            ctl.record(call)
            sess = self._session(call.context.session)
            sess.in_flight -= 1
            sess.completed += 1
            sess.attained_s += call.finished_at - call.admitted_at
        self._admit(ctl)

    # -- decisions ---------------------------------------------------------
    def route(self, session: str, component: str, instance: str) -> None:
        with self._lock:
            if instance in self.instances:
                self._routes[(session, component)] = instance
                self._session(session).location[component] = instance

    def route_weights(self, component: str, instances: tuple[str, ...], weights: tuple[float, ...]) -> None:
        with self._lock:
            self._weights[component] = (tuple(instances), tuple(weights))

    def set_priority(self, session: str, value: float, component: str | None = None) -> None:
        """Set a session's priority and reorder its calls that are already queued."""
        with self._lock:
            self._priorities[session] = value
            self._session(session).priority = value
            for ctl in list(self.instances.values()):
                if component is not None and ctl.component != component:
                    continue
                moved = ctl.take(lambda c: c.context.session == session)
                for c in moved:
                    c.context.priority = value
                    ctl.push(c, value, next(self._seq))

    def migrate(self, session: str, src: str, dst: str) -> int:
        """Move the session's queued calls and affinity from ``src`` to ``dst``."""
        with self._lock:
            if src not in self.instances or dst not in self.instances:
                return 0
            s_ctl, d_ctl = self.instances[src], self.instances[dst]
            moved = s_ctl.take(lambda c: c.context.session == session)
            prio = self._priorities.get(session)
            for c in moved:
                d_ctl.push(c, prio if prio is not None else c.context.priority, next(self._seq))
            self._routes[(session, d_ctl.component)] = dst
            self._session(session).location[d_ctl.component] = dst
        self._admit(d_ctl)
        return len(moved)

    # -- metrics -----------------------------------------------------------
    def snapshot(self, tick: int = 0) -> Snapshot:
        """Aggregate every local controller's metrics; cost grows with instances and sessions."""
        with self._lock:
            comps = {
                name: ComponentStats(name, {i: self.instances[i].stats() for i in ids})
                for name, ids in self.components.items()
            }
            sessions = {k: SessionStats(**vars(v)) for k, v in self._sessions.items() if v.queued or v.in_flight}
            futures = sum(c.queue_len + c.in_flight for c in self.instances.values())
        return Snapshot(time=time.time(), tick=tick, components=comps, sessions=sessions, futures=futures)
