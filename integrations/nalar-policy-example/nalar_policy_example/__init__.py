"""An example policy package: install it and run ``Runtime(policy="shortest_queue")``."""

from __future__ import annotations

from nalar_plugin.scheduler import Policy, RouteWeights, Snapshot

__all__ = ["ShortestQueuePolicy"]


class ShortestQueuePolicy(Policy):
    """Weight new calls toward the instances with the shortest queues."""

    def decide(self, snapshot: Snapshot) -> list[RouteWeights]:
        out = []
        for comp in snapshot.components.values():
            ids = tuple(comp.instances)
            weights = tuple(1.0 / (1 + s.load) for s in comp.instances.values())
            out.append(RouteWeights(comp.component, ids, weights))
        return out
