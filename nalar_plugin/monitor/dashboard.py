"""The nalar page in Dask's dashboard: ``<dashboard>/nalar`` and ``<dashboard>/nalar/data.json``.

:class:`NalarDashboard` is a ``SchedulerPlugin`` (one per cluster, whoever
registers it first). When it starts it adds two tornado handlers to the
scheduler's own HTTP application (the server of Dask's dashboard and of
``/metrics``) and registers nalar's Prometheus collector in that process.

Every driver's report reaches it: a driver whose scheduler runs in its own
process (the embedded ``LocalCluster``, threads or processes) hands it its
:class:`~nalar_plugin.monitor.Monitor`, read only when the page, ``nalar top``
or Prometheus asks, so a tick costs nothing; a driver of a remote cluster
pushes its report from its tick loop every :data:`PUSH_INTERVAL` seconds
through the scheduler handler ``nalar_dashboard_report``, without waiting for
the answer. A pushed report older than ``stale_after`` is dropped (its driver
is gone).
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado import web

from . import metrics
from .view import merge

__all__ = ["PUSH_INTERVAL", "DashboardLink", "NalarDashboard", "dashboard_base", "page_url"]

logger = logging.getLogger(__name__)

PUSH_INTERVAL: Final = 0.5  # seconds between two reports a remote driver pushes
_PLUGINS: weakref.WeakSet[NalarDashboard] = weakref.WeakSet()  # the started plugins of this process


def _page() -> bytes:
    return importlib.resources.files(__package__).joinpath("nalar.html").read_bytes()


def dashboard_base(link: str) -> str:
    """The root of a Dask dashboard from any of its addresses (``…/status``, ``…/nalar``, the root)."""
    parts = urlsplit(link if "://" in link else f"http://{link}")
    path = parts.path.rstrip("/")
    for tail in ("/nalar/data.json", "/data.json", "/nalar", "/status"):
        if path.endswith(tail):
            path = path[: -len(tail)]
            break
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def page_url(link: str) -> str:
    """The nalar page of the Dask dashboard at ``link``."""
    return dashboard_base(link) + "/nalar"


def _all_reports() -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for plugin in list(_PLUGINS):
        for rep in plugin.reports():
            seen.setdefault(rep["driver"], rep)
    return list(seen.values())


class _Handler(web.RequestHandler):
    def initialize(self, plugin: NalarDashboard) -> None:
        self.plugin = plugin

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")


class _PageHandler(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(_page())


class _DataHandler(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        view = self.plugin.view()
        try:
            text = json.dumps(view, default=str, allow_nan=False)
        except ValueError:  # an infinite or NaN figure: JSON (and the page's JSON.parse) has none
            text = json.dumps(_finite(view), default=str, allow_nan=False)
        self.write(text)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _prefix(app: Any) -> str:
    """The dashboard's URL prefix (``--dashboard-prefix``), read from where Dask put ``/metrics``."""
    for router in (getattr(app, "wildcard_router", None),):
        for rule in getattr(router, "rules", []):
            pattern = getattr(getattr(rule.matcher, "regex", None), "pattern", "")
            if pattern.endswith("metrics$"):
                return pattern[: -len("metrics$")].rstrip("/")
    return ""


class NalarDashboard(SchedulerPlugin):
    """The nalar page and metrics in the scheduler; one per cluster.

    Args:
        stale_after: Seconds after which a pushed report whose driver said
            nothing more is dropped.
    """

    name = "nalar-dashboard"
    idempotent = True  # a second driver registering it keeps the running one

    def __init__(self, stale_after: float = 10.0) -> None:
        self.stale_after = stale_after

    async def start(self, scheduler: Any) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, Any] = {}  # driver -> its Monitor, read on demand
        self._pushed: dict[str, tuple[float, dict[str, Any]]] = {}  # driver -> (received at, report)
        scheduler.handlers["nalar_dashboard_report"] = self.receive
        scheduler.handlers["nalar_dashboard_leave"] = self.leave
        app = getattr(scheduler, "http_application", None)
        self.path: str | None = None
        if app is not None:
            prefix = _prefix(app)
            app.add_handlers(r".*$", [
                (prefix + r"/nalar/?", _PageHandler, {"plugin": self}),
                (prefix + r"/nalar/data\.json", _DataHandler, {"plugin": self}),
            ])
            self.path = prefix + "/nalar"
        metrics.register(_all_reports)
        _PLUGINS.add(self)

    async def close(self) -> None:
        _PLUGINS.discard(self)

    # -- drivers ---------------------------------------------------------------------------
    def attach(self, driver: str, monitor: Any) -> None:
        """Read ``monitor.report()`` whenever the view is asked for (a driver in this process)."""
        with self._lock:
            self._live[driver] = monitor

    def receive(self, driver: str, report: dict[str, Any]) -> None:
        """Handler: a remote driver's latest report."""
        with self._lock:
            self._pushed[driver] = (time.time(), report)

    def leave(self, driver: str) -> None:
        """Handler (and call): the driver closed; forget it."""
        with self._lock:
            self._live.pop(driver, None)
            self._pushed.pop(driver, None)

    def reports(self) -> list[dict[str, Any]]:
        """The latest report of every live driver."""
        now = time.time()
        with self._lock:
            live = list(self._live.values())
            for drv in [d for d, (at, _) in self._pushed.items() if now - at > self.stale_after]:
                del self._pushed[drv]
            pushed = [rep for _, rep in self._pushed.values()]
        out = []
        for monitor in live:
            try:
                out.append(monitor.report())
            except Exception:
                logger.exception("a driver's report for the nalar dashboard failed")
        return out + pushed

    def view(self) -> dict[str, Any]:
        """The merged view of every driver (what ``/nalar/data.json`` serves)."""
        return merge(self.reports(), time.time())


class DashboardLink:
    """A driver's link to the cluster's :class:`NalarDashboard`.

    Args:
        client: The Dask client.
        scheduler: The scheduler object when it runs in this process (embedded), else ``None``.
        monitor: The driver's monitor.
        every: Runs a callable from the driver's tick loop every so many
            seconds (``GlobalController.every``).
    """

    def __init__(self, client: Any, scheduler: Any, monitor: Any, every: Callable[[float, Callable[[], None]], None]) -> None:
        self.client = client
        self.monitor = monitor
        self.driver: str = monitor.driver
        self._sending = False
        self._plugin: NalarDashboard | None = None
        self.available = True
        try:
            client.register_plugin(NalarDashboard())
        except Exception as exc:  # a scheduler that cannot import nalar-plugin: serve without the page
            logger.warning("the nalar page and metrics are not available in this cluster's dashboard: the "
                           "scheduler could not start them (%s); its environment needs nalar-plugin installed", exc)
            self.available = False
            return
        plugin = getattr(scheduler, "plugins", {}).get(NalarDashboard.name) if scheduler is not None else None
        if isinstance(plugin, NalarDashboard):
            plugin.attach(self.driver, monitor)
            self._plugin = plugin
        else:
            every(PUSH_INTERVAL, self.push)

    def push(self) -> None:
        """Send the latest report to the scheduler, unless the previous one is still on its way."""
        if self._sending:
            return
        report = self.monitor.report()
        self._sending = True
        self.client.loop.add_callback(self._send, report)

    async def _send(self, report: dict[str, Any]) -> None:
        try:
            await self.client.scheduler.nalar_dashboard_report(driver=self.driver, report=report)
        except Exception:
            logger.debug("could not push the report to the nalar dashboard", exc_info=True)
        finally:
            self._sending = False

    def close(self) -> None:
        """Leave the dashboard (the page drops this driver at once)."""
        if self._plugin is not None:
            self._plugin.leave(self.driver)
            return
        if not self.available:
            return
        try:
            self.client.sync(self.client.scheduler.nalar_dashboard_leave, driver=self.driver, callback_timeout=5)
        except Exception:
            logger.debug("could not leave the nalar dashboard", exc_info=True)
