"""Policies of the benchmarks: compositions of installed policies, and one re-allocation policy.

``"least_loaded+migrate"`` is a policy whose ``choose`` is the first member's that
defines one and whose decisions are every member's, in order; a member may take
constructor arguments, ``"reallocate:cooldown_ticks=300"`` (the composition is
:func:`nalar_plugin.scheduler.compose.compose`; ``Runtime(policy=...)`` reads the same).

:class:`FollowDemandPolicy` (``follow_demand``) is the one scheduling rule written
here, registered through the ``nalar_add_policies`` hook: it splits instances in
proportion to averaged load (queues included) and moves nothing while an instance
warms up. The built-in ``reallocate`` splits by arriving work and moves only into
a saturated component; the benchmarks' workloads use ``reallocate``.
"""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl
from ..scheduler.decisions import Decision, Provision, Snapshot
from ..scheduler.compose import CompositePolicy, compose
from ..scheduler.policies import Policy

__all__ = ["BenchPolicies", "CompositePolicy", "FollowDemandPolicy", "make_policy"]


class FollowDemandPolicy(Policy):
    """Move engines between agent types in proportion to their load averaged over time, waiting out each warm-up."""

    name = "follow_demand"

    def __init__(self, horizon_ticks: int = 100, cooldown_ticks: int = 300, margin: float = 0.75) -> None:
        self.horizon_ticks = max(1, horizon_ticks)
        self.alpha = 1.0 / self.horizon_ticks  # EWMA weight: load over about horizon_ticks ticks
        self.cooldown_ticks = cooldown_ticks  # no move before the previous one has warmed up
        self.margin = margin  # instances a component must be short (and the donor over) before a move
        self._load: dict[str, float] = {}
        self._last = -(10**9)

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        # Only bounded components are engine pools a provisioner can move engines between.
        pools = {n: c for n, c in snapshot.components.items() if c.instances and c.capacity is not None}
        for name, comp in pools.items():
            prev = self._load.get(name, 0.0)
            self._load[name] = prev + self.alpha * (comp.load - prev)
        total = sum(self._load.get(n, 0.0) for n in pools)
        # Nothing moves until the average covers a horizon, nor while the last move warms up.
        warming = any(i.warming for c in pools.values() for i in c.instances.values())
        if len(pools) < 2 or total <= 0 or warming or snapshot.tick < self.horizon_ticks \
                or snapshot.tick - self._last < self.cooldown_ticks:
            return []
        engines = sum(len(c.instances) for c in pools.values())
        short = {n: max(1.0, engines * self._load[n] / total) - len(c.instances) for n, c in pools.items()}
        need = max(short, key=lambda n: short[n])
        give = min(short, key=lambda n: short[n])
        if short[need] < self.margin or -short[give] < self.margin or len(pools[give].instances) < 2:
            return []
        donor = min(pools[give].instances.values(), key=lambda s: (s.load, s.instance))
        self._last = snapshot.tick
        return [Provision(need, where=donor.instance)]


class BenchPolicies:
    """A plugin that installs the benchmark's policies (``nalar_add_policies``)."""

    @hookimpl
    def nalar_add_policies(self) -> dict[str, type]:
        return {"follow_demand": FollowDemandPolicy}


def make_policy(rt: Any, spec: str) -> Any:
    """The policy object for ``spec`` on ``rt`` (see :func:`nalar_plugin.scheduler.compose.compose`).

    For example ``least_loaded+reallocate:cooldown_ticks=300``.

    Raises:
        ConfigError: An unknown policy or a malformed argument.
    """
    return compose(rt.plugins, spec)
