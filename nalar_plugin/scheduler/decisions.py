"""What a policy sees (the snapshot) and what it returns (decisions).

These follow the policy interface of the paper's Table 2. Records are small
dataclasses; a snapshot aggregates per instance and per session, so its size
grows with instances and sessions, never with the number of futures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ComponentStats",
    "Decision",
    "InstanceStats",
    "Kill",
    "Migrate",
    "Provision",
    "Route",
    "RouteWeights",
    "SessionStats",
    "SetPriority",
    "Snapshot",
]


@dataclass
class InstanceStats:
    """Aggregated metrics of one instance, as its local controller keeps them."""

    instance: str
    component: str
    queue_len: int
    in_flight: int
    capacity: int | None
    completed: int
    busy_s: float
    latency_p50: float
    latency_p95: float
    latency_p99: float
    warming: bool = False  # the instance admits nothing yet (its warm-up after a provision)
    # Wall seconds a move of this instance to another component costs (its warm-up there),
    # when its provisioner declared it; ``None``: the policy's own estimate.
    move_cost_s: float | None = None
    # The component this instance is moving to (make before break): it serves its own
    # component until its new instance there is warm, then leaves it.
    moving_to: str | None = None
    # The instance whose move to this component made this one (the same engine), if a move did.
    moved_from: str | None = None

    @property
    def load(self) -> int:
        """Queued plus in-flight calls."""
        return self.queue_len + self.in_flight


@dataclass
class ComponentStats:
    """A component and its instances."""

    component: str
    instances: dict[str, InstanceStats]
    queue_len: int = 0  # calls in the shared queue, not yet bound to an instance
    # The arriving mix: calls that reached the component so far, and sessions whose first
    # call to it arrived (a router's label per request shows here one call after it is
    # made). Cumulative counters; ``None`` when the snapshot's source does not count them.
    arrived: int | None = None
    sessions_arrived: int | None = None
    slo_s: float | None = None  # the component's admission SLO (wall seconds), if it has one
    rejected: int = 0  # calls refused at admission because they would break the SLO
    deferred: int = 0  # calls that would break it, queued behind the others as their callers asked
    max_instances: int | None = None  # the bound on its instances (provisioning included), if it has one
    inline: bool = False  # its calls run in their callers, on no worker (adapter calls in threads mode)

    @property
    def queued(self) -> int:
        """Calls queued (shared and bound), not yet admitted."""
        return self.queue_len + sum(i.queue_len for i in self.instances.values())

    @property
    def load(self) -> int:
        """Queued (shared and bound) plus in-flight calls over every instance."""
        return self.queue_len + sum(i.load for i in self.instances.values())

    @property
    def capacity(self) -> int | None:
        """Slots over every instance (``None`` if any instance is unbounded)."""
        caps = [i.capacity for i in self.instances.values()]
        return None if any(c is None for c in caps) else sum(c for c in caps if c is not None)


@dataclass
class SessionStats:
    """Per-session service metrics."""

    session: str
    attained_s: float = 0.0
    waiting_s: float = 0.0
    queued: int = 0
    in_flight: int = 0
    completed: int = 0
    location: dict[str, str] = field(default_factory=dict)  # component -> instance
    deadline: float | None = None
    priority: float = 0.0
    priority_set: bool = False  # a decision set the priority (it then overrides the calls')
    expected_s: float | None = None  # the session's expected total service, if hinted
    migrations: int = 0
    order: int = 0  # when the session last became active (its current request's arrival)
    request_started: float = 0.0  # wall time (time.time()) its current request arrived
    calls: dict[str, int] = field(default_factory=dict)  # component -> calls the session made to it

    @property
    def remaining_s(self) -> float | None:
        """Expected service still to go, when the session hinted its total."""
        return None if self.expected_s is None else max(0.0, self.expected_s - self.attained_s)

@dataclass
class Snapshot:
    """What a policy sees at one tick."""

    time: float
    tick: int
    components: dict[str, ComponentStats]
    sessions: dict[str, SessionStats]
    futures: int  # outstanding (queued + in flight) calls

    def instances(self) -> dict[str, InstanceStats]:
        """Every instance of every component, by id."""
        return {i: s for c in self.components.values() for i, s in c.instances.items()}


@dataclass(frozen=True)
class Decision:
    """Base class of a policy decision."""


@dataclass(frozen=True)
class Route(Decision):
    """Send the session's new calls to ``component`` to ``instance``."""

    session: str
    component: str
    instance: str


@dataclass(frozen=True)
class RouteWeights(Decision):
    """Spread new calls of sessions without a route over instances by weight."""

    component: str
    instances: tuple[str, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class SetPriority(Decision):
    """Set the session's priority (higher first); reorders calls already queued."""

    session: str
    value: float
    component: str | None = None


@dataclass(frozen=True)
class Migrate(Decision):
    """Move the session's queued calls and its affinity from ``src`` to ``dst``."""

    session: str
    src_instance: str
    dst_instance: str


@dataclass(frozen=True)
class Provision(Decision):
    """Add an instance of ``component`` (through the provisioner hook)."""

    component: str
    where: Any = None


@dataclass(frozen=True)
class Kill(Decision):
    """Remove ``instance`` (through the provisioner hook)."""

    instance: str
