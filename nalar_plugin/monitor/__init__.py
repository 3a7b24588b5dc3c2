"""The operators' view: a live page in Dask's dashboard, Prometheus metrics and ``nalar top``.

* :class:`Monitor` (driver side) counts calls on the call path and reports on demand;
* :class:`NalarDashboard` (a ``SchedulerPlugin``) serves ``<dashboard>/nalar`` and
  ``<dashboard>/nalar/data.json`` and exposes the ``nalar_*`` metrics on ``<dashboard>/metrics``;
* :mod:`nalar_plugin.monitor.top` is the terminal view of ``nalar top``.
"""

from __future__ import annotations

from .dashboard import DashboardLink, NalarDashboard, dashboard_base, page_url
from .metrics import METRICS
from .recorder import HISTORY_STEP, Monitor

__all__ = ["HISTORY_STEP", "METRICS", "DashboardLink", "Monitor", "NalarDashboard", "dashboard_base", "page_url"]
