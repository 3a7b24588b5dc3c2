"""Built-in policies. A policy is a plain class with ``decide(snapshot)``.

Policies are found by name in the entry-point group ``nalar_plugin.policies``
(``nalar policies`` lists them); the first line of a policy's docstring is its
summary. Policies compose by name (:func:`compose`): ``"least_loaded+autoscale"``
is one policy whose ``choose`` is the first member's that picks and whose
decisions are every member's, in order; a member takes constructor arguments,
``"autoscale:max_instances=4,hold_ticks=5"``. ``decide`` runs in the global controller every tick. ``choose``, when a
policy defines it, runs in the local controllers at admission (event-driven
enforcement) to pick the instance of a call that no session affinity binds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .base import Policy
from .decisions import Decision, Migrate, SetPriority, Snapshot
from .reallocate import ReallocatePolicy

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
    """Move sessions off an instance whose queue blocks them while another instance of the component has room.

    Never worse: a session moves only off an instance with a queue, to one that is
    ready (not warming up, not moving to another component) and clearly less
    loaded, and not again within ``cooldown_ticks`` of its last move (its context
    is rebuilt on each move, so back and forth would only pay that twice).

    Args:
        min_gap: Move only when the load gap (in calls) is at least this.
        cooldown_ticks: Ticks before the same session may move again.
    """

    affinity_slack = 1

    name = "migrate"

    def __init__(self, min_gap: int = 2, cooldown_ticks: int = 10) -> None:
        self.min_gap = min_gap
        self.cooldown_ticks = cooldown_ticks
        self._moved: dict[str, int] = {}  # session -> tick of its last move

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        out: list[Decision] = []
        tick = snapshot.tick
        if len(self._moved) > 4 * max(64, len(snapshot.sessions)):
            self._moved = {s: t for s, t in self._moved.items() if tick - t < self.cooldown_ticks}
        for comp in snapshot.components.values():
            inst = comp.instances
            if len(inst) < 2 or not any(s.queue_len for s in inst.values()):
                continue
            # Only ready instances that stay take sessions; every instance may give them.
            load = {i: _norm_load(s) for i, s in inst.items()}
            targets = {i: x for i, x in load.items() if not inst[i].warming and inst[i].moving_to is None}
            if not targets:
                continue
            movers = sorted(
                (s for s in snapshot.sessions.values() if s.queued and load.get(s.location.get(comp.component, ""), -1) >= 0),
                key=lambda s: -s.queued,
            )
            for sess in movers:
                src = sess.location[comp.component]
                if inst[src].queue_len == 0 or tick - self._moved.get(sess.session, -(10**9)) < self.cooldown_ticks:
                    continue
                dst = min(targets, key=lambda i: targets[i])
                step = sess.queued / max(1, inst[dst].capacity or 1)
                if dst == src or load[src] - load[dst] < self.min_gap / max(1, inst[src].capacity or 1) + step / 2:
                    continue
                out.append(Migrate(sess.session, src, dst))
                self._moved[sess.session] = tick
                load[src] -= sess.queued / max(1, inst[src].capacity or 1)
                load[dst] += step
                targets[dst] = load[dst]
                if src in targets:
                    targets[src] = load[src]
        return out


def _norm_load(s: Any) -> float:
    """Queued plus in-flight calls per slot."""
    return (s.queue_len + s.in_flight) / max(1, s.capacity or 1)


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
    """Shortest remaining time first, from each session's expected_s hint, with aging.

    A session's key is its remaining service less ``aging`` times the age of its
    current request, so a long request that keeps being passed by short ones rises
    until it runs: with ``aging=0.5`` a request that has waited 60 s more goes before
    one with up to 30 s less service to go. ``aging=0`` is plain SRTF, which can starve
    the longest requests (their P99 then grows past a FCFS baseline's under load).

    Args:
        aging: Seconds of remaining service one second of a request's age is worth (>= 0).
    """

    name = "srtf"

    def __init__(self, aging: float = 0.5) -> None:
        super().__init__()
        if not isinstance(aging, (int, float)) or isinstance(aging, bool) or not aging >= 0:
            raise ConfigError(f"srtf: aging must be a number >= 0, got {aging!r}")
        self.aging = float(aging)
        self._epoch: float | None = None

    def key(self, sess: Any) -> float | None:
        rem = sess.remaining_s
        if rem is None:
            return None
        if not self.aging or not sess.request_started:
            return rem
        # The age's common part (now) is the same for every session at a tick and is
        # left out, so keys do not drift: the order is the same, with no decision per tick.
        if self._epoch is None:
            self._epoch = sess.request_started
        return round(rem + self.aging * (sess.request_started - self._epoch), 3)


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
    """The default: least_loaded routing, migration off blocked instances, and guarded re-allocation.

    Args:
        **reallocate: Arguments of its :class:`ReallocatePolicy` (``horizon_ticks=30``,
            ``guard=False``, ...).
    """

    name = "nalar"
    affinity_slack = 1

    def __init__(self, **reallocate: Any) -> None:
        self.least_loaded = LeastLoadedPolicy()
        self.migrate = MigratePolicy()
        self.reallocate = ReallocatePolicy(**reallocate)

    def choose(self, component: str, candidates: Sequence[Any]) -> Any | None:
        return self.least_loaded.choose(component, candidates)

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        return self.migrate.decide(snapshot) + self.reallocate.decide(snapshot)
