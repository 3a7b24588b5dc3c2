"""The ``autoscale`` policy: a new instance for a component whose queue stays long, one less when it idles.

Per bounded component (every instance admits a bounded number of calls), each tick:

- **saturated**: calls wait (in its shared queue and its instances' own queues)
  and there are at least ``up_queue`` of them per slot of its instances (warming
  instances count: their slots are on the way). Saturated for ``hold_ticks`` ticks
  in a row, below ``max_instances``, and out of its cooldown: one
  ``Provision(component, where=None)``, a new instance (not a move).
- **low**: nothing waits and its load (queued plus in-flight calls) is under
  ``down_util`` per slot. Low for ``down_idle_ticks`` ticks in a row, above
  ``min_instances``, out of its cooldown, with an instance idle (no call, not
  warming) for as long, and the load fitting in the slots left without it: one
  ``Kill(instance)`` of that idle instance (the least loaded, then the longest idle,
  then the newest).

**Never flapping.** The two thresholds are far apart (saturated means every slot
busy and ``up_queue`` calls per slot waiting; low means under ``down_util`` of the
slots busy and none waiting), a kill leaves the load room in the slots that stay,
each change must be called for tick after tick, and no second change reaches a
component within ``cooldown_s`` of the last (by default the instances' declared
move cost, their warm-up, else ``nalar.move-cost``), so a new instance is warm and
serving before the component is judged again.

Instances moving to another component (make before break) do not count. The
provisioner hook (``nalar_provision`` / ``nalar_kill``) carries the decisions out:
the simulated farm's provisioners, the workers' provisioner of the Runtime (a
factory component's objects, a function component's instances), or a
deployment's own.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..config import resolve
from ..errors import ConfigError
from .decisions import ComponentStats, Decision, InstanceStats, Kill, Provision, Snapshot
from .policies import Policy

__all__ = ["AutoscalePolicy"]


@dataclass
class _Scaled:
    """What the policy remembers of one component."""

    low_bound: int
    high_bound: int
    up: int = 0  # ticks in a row saturated
    down: int = 0  # ticks in a row low
    changed: float = -math.inf  # snapshot time of its last provision or kill
    idle: dict[str, int] = field(default_factory=dict)  # instance -> ticks in a row idle


class AutoscalePolicy(Policy):
    """Add an instance to a component whose queue stays long; remove an idle one when it stays under-used.

    Args:
        min_instances: Instances a component keeps at least (default: its count when
            the policy first sees it).
        max_instances: Instances a component may reach (default: twice its first
            count); a component's own ``max_instances`` bounds it too.
        up_queue: Waiting calls per slot at which a component is saturated (default
            1.0: as many calls wait as its instances can run).
        hold_ticks: Ticks in a row a component must be saturated (or low) before a
            change (default 10).
        cooldown_s: Wall seconds after a change to a component before the next one
            (default: the largest move cost its instances declare, their warm-up,
            else ``nalar.move-cost``).
        down_util: Load (queued plus in-flight calls) per slot under which a
            component is low (default 0.3; at most 1).
        down_idle_ticks: Ticks in a row a component must be low, and the instance
            removed idle, before a kill (default 100).
        components: The components it scales: names, or one string of names joined
            by ``|`` (default: every bounded component).

    Raises:
        ConfigError: A bound below 1, ``max_instances`` below ``min_instances``, or a
            threshold out of its range.
    """

    name = "autoscale"

    def __init__(self, min_instances: int | None = None, max_instances: int | None = None, up_queue: float = 1.0,
                 hold_ticks: int = 10, cooldown_s: float | None = None, down_util: float = 0.3,
                 down_idle_ticks: int = 100, components: str | Iterable[str] | None = None) -> None:
        if min_instances is not None and min_instances < 1:
            raise ConfigError(f"autoscale: min_instances must be >= 1, got {min_instances!r}")
        if max_instances is not None and (max_instances < 1 or max_instances < (min_instances or 1)):
            raise ConfigError(f"autoscale: max_instances must be >= 1 and >= min_instances, got {max_instances!r}")
        if not up_queue > 0:
            raise ConfigError(f"autoscale: up_queue must be > 0, got {up_queue!r}")
        if not 0 <= down_util <= 1:
            raise ConfigError(f"autoscale: down_util must be within [0, 1], got {down_util!r}")
        if hold_ticks < 1 or down_idle_ticks < 1:
            raise ConfigError(f"autoscale: hold_ticks and down_idle_ticks must be >= 1, "
                              f"got {hold_ticks!r} and {down_idle_ticks!r}")
        if cooldown_s is not None and cooldown_s < 0:
            raise ConfigError(f"autoscale: cooldown_s must be >= 0, got {cooldown_s!r}")
        self.min_instances = min_instances
        self.max_instances = max_instances
        self.up_queue = float(up_queue)
        self.hold_ticks = int(hold_ticks)
        self.cooldown_s = None if cooldown_s is None else float(cooldown_s)
        self.down_util = float(down_util)
        self.down_idle_ticks = int(down_idle_ticks)
        if isinstance(components, str):
            components = [c for c in components.split("|") if c]
        self.components = None if components is None else frozenset(components)
        self._default_cost = float(resolve()["move-cost"])
        self._state: dict[str, _Scaled] = {}
        # (snapshot time, component, "provision" or the instance killed), for reports and tests.
        self.changes: deque[tuple[float, str, str]] = deque(maxlen=256)

    def _cooldown(self, instances: Iterable[InstanceStats]) -> float:
        if self.cooldown_s is not None:
            return self.cooldown_s
        declared = [s.move_cost_s for s in instances if s.move_cost_s is not None]
        return max(declared) if declared else self._default_cost

    def bounds(self, component: str) -> tuple[int, int] | None:
        """The (min, max) instances of ``component``, once the policy has seen it."""
        st = self._state.get(component)
        return None if st is None else (st.low_bound, st.high_bound)

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        out: list[Decision] = []
        for name, comp in snapshot.components.items():
            if self.components is not None and name not in self.components:
                continue
            decision = self._component(snapshot.time, comp)
            if decision is not None:
                out.append(decision)
        return out

    def _component(self, now: float, comp: ComponentStats) -> Decision | None:
        staying = [s for s in comp.instances.values() if s.moving_to is None]
        if not staying or any(s.capacity is None for s in staying):
            return None  # unbounded: nothing waits in the controllers, there is nothing to judge
        n = len(staying)
        st = self._state.get(comp.component)
        if st is None:
            low = n if self.min_instances is None else self.min_instances
            high = max(low, 2 * n if self.max_instances is None else self.max_instances)
            st = self._state[comp.component] = _Scaled(low, high)
        high = st.high_bound if comp.max_instances is None else min(st.high_bound, comp.max_instances)
        slots = sum(s.capacity or 0 for s in staying)
        queued, load = comp.queued, comp.load
        st.idle = {s.instance: st.idle.get(s.instance, 0) + 1 if s.load == 0 and not s.warming else 0
                   for s in staying}
        saturated = queued > 0 and queued >= self.up_queue * slots
        low_now = queued == 0 and load < self.down_util * slots
        st.up = st.up + 1 if saturated else 0
        st.down = st.down + 1 if low_now else 0
        cooling = now - st.changed < self._cooldown(staying)
        if saturated and st.up >= self.hold_ticks and n < high and not cooling:
            st.changed, st.up, st.down = now, 0, 0
            self.changes.append((now, comp.component, "provision"))
            return Provision(comp.component, where=None)
        if not (low_now and st.down >= self.down_idle_ticks and n > st.low_bound and not cooling):
            return None
        order = {s.instance: i for i, s in enumerate(staying)}
        idle = [s for s in staying if st.idle[s.instance] >= self.down_idle_ticks]
        if not idle:
            return None
        victim = min(idle, key=lambda s: (s.load, -st.idle[s.instance], -order[s.instance]))
        if load >= slots - (victim.capacity or 0):
            return None  # what runs now would not fit in the slots that stay
        st.changed, st.up, st.down = now, 0, 0
        st.idle.pop(victim.instance, None)
        self.changes.append((now, comp.component, victim.instance))
        return Kill(victim.instance)

    def __repr__(self) -> str:
        return f"<policy {self.name} min={self.min_instances} max={self.max_instances}>"

