"""Built-in policies. A policy is a plain class with ``decide(snapshot)``.

Policies are found by name in the entry-point group ``nalar_plugin.policies``
(``nalar policies`` lists them); the first line of a policy's docstring is its
summary. ``decide`` runs in the global controller every tick. ``choose``, when a
policy defines it, runs in the local controllers at admission (event-driven
enforcement) to pick the instance of a call that no session affinity binds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from .decisions import Decision, Migrate, Provision, SetPriority, Snapshot

__all__ = [
    "EDFPolicy",
    "FCFSPolicy",
    "LASPolicy",
    "LPTPolicy",
    "LeastLoadedPolicy",
    "MigratePolicy",
    "NalarPolicy",
    "Policy",
    "ReallocatePolicy",
    "SRTFPolicy",
]


class Policy:
    """Base class of policies: every hook is a documented no-op.

    ``name`` is set from the entry point that loaded the policy.
    """

    name = "policy"
    # Local enforcement of affinity: a call bound to its session's instance moves
    # to a less loaded one when that instance is full and the other has more than
    # this many calls (or a quarter of the capacity) less. ``None``: it never does.
    affinity_slack: int | None = None

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        """Return this tick's decisions (called by the global controller); none by default."""
        return []

    def choose(self, component: str, candidates: Sequence[Any]) -> Any | None:
        """Pick the instance for an unbound call among free local controllers.

        Called at admission with the free instances' local controllers (each has
        ``instance``, ``in_flight``, ``capacity`` and ``queue``). ``None`` keeps the
        default (route weights, else round robin).
        """
        return None

    def __repr__(self) -> str:
        return f"<policy {self.name}>"


class FCFSPolicy(Policy):
    """First come, first served: static routes, no migration, no re-allocation."""

    name = "fcfs"


class LeastLoadedPolicy(Policy):
    """Power of two choices: an unbound call goes to the less loaded (queue + in flight) of two instances."""

    name = "least_loaded"
    affinity_slack = 1

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def choose(self, component: str, candidates: Sequence[Any]) -> Any | None:
        if len(candidates) < 2:
            return None
        a, b = self._rng.sample(list(candidates), 2)
        return a if len(a.queue) + a.in_flight <= len(b.queue) + b.in_flight else b


class MigratePolicy(Policy):
    """Move sessions off an instance whose queue blocks them while another instance of the component has room."""

    affinity_slack = 1

    name = "migrate"

    def __init__(self, min_gap: int = 2) -> None:
        self.min_gap = min_gap  # move only when the load gap (in calls) is at least this

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        out: list[Decision] = []
        for comp in snapshot.components.values():
            inst = comp.instances
            if len(inst) < 2 or not any(s.queue_len for s in inst.values()):
                continue
            load = {i: _norm_load(s) for i, s in inst.items()}
            movers = sorted(
                (s for s in snapshot.sessions.values() if s.queued and load.get(s.location.get(comp.component, ""), -1) >= 0),
                key=lambda s: -s.queued,
            )
            for sess in movers:
                src = sess.location[comp.component]
                if inst[src].queue_len == 0:
                    continue
                dst = min(load, key=lambda i: load[i])
                step = sess.queued / max(1, inst[dst].capacity or 1)
                if dst == src or load[src] - load[dst] < self.min_gap / max(1, inst[src].capacity or 1) + step / 2:
                    continue
                out.append(Migrate(sess.session, src, dst))
                load[src] -= sess.queued / max(1, inst[src].capacity or 1)
                load[dst] += step
        return out


def _norm_load(s: Any) -> float:
    """Queued plus in-flight calls per slot."""
    return (s.queue_len + s.in_flight) / max(1, s.capacity or 1)


class ReallocatePolicy(Policy):
    """Move an instance to a saturated component from one that holds more than its share.

    Per bounded component the policy averages, over about ``horizon_ticks`` ticks,
    two things: its load (queued + in-flight calls) and the work that arrives at it
    (service seconds: the busy time its instances delivered plus the growth of its
    load times its mean service per call). A component is saturated when its
    averaged load per slot is above ``high``; its share of the instances is their
    number in proportion to the work arriving at it. Shares follow demand, not
    queues, so a backlog that moves down a pipeline (one agent's answers feeding
    the next) does not drag instances after it, and a steady mix moves none.

    One instance moves, at most once per ``cooldown_ticks``, from the component
    most above its share (by at least ``margin`` instances, under ``low`` per slot,
    still under ``high`` without the instance) to the saturated component most
    below its share (by at least ``margin``). Instances still warming up from an
    earlier move count where they go, so no component gets more than its share.

    Args:
        high: Load per slot above which a component is saturated.
        low: Load per slot under which a component may give an instance.
        cooldown_ticks: Ticks between two moves at least.
        horizon_ticks: Ticks the load and the arriving work are averaged over.
        margin: Instances a component must be off its share to give or get one. With
            one whole instance (the default) a move never turns the giver into a taker,
            so noise in the shares cannot send an instance back and forth.
    """

    name = "reallocate"

    def __init__(self, high: float = 1.0, low: float = 0.5, cooldown_ticks: int = 10, horizon_ticks: int = 100,
                 margin: float = 1.0) -> None:
        self.high = high
        self.low = low
        self.cooldown_ticks = cooldown_ticks
        self.margin = margin
        self.alpha = 1.0 / max(1, horizon_ticks)
        self._load: dict[str, float] = {}  # averaged queued + in-flight calls
        self._work: dict[str, float] = {}  # averaged service seconds arriving per tick
        self._svc: dict[str, float] = {}  # averaged service seconds per call
        self._seen: dict[str, tuple[int, float]] = {}  # instance -> (completed, busy_s) at the last tick
        self._last_load: dict[str, int] = {}
        self._last = -(10**9)

    def _avg(self, table: dict[str, float], name: str, value: float) -> None:
        prev = table.get(name)
        table[name] = value if prev is None else prev + self.alpha * (value - prev)

    def _observe(self, pools: dict[str, Any]) -> None:
        seen: dict[str, tuple[int, float]] = {}
        delivered: dict[str, float] = {}
        for name, comp in pools.items():
            done, busy = 0, 0.0
            for iid, inst in comp.instances.items():
                c0, b0 = self._seen.get(iid, (0, 0.0))
                done, busy = done + inst.completed - c0, busy + inst.busy_s - b0
                seen[iid] = (inst.completed, inst.busy_s)
            if done > 0:
                self._avg(self._svc, name, busy / done)
            delivered[name] = busy
            self._avg(self._load, name, comp.load)
        self._seen = seen
        if not self._svc:
            return  # no call has completed anywhere: work cannot be told from queues yet
        typical = sum(self._svc.values()) / len(self._svc)  # for a component with no completed call yet
        for name, comp in pools.items():
            grew = comp.load - self._last_load.get(name, comp.load)  # a first sight is no growth
            self._last_load[name] = comp.load
            self._avg(self._work, name, max(0.0, delivered[name] + grew * self._svc.get(name, typical)))

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        pools = {n: c for n, c in snapshot.components.items() if c.instances and c.capacity}
        self._observe(pools)
        if len(pools) < 2 or any(n not in self._work for n in pools) or snapshot.tick - self._last < self.cooldown_ticks:
            return []
        total = sum(self._work[n] for n in pools)
        if total <= 0:
            return []
        count = sum(len(c.instances) for c in pools.values())
        off = {n: len(c.instances) - max(1.0, count * self._work[n] / total) for n, c in pools.items()}  # + surplus
        util = {n: self._load[n] / c.capacity for n, c in pools.items()}  # type: ignore[operator]
        takers = [n for n in pools if util[n] > self.high and off[n] <= -self.margin]
        if not takers:
            return []
        taker = min(takers, key=lambda n: off[n])
        best: tuple[float, Any] | None = None
        for name, comp in pools.items():
            if name == taker or off[name] < self.margin or util[name] >= self.low or len(comp.instances) < 2:
                continue
            donor = min(comp.instances.values(), key=lambda s: (s.warming, s.load, s.instance))
            left = comp.capacity - (donor.capacity or 0)  # type: ignore[operator]
            if left > 0 and self._load[name] / left < self.high and (best is None or off[name] > best[0]):
                best = (off[name], donor)
        if best is None:
            return []
        self._last = snapshot.tick
        return [Provision(taker, where=best[1].instance)]


class _SessionOrder(Policy):
    """Set each active session's priority from a key; lower key runs first."""

    def __init__(self) -> None:
        self._sent: dict[str, float] = {}

    def key(self, sess: Any) -> float | None:
        raise NotImplementedError

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        out: list[Decision] = []
        for sid, sess in snapshot.sessions.items():
            k = self.key(sess)
            if k is None:
                continue
            prio = -k
            if self._sent.get(sid) != prio:
                self._sent[sid] = prio
                out.append(SetPriority(sid, prio))
        if len(self._sent) > 4 * max(64, len(snapshot.sessions)):
            self._sent = {s: p for s, p in self._sent.items() if s in snapshot.sessions}
        return out


class LASPolicy(_SessionOrder):
    """Least attained service first (as in Autellix): sessions that have used the least run first."""

    name = "las"

    def key(self, sess: Any) -> float | None:
        return round(sess.attained_s, 3)


class SRTFPolicy(_SessionOrder):
    """Shortest remaining time first, from each session's expected_s hint."""

    name = "srtf"

    def key(self, sess: Any) -> float | None:
        return sess.remaining_s


class LPTPolicy(_SessionOrder):
    """Longest processing time first (shortens the makespan of a batch), from expected_s hints."""

    name = "lpt"

    def key(self, sess: Any) -> float | None:
        rem = sess.remaining_s
        return None if rem is None else -rem


class EDFPolicy(_SessionOrder):
    """Earliest deadline first."""

    name = "edf"

    def key(self, sess: Any) -> float | None:
        return sess.deadline


class NalarPolicy(Policy):
    """The default: least_loaded routing, migration off blocked instances, and re-allocation."""

    name = "nalar"
    affinity_slack = 1

    def __init__(self) -> None:
        self.least_loaded = LeastLoadedPolicy()
        self.migrate = MigratePolicy()
        self.reallocate = ReallocatePolicy()

    def choose(self, component: str, candidates: Sequence[Any]) -> Any | None:
        return self.least_loaded.choose(component, candidates)

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        return self.migrate.decide(snapshot) + self.reallocate.decide(snapshot)
