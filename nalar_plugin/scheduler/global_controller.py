"""The global controller: a periodic tick that runs the active policy.

Each tick builds an aggregated snapshot from the local controllers, asks the
policy for decisions and pushes them. A policy that raises is logged and skipped
for that tick; serving continues on the last good decisions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from .controller import ControlPlane
from .decisions import Decision, Kill, Migrate, Provision, Route, RouteWeights, SetPriority

__all__ = ["GlobalController"]

logger = logging.getLogger(__name__)


class GlobalController:
    """Ticks every ``interval`` seconds in a daemon thread."""

    def __init__(self, plane: ControlPlane, policy: Any, *, interval: float = 0.1, plugins: Any = None) -> None:
        self.plane = plane
        self.policy = policy
        self.interval = interval
        self.plugins = plugins
        self.ticks = 0
        self.failures = 0
        self.tick_ms: deque[float] = deque(maxlen=4096)
        self.futures_max = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="nalar-global-controller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def tick(self) -> list[Decision]:
        """Run one tick now; return the decisions pushed."""
        t0 = time.perf_counter()
        self.ticks += 1
        snap = self.plane.snapshot(self.ticks)
        self.futures_max = max(self.futures_max, snap.futures)
        try:
            decisions = list(self.policy.decide(snap) or [])
        except Exception:
            self.failures += 1
            logger.exception("policy %r failed at tick %d; keeping the last decisions", self.policy, self.ticks)
            decisions = []
        for d in decisions:
            try:
                self.apply(d)
            except Exception:
                logger.exception("decision %r could not be applied", d)
        self.tick_ms.append((time.perf_counter() - t0) * 1000)
        if self.plugins is not None:
            self.plugins.notify("nalar_tick", snapshot=snap, decisions=decisions)
        return decisions

    def apply(self, d: Decision) -> None:
        """Push one decision to the local controllers (or the provisioner)."""
        p = self.plane
        if isinstance(d, Route):
            p.route(d.session, d.component, d.instance)
        elif isinstance(d, RouteWeights):
            p.route_weights(d.component, d.instances, d.weights)
        elif isinstance(d, SetPriority):
            p.set_priority(d.session, d.value, d.component)
        elif isinstance(d, Migrate):
            p.migrate(d.session, d.src_instance, d.dst_instance)
        elif isinstance(d, Provision):
            new = self.plugins.hook.nalar_provision(component=d.component, where=d.where) if self.plugins else None
            if new is None:
                logger.warning("no provisioner added an instance of %s", d.component)
        elif isinstance(d, Kill):
            done = self.plugins.hook.nalar_kill(instance=d.instance) if self.plugins else None
            if not done:
                logger.warning("no provisioner removed instance %s", d.instance)
        else:
            raise TypeError(f"unknown decision {d!r}")

    def stats(self) -> dict[str, Any]:
        """Tick counts and times, for benchmarks."""
        ms = sorted(self.tick_ms)
        return {
            "ticks": self.ticks,
            "tick_ms_p50": ms[len(ms) // 2] if ms else 0.0,
            "tick_ms_max": ms[-1] if ms else 0.0,
            "futures_max": self.futures_max,
            "policy_failures": self.failures,
        }


