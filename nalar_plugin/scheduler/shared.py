"""The global controller hosted in the Dask scheduler, for clusters shared by drivers.

When several driver processes join one cluster, each keeps its local controllers
(event-driven admission stays in the driver) and reports an aggregated snapshot
every tick to :class:`SchedulerGlobalController`, a ``SchedulerPlugin``. The plugin
merges every driver's report into one view of every instance, runs the policy on
it, and pushes each decision to the driver that owns the session or instance, as
a Dask event. Instance ids in the merged view are ``"<driver>|<instance>"``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import asdict, fields
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.ioloop import PeriodicCallback

from ..plugins import PluginManager
from . import decisions as D
from .global_controller import GlobalController
from .compose import compose

__all__ = ["DECISION_TOPIC", "SchedulerGlobalController", "SharedDecisions", "snapshot_to_dict"]

logger = logging.getLogger(__name__)

DECISION_TOPIC = "nalar-decisions"
_SEP = "|"
_DECISION_TYPES = {c.__name__: c for c in (D.Route, D.RouteWeights, D.SetPriority, D.Migrate, D.Provision, D.Kill)}


def snapshot_to_dict(snap: D.Snapshot) -> dict[str, Any]:
    """A snapshot as plain data (what a driver reports)."""
    return {
        "time": snap.time,
        "tick": snap.tick,
        "futures": snap.futures,
        "components": {
            n: {"queue_len": c.queue_len, "arrived": c.arrived, "sessions_arrived": c.sessions_arrived,
                "slo_s": c.slo_s, "rejected": c.rejected, "deferred": c.deferred,
                "max_instances": c.max_instances, "inline": c.inline,
                "instances": {i: asdict(s) for i, s in c.instances.items()}}
            for n, c in snap.components.items()
        },
        "sessions": {
            k: {f.name: getattr(v, f.name) for f in fields(v)} for k, v in snap.sessions.items()
        },
    }


def decision_to_dict(d: D.Decision) -> dict[str, Any]:
    return {"type": type(d).__name__, **asdict(d)}


def decision_from_dict(data: dict[str, Any]) -> D.Decision:
    data = dict(data)
    cls = _DECISION_TYPES[data.pop("type")]
    for key in ("instances", "weights"):
        if key in data:
            data[key] = tuple(data[key])
    return cls(**data)  # type: ignore[no-any-return]


class SchedulerGlobalController(SchedulerPlugin):
    """The global controller as a Dask ``SchedulerPlugin`` (one per cluster)."""

    name = "nalar-global-controller"
    idempotent = True  # a second driver registering it keeps the running one

    def __init__(self, policy: str = "nalar", interval: float = 0.1, stale_after: float = 5.0) -> None:
        self.policy_name = policy
        self.interval = interval
        self.stale_after = stale_after

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.policy = compose(PluginManager(), self.policy_name)
        self.reports: dict[str, dict[str, Any]] = {}
        self.ticks = 0
        self.failures = 0
        self.tick_ms: deque[float] = deque(maxlen=1024)
        scheduler.handlers["nalar_report"] = self.report
        scheduler.handlers["nalar_view"] = self.view
        self._pc = PeriodicCallback(self.tick, self.interval * 1000)
        self._pc.start()

    async def close(self) -> None:
        self._pc.stop()

    def report(self, driver: str, snapshot: dict[str, Any]) -> int:
        """Handler: a driver's snapshot for this tick; returns the tick count."""
        self.reports[driver] = {"at": time.time(), "snapshot": snapshot}
        return self.ticks

    def merged(self) -> D.Snapshot:
        """One snapshot over every live driver's instances and sessions."""
        now = time.time()
        for drv in [d for d, r in self.reports.items() if now - r["at"] > self.stale_after]:
            del self.reports[drv]
        comps: dict[str, D.ComponentStats] = {}
        sessions: dict[str, D.SessionStats] = {}
        futures = 0
        for drv, rep in self.reports.items():
            snap = rep["snapshot"]
            futures += snap["futures"]
            for name, c in snap["components"].items():
                comp = comps.setdefault(name, D.ComponentStats(name, {}))
                comp.queue_len += c["queue_len"]
                for key in ("arrived", "sessions_arrived"):  # the mix over every driver
                    if c.get(key) is not None:
                        setattr(comp, key, (getattr(comp, key) or 0) + c[key])
                comp.rejected += c.get("rejected", 0)
                comp.deferred += c.get("deferred", 0)
                comp.slo_s = c.get("slo_s") if comp.slo_s is None else comp.slo_s
                comp.max_instances = c.get("max_instances") if comp.max_instances is None else comp.max_instances
                comp.inline = comp.inline or bool(c.get("inline"))
                for iid, s in c["instances"].items():
                    gid = f"{drv}{_SEP}{iid}"
                    comp.instances[gid] = D.InstanceStats(**{**s, "instance": gid})
            for sid, s in snap["sessions"].items():
                loc = {k: f"{drv}{_SEP}{v}" for k, v in s["location"].items()}
                sessions[f"{drv}{_SEP}{sid}"] = D.SessionStats(**{**s, "session": f"{drv}{_SEP}{sid}", "location": loc})
        return D.Snapshot(time=now, tick=self.ticks, components=comps, sessions=sessions, futures=futures)

    def view(self) -> dict[str, Any]:
        """Handler: the merged view, for ``Runtime.cluster_view()``."""
        snap = self.merged()
        return {
            "drivers": sorted(self.reports),
            "ticks": self.ticks,
            "policy": self.policy_name,
            "tick_ms_max": max(self.tick_ms, default=0.0),
            **snapshot_to_dict(snap),
        }

    def tick(self) -> None:
        t0 = time.perf_counter()
        self.ticks += 1
        snap = self.merged()
        try:
            decisions = list(self.policy.decide(snap) or [])
        except Exception:
            self.failures += 1
            logger.exception("policy %s failed at tick %d; keeping the last decisions", self.policy_name, self.ticks)
            decisions = []
        per_driver: dict[str, list[dict[str, Any]]] = {}
        for d in decisions:
            for drv, local in _localise(d):
                per_driver.setdefault(drv, []).append(decision_to_dict(local))
        for drv, items in per_driver.items():
            self.scheduler.log_event(DECISION_TOPIC, {"driver": drv, "decisions": items})
        self.tick_ms.append((time.perf_counter() - t0) * 1000)


def _split(gid: str) -> tuple[str, str]:
    drv, _, local = gid.partition(_SEP)
    return drv, local


def _localise(d: D.Decision) -> list[tuple[str, D.Decision]]:
    """Route a decision on global ids to the driver that owns them, with local ids."""
    if isinstance(d, D.SetPriority):
        drv, sid = _split(d.session)
        return [(drv, D.SetPriority(sid, d.value, d.component))]
    if isinstance(d, D.Route):
        drv, sid = _split(d.session)
        return [(drv, D.Route(sid, d.component, _split(d.instance)[1]))]
    if isinstance(d, D.Migrate):
        drv, sid = _split(d.session)
        src, dst = _split(d.src_instance), _split(d.dst_instance)
        # A migration across drivers would need the other driver's queue; the
        # owning driver applies it only between its own instances.
        return [(drv, D.Migrate(sid, src[1], dst[1]))] if src[0] == dst[0] == drv else []
    if isinstance(d, D.RouteWeights):
        by: dict[str, tuple[list[str], list[float]]] = {}
        for gid, w in zip(d.instances, d.weights):
            drv, iid = _split(gid)
            by.setdefault(drv, ([], []))[0].append(iid)
            by[drv][1].append(w)
        return [(drv, D.RouteWeights(d.component, tuple(ids), tuple(ws))) for drv, (ids, ws) in by.items()]
    if isinstance(d, D.Kill):
        drv, iid = _split(d.instance)
        return [(drv, D.Kill(iid))]
    if isinstance(d, D.Provision):
        if isinstance(d.where, str) and _SEP in d.where:
            drv, iid = _split(d.where)
            return [(drv, D.Provision(d.component, iid))]
        return []
    return []


class SharedDecisions:
    """A driver's link to the shared global controller: reports snapshots, applies its decisions.

    Attached to the driver's :class:`GlobalController`, whose one tick loop
    then reports instead of deciding; decisions pushed by the scheduler are
    applied with the same :meth:`GlobalController.apply`.

    Args:
        controller: The driver's global controller.
        client: The Dask client.
        driver: The driver's token.
        policy: The policy the scheduler runs.
    """

    def __init__(self, controller: GlobalController, client: Any, driver: str, *, policy: str) -> None:
        self.controller = controller
        self.client = client
        self.driver = driver
        self.applied = 0
        self.reports = 0
        client.register_plugin(SchedulerGlobalController(policy, controller.interval))
        client.subscribe_topic(DECISION_TOPIC, self._on_decisions)
        controller.report = self._report

    def _report(self, snap: D.Snapshot) -> None:
        try:
            self.client.sync(self.client.scheduler.nalar_report, driver=self.driver, snapshot=snapshot_to_dict(snap))
            self.reports += 1
        except Exception:
            logger.warning("could not report to the shared global controller", exc_info=True)

    def _on_decisions(self, event: Any) -> None:
        _, msg = event
        if not isinstance(msg, dict) or msg.get("driver") != self.driver:
            return
        for data in msg.get("decisions", []):
            try:
                self.controller.apply(decision_from_dict(data))
                self.applied += 1
            except Exception:
                logger.exception("decision %r from the shared global controller failed", data)

    def view(self) -> dict[str, Any]:
        """The merged view of every driver's instances, from the scheduler."""
        return self.client.sync(self.client.scheduler.nalar_view)  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        """The shared controller's tick figures."""
        view = self.view()
        return {
            "ticks": view["ticks"],
            "tick_ms_p50": None,
            "tick_ms_max": view["tick_ms_max"],
            "futures_max": view["futures"],
            "policy_failures": self.controller.failures,
            "decisions_applied": self.applied,
            "shared": True,
        }
