"""The global controller: one periodic tick per Runtime.

Each tick builds an aggregated snapshot from the local controllers. With a
policy of its own, the controller asks it for decisions and pushes them; when
the cluster's drivers share one global controller (see
:mod:`nalar_plugin.scheduler.shared`), the tick reports the snapshot instead and
the decisions arrive from the scheduler, to be pushed with the same
:meth:`GlobalController.apply`. A policy that raises is logged and skipped for
that tick; serving continues on the last good decisions. Work that belongs to
the same period (refreshing the view of the cluster's workers) runs as
``every`` callbacks of the same loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .controller import ControlPlane
from .decisions import Decision, Kill, Migrate, Provision, Route, RouteWeights, SetPriority, Snapshot

__all__ = ["RECENT_DECISIONS", "GlobalController"]

logger = logging.getLogger(__name__)

RECENT_DECISIONS = 256  # the latest decisions kept, with their times, for the dashboard


class GlobalController:
    """Ticks every ``interval`` seconds in a daemon thread."""

    def __init__(self, plane: ControlPlane, policy: Any, *, interval: float = 0.1, plugins: Any = None) -> None:
        self.plane = plane
        self.policy = policy
        self.interval = interval
        self.plugins = plugins
        self.report: Callable[[Any], None] | None = None  # set when a shared controller decides
        self._every: list[tuple[float, Callable[[], None], list[float]]] = []
        self.ticks = 0
        self.applied = 0  # decisions pushed, whoever made them
        self.failures = 0
        self.tick_ms: deque[float] = deque(maxlen=4096)
        self.futures_max = 0
        self.last_snapshot: Snapshot | None = None  # the latest tick's, for observers (the dashboard)
        self.decision_counts: dict[str, int] = {}  # decisions pushed, by type
        self.recent: deque[tuple[float, Decision]] = deque(maxlen=RECENT_DECISIONS)  # (time.time(), decision)
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

    def every(self, seconds: float, fn: Callable[[], None]) -> None:
        """Also run ``fn`` from the tick loop, at most every ``seconds``."""
        self._every.append((seconds, fn, [time.monotonic()]))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # the loop must survive anything a tick meets
                logger.exception("global controller tick %d failed", self.ticks)
            now = time.monotonic()
            for seconds, fn, last in self._every:
                if now - last[0] >= seconds:
                    last[0] = now
                    try:
                        fn()
                    except Exception:
                        logger.exception("periodic task %r of the global controller failed", fn)

    def tick(self) -> list[Decision]:
        """Run one tick now; return the decisions pushed (none when a shared controller decides)."""
        t0 = time.perf_counter()
        self.ticks += 1
        snap = self.plane.snapshot(self.ticks)
        self.last_snapshot = snap
        self.futures_max = max(self.futures_max, snap.futures)
        if self.report is not None:
            self.report(snap)
            self.tick_ms.append((time.perf_counter() - t0) * 1000)
            return []
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
        self.applied += 1
        kind = type(d).__name__
        self.decision_counts[kind] = self.decision_counts.get(kind, 0) + 1
        self.recent.append((time.time(), d))
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
            elif isinstance(new, str) and isinstance(d.where, str) and new != d.where:
                p.set_moved_from(new, d.where)  # a move: policies follow the engine to its new instance
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


