"""The simulated farm's provisioner: carries out ``provision`` and ``kill`` decisions.

``FarmProvisioner(rt, farm).deploy()`` deploys one component per pool of the farm
(each engine an instance, with ``max_batch`` slots) and registers itself as the
plugin that implements the ``nalar_provision``/``nalar_kill`` hooks. Re-assigning
an engine to another agent type costs the farm's warm-up.

``Provision(component, where=None)`` (the ``autoscale`` policy's) makes a new
engine in the component's pool: its instance is there at once, warming (admitting
nothing), and serves once the warm-up is over. ``Kill(instance)`` drains: the
instance admits nothing more, its queued calls go back to the component's shared
queue, its admitted calls finish on the engine, and only then is the engine killed,
so a scale-down loses no call.

**Make before break** (the default, ``nalar.make-before-break``): a moved engine
keeps serving its old component while it warms up for the new one, as when the new
model's weights load into spare memory or a standby; its new instance is there at
once, warming (admitting nothing), so policies count it where it goes. Once the
warm-up is over the move *breaks*: the old instance stops admitting, the engine
finishes what it admitted there and then serves its new component only. The
capacity a move used to cost the giving pool (its engine idle for the whole
warm-up) is down to that drain. A move whose old component is queueing when it
is due to break (the mix turned meanwhile) is given up instead: the engine stays,
its new instance goes, and the policy sees it back in place (never worse than not
moving). ``make_before_break=False`` keeps the old way: the engine leaves at once
and warms up idle.

Each instance declares its move cost (the warm-up, in wall seconds) to the
controllers, so a policy weighs a move against what it really costs here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..hookspecs import hookimpl
from .farm import EngineFarm

__all__ = ["FarmProvisioner", "PendingMoves"]

logger = logging.getLogger(__name__)


class PendingMoves:
    """The make-before-break moves of one provisioner that have not broken yet.

    Each move is an old instance (still serving), its new instance (warming) and a
    timer that breaks the move when the warm-up ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._moves: dict[str, tuple[str, threading.Timer]] = {}  # old instance -> (new instance, timer)
        self.broken = 0  # moves that completed
        self.cancelled = 0  # moves given up at their break (the old component had nothing left to give)

    def __len__(self) -> int:
        with self._lock:
            return len(self._moves)

    def involves(self, instance: str) -> bool:
        """Whether ``instance`` is the old or the new side of a pending move."""
        with self._lock:
            return instance in self._moves or any(new == instance for new, _ in self._moves.values())

    def start(self, old: str, new: str, delay: float, brk: Callable[[], bool]) -> None:
        """Break the move ``old`` -> ``new`` after ``delay`` wall seconds by calling ``brk``.

        ``brk`` returns False when it gave the move up.
        """
        def fire() -> None:
            with self._lock:
                if self._moves.pop(old, None) is None:
                    return  # cancelled meanwhile
            try:
                done = brk()
            except Exception:
                logger.exception("breaking the move of %s to %s failed", old, new)
                done = False
            with self._lock:
                if done:
                    self.broken += 1
                else:
                    self.cancelled += 1

        timer = threading.Timer(max(0.0, delay), fire)
        timer.daemon = True
        with self._lock:
            self._moves[old] = (new, timer)
        timer.start()

    def cancel_all(self) -> None:
        """Forget every pending move (the Runtime closes)."""
        with self._lock:
            moves, self._moves = self._moves, {}
        for _, timer in moves.values():
            timer.cancel()


class FarmProvisioner:
    """Maps farm pools to components and engines to instances.

    Args:
        rt: The Runtime.
        farm: The engine farm.
        components: Component -> pool (default: every pool, same name).
        make_before_break: A moved engine serves its old component until it is warm
            (default ``nalar.make-before-break``, on).
    """

    def __init__(self, rt: Any, farm: EngineFarm, components: Mapping[str, str] | None = None, *,
                 make_before_break: bool | None = None) -> None:
        self.rt = rt
        self.farm = farm
        # component -> pool (default: the same name)
        self.components = dict(components or {p: p for p in farm.pools()})
        self.moves: list[tuple[str, str, str]] = []  # (engine, from component, to component)
        self.provisions: list[tuple[float, str, str]] = []  # (monotonic time, engine, component): new engines
        self.kills: list[tuple[float, str, str]] = []  # (monotonic time, engine, component): engines removed
        self.make_before_break = bool(rt.config.get("make-before-break", True) if make_before_break is None
                                      else make_before_break)
        self.pending = PendingMoves()
        self._capacity: int | None = farm.config.max_batch

    @property
    def move_cost_s(self) -> float:
        """Wall seconds a move costs: the farm's warm-up."""
        return float(self.farm.config.warmup_s * self.farm.config.time_scale)

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
            for iid in out[comp]:
                self.rt.plane.set_move_cost(iid, self.move_cost_s)
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
            if ctl.draining or ctl.moving_to is not None or self.pending.involves(where):
                logger.warning("instance %s is already moving", where)
                return None
            if self.make_before_break:
                return self._make(where, engine, old, component)
            plane.remove_instance(where)
            engine = self.farm.reassign(engine.name, self._pool(component))
            ready = engine.ready_at
            self.moves.append((engine.name, old, component))
        else:
            # A new engine: it warms up, then joins the component as one more instance.
            engine = self.farm.provision(self._pool(component))
            ready = engine.ready_at
            self.provisions.append((time.monotonic(), engine.name, component))
        now_wall = time.monotonic()
        iid: str = plane.add_instance(component, engine.config.max_batch, address=engine)
        plane.set_ready_at(iid, max(now_wall, ready))
        plane.set_move_cost(iid, self.move_cost_s)
        return iid

    def _make(self, where: str, engine: Any, old: str, component: str) -> str:
        """Start a make-before-break move: the new instance warms while ``where`` keeps serving."""
        plane = self.rt.plane
        warm = self.move_cost_s
        iid: str = plane.add_instance(component, engine.config.max_batch, address=engine)
        plane.set_ready_at(iid, time.monotonic() + warm)
        plane.set_move_cost(iid, warm)
        plane.mark_moving(where, component)
        self.moves.append((engine.name, old, component))

        def brk() -> bool:
            if where in plane.components.get(old, []) and (len(plane.components[old]) <= 1 or plane.queued(old)):
                # Its old component has nothing else left, or is queueing now: it cannot
                # spare the engine after all, and the move is given up.
                plane.mark_moving(where, None)
                plane.remove_instance(iid)
                logger.info("gave up moving %s: %s cannot spare it now", engine.name, old)
                return False
            if where in plane.instances:
                plane.remove_instance(where)
            moved = self.farm.reassign(engine.name, self._pool(component), warmup_s=0.0)
            plane.set_ready_at(iid, max(time.monotonic(), moved.ready_at))  # once its old calls drain
            return True

        self.pending.start(where, iid, warm, brk)
        return iid

    @hookimpl
    def nalar_kill(self, instance: str) -> bool | None:
        """Remove ``instance``: it admits nothing more, and its engine is killed once its calls finish.

        Its queued calls go back to the component's shared queue and its admitted
        calls finish on the engine (it drains), so no call is lost. The last instance
        of a component, and an instance in a pending move, are not removed (``False``).
        """
        plane = self.rt.plane
        ctl = plane.instances.get(instance)
        if ctl is None or ctl.component not in self.components:
            return None
        if ctl.draining or ctl.moving_to is not None or self.pending.involves(instance):
            logger.warning("not removing %s: it is moving or already draining", instance)
            return False
        if len(plane.components.get(ctl.component, [])) <= 1:
            logger.warning("not removing the last instance of %s", ctl.component)
            return False
        name = ctl.address.name
        plane.remove_instance(instance, on_drained=lambda: self._retire(name))
        self.kills.append((time.monotonic(), name, ctl.component))
        return True

    def _retire(self, engine: str) -> None:
        """Kill an engine whose instance has drained."""
        if engine in self.farm:
            self.farm.kill(engine)
            logger.info("killed engine %s", engine)

    @hookimpl
    def nalar_runtime_closing(self, runtime: Any) -> None:
        """Forget the moves still pending."""
        if runtime is self.rt:
            self.pending.cancel_all()
