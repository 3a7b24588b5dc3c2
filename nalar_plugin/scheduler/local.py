"""The local controller of one instance (its bound queue, slots and metrics), and the record of a component.

A :class:`Call` waits in a :class:`PriorityQueue` (higher priority first, then the
older request, then arrival order): its instance's own queue when its session is
bound there, else its component's shared queue (see
:mod:`nalar_plugin.scheduler.controller`, which owns the components, routes and
sessions and admits calls). A :class:`LocalController` counts its instance's slots,
warm-up and drain, and keeps the latencies its policy's snapshot reports.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..context import CallContext
from .decisions import InstanceStats

__all__ = ["Call", "ComponentRecord", "Limiter", "LocalController", "PriorityQueue", "run_drained"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Call:
    """One call as the controllers see it."""

    context: CallContext
    target: Any  # what runs
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
    queue: PriorityQueue | None = None  # where it waits, while it waits
    qseq: int = -1  # sequence number of its live heap entry (older entries are stale)
    directives: Any = None  # the component's directives
    inline: bool = False  # the caller runs the body itself once the call is admitted
    gate: Any = None  # an inline call's caller waits on this until admission
    workers: list[str] | None = None  # the call must run on one of these workers
    key: str | None = None  # journal key, when the call is journaled
    arg_hash: str = "*"
    worker: str | None = None  # where it runs (worker calls)
    timer: Any = None  # a pending retry
    admitted: bool = False
    order: int = 0  # when its session became active: ties go to the older request


class Limiter(Protocol):
    """What the local controllers ask before admitting a call (rate limits)."""

    def admit(self, call: Call) -> bool:
        """Whether ``call`` may be admitted now (called under the controllers' lock: must not wait)."""

    def done(self, call: Call) -> None:
        """An admitted call completed (its tokens are settled)."""


def run_drained(fn: Callable[[], None], instance: str) -> None:
    """Run an ``on_drained`` callback; its failure is logged, never raised into the call path."""
    try:
        fn()
    except Exception:
        logger.exception("the drained callback of instance %s failed", instance)


class PriorityQueue:
    """A heap of calls with O(1) lazy removal.

    Entries order by priority (higher first), then by the call's session order
    (the session that became active first: the older request), then by arrival.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Call]] = []
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def push(self, call: Call, priority: float, seq: int) -> None:
        heapq.heappush(self._heap, (-priority, call.order, seq, call))
        call.queue = self
        call.qseq = seq
        self._n += 1

    def _clean(self) -> None:
        heap = self._heap
        while heap and (heap[0][3].queue is not self or heap[0][3].qseq != heap[0][2]):
            heapq.heappop(heap)

    def peek(self) -> tuple[float, int, int, Call] | None:
        self._clean()
        return self._heap[0] if self._heap else None

    def pop(self) -> Call:
        self._clean()
        call = heapq.heappop(self._heap)[3]
        call.queue = None
        self._n -= 1
        return call

    def remove(self, call: Call) -> None:
        """Forget ``call`` (its heap entry is dropped when it reaches the top)."""
        if call.queue is self:
            call.queue = None
            self._n -= 1
            if len(self._heap) > 64 and len(self._heap) > 4 * self._n:
                self._heap = [e for e in self._heap if e[3].queue is self and e[3].qseq == e[2]]
                heapq.heapify(self._heap)


class LocalController:
    """The controller of one instance: its bound queue, its slots and its metrics."""

    def __init__(self, instance: str, component: str, capacity: int | None, *, address: Any = None) -> None:
        self.instance = instance
        self.component = component
        self.capacity = capacity
        self.address = address  # what a call needs to reach the instance
        self.queue = PriorityQueue()
        self.in_flight = 0
        self.completed = 0
        self.busy_s = 0.0
        self.draining = False
        self.ready_at = 0.0  # monotonic time before which nothing is admitted (warm-up)
        self.move_cost_s: float | None = None  # what moving it elsewhere costs, if its provisioner said
        self.moving_to: str | None = None  # make before break: the component it is moving to
        self.moved_from: str | None = None  # the instance whose move made this one
        self.on_drained: Callable[[], None] | None = None  # called once it is removed and its calls finished
        self._latencies: list[float] = []
        self._lat_i = 0

    def free(self, now: float) -> bool:
        return not self.draining and now >= self.ready_at and (self.capacity is None or self.in_flight < self.capacity)

    def record(self, call: Call) -> None:
        self.in_flight -= 1
        self.completed += 1
        self.busy_s += max(0.0, call.finished_at - call.admitted_at)
        lat = call.finished_at - call.enqueued_at
        if len(self._latencies) < 2048:
            self._latencies.append(lat)
        else:  # a ring buffer of the latest latencies
            self._latencies[self._lat_i] = lat
            self._lat_i = (self._lat_i + 1) % 2048

    def stats(self) -> InstanceStats:
        lat = sorted(self._latencies)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0

        return InstanceStats(
            instance=self.instance, component=self.component, queue_len=len(self.queue),
            in_flight=self.in_flight, capacity=self.capacity, completed=self.completed, busy_s=self.busy_s,
            latency_p50=pct(0.5), latency_p95=pct(0.95), latency_p99=pct(0.99),
            warming=time.monotonic() < self.ready_at, move_cost_s=self.move_cost_s, moving_to=self.moving_to,
            moved_from=self.moved_from,
        )


class ComponentRecord:
    """One component in the control plane: its instances, shared queue, routing weights and counters."""

    def __init__(self, name: str, capacity: int | None, max_instances: int | None = None) -> None:
        self.name = name
        self.capacity = capacity
        self.max_instances = max_instances
        self.instances: list[str] = []
        self.shared = PriorityQueue()
        self.weights: tuple[tuple[str, ...], tuple[float, ...]] | None = None
        self.rr = 0
        # No instance had a free slot at the last full look; only a completion, a new
        # instance or a warm-up ending can change that (each clears it).
        self.full = False
        self.arrived = 0  # calls that reached the component
        self.sessions_arrived = 0  # sessions whose first call to it arrived
        self.slo_s: float | None = None  # admission SLO (wall seconds)
        self.on_slo = "reject"  # what admission does with a call that would break it
        self.rejected = 0
        self.deferred = 0
        self.deferred_waiting = 0  # deferred calls still queued (calls that can make the SLO pass them)
        self.busy_s = 0.0  # service delivered by instances that left the component
        self.completed = 0
        self.inline = False  # its latest call ran in its caller (on no worker)
