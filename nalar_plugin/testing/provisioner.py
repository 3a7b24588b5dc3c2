"""The simulated farm's provisioner: carries out ``provision`` and ``kill`` decisions.

``FarmProvisioner(rt, farm).deploy()`` deploys one component per pool of the farm
(each engine an instance, with ``max_batch`` slots) and registers itself as the
plugin that implements the ``nalar_provision``/``nalar_kill`` hooks. Re-assigning
an engine to another agent type costs the farm's warm-up, during which the new
instance admits nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from ..hookspecs import hookimpl
from .farm import EngineFarm

__all__ = ["FarmProvisioner"]

logger = logging.getLogger(__name__)


class FarmProvisioner:
    """Maps farm pools to components and engines to instances."""

    def __init__(self, rt: Any, farm: EngineFarm, components: Mapping[str, str] | None = None) -> None:
        self.rt = rt
        self.farm = farm
        # component -> pool (default: the same name)
        self.components = dict(components or {p: p for p in farm.pools()})
        self.moves: list[tuple[str, str, str]] = []  # (engine, from component, to component)

    def deploy(self, *, stateful: bool = True, bounded: bool = True) -> dict[str, list[str]]:
        """Deploy every pool as a component and register this provisioner; return instance ids.

        Args:
            stateful: Sessions keep affinity to the engine that holds their prefix.
            bounded: Each instance admits ``max_batch`` calls (queueing happens in the
                local controllers); ``False`` admits everything and lets each engine
                queue internally, as a client-side router would.
        """
        out = {}
        for comp, pool in self.components.items():
            engines = self.farm.engines(pool)
            cap = engines[0].config.max_batch if bounded else None
            out[comp] = self.rt.deploy(comp, engines, capacity=cap, stateful=stateful)
        self.rt.register_plugin(self)
        return out

    def _pool(self, component: str) -> str:
        return self.components[component]

    @hookimpl
    def nalar_provision(self, component: str, where: Any) -> str | None:
        """Add an engine to ``component``: re-assign the engine of instance ``where``, or make one."""
        if component not in self.components:
            return None
        plane = self.rt.plane
        if isinstance(where, str) and where in plane.instances:
            ctl = plane.instances[where]
            engine = ctl.address
            old = ctl.component
            if len(plane.components.get(old, [])) <= 1:
                logger.warning("not moving the last instance of %s", old)
                return None
            plane.remove_instance(where)
            engine = self.farm.reassign(engine.name, self._pool(component))
            ready = engine.ready_at
            self.moves.append((engine.name, old, component))
        else:
            engine = self.farm.provision(self._pool(component))
            ready = engine.ready_at
        now_wall = time.monotonic()
        iid = plane.add_instance(component, engine.config.max_batch, address=engine)
        plane.set_ready_at(iid, max(now_wall, ready))
        return iid

    @hookimpl
    def nalar_kill(self, instance: str) -> bool | None:
        """Remove ``instance`` and kill its engine once it has drained."""
        plane = self.rt.plane
        ctl = plane.instances.get(instance)
        if ctl is None or ctl.component not in self.components:
            return None
        plane.remove_instance(instance)
        self.farm.kill(ctl.address.name)
        return True
