"""nalar's metrics on Dask's Prometheus endpoint (``<dashboard>/metrics``), named ``nalar_*``.

Dask's handler serves ``prometheus_client.REGISTRY``; one collector registered
there per process (:func:`register`) builds the metric families at scrape time
from the reports of every driver that the process's nalar dashboard plugins
know. Nothing is built between scrapes.

Every family has a ``driver`` label (the Runtime's token), so drivers sharing a
cluster never collide; sum over it for cluster-wide figures.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

__all__ = ["METRICS", "families", "register"]

METRICS: dict[str, str] = {
    "nalar_calls": "Calls finished, by component and outcome (finished, error, cancelled, rejected)",
    "nalar_admission_rejections": "Calls refused before reaching an instance, by component and reason "
                                  "(veto, resources, slo, closed, or the reason an error names)",
    "nalar_policy_decisions": "Policy decisions pushed to the local controllers, by type",
    "nalar_queue_length": "Calls waiting in an instance's own queue",
    "nalar_shared_queue_length": "Calls of a component waiting for any of its instances (late binding)",
    "nalar_in_flight": "Calls running on an instance",
    "nalar_capacity": "Slots of an instance (instances without a bound are left out)",
    "nalar_call_latency_seconds": "Call latency per instance, from queueing to completion",
    "nalar_journal_commit_seconds": "Duration of one group-commit transaction of the journal",
    "nalar_active_sessions": "Sessions with calls queued or in flight",
    "nalar_calls_in_flight": "Calls made and not yet finished (waiting for inputs, queued or running)",
    "nalar_ticks": "Global controller ticks",
    "nalar_ratelimited_calls": "Calls of a rate-limited component that waited for budget before admission",
    "nalar_ratelimit_wait_seconds": "Seconds calls of a rate-limited component waited for budget, in all",
}

_lock = threading.Lock()
_registered: list[Any] = []


def _buckets(bounds: list[float], counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    acc = 0
    for bound, n in zip(bounds, counts):
        acc += n
        out.append((repr(float(bound)), acc))
    out.append(("+Inf", acc + sum(counts[len(bounds):])))
    return out


def families(reports: Iterable[dict[str, Any]]) -> list[Metric]:
    """The ``nalar_*`` metric families of these driver reports."""
    m = METRICS
    calls = CounterMetricFamily("nalar_calls", m["nalar_calls"], labels=["driver", "component", "outcome"])
    rejected = CounterMetricFamily("nalar_admission_rejections", m["nalar_admission_rejections"],
                                   labels=["driver", "component", "reason"])
    decisions = CounterMetricFamily("nalar_policy_decisions", m["nalar_policy_decisions"], labels=["driver", "type"])
    inst = ["driver", "component", "instance"]
    queue = GaugeMetricFamily("nalar_queue_length", m["nalar_queue_length"], labels=inst)
    shared = GaugeMetricFamily("nalar_shared_queue_length", m["nalar_shared_queue_length"],
                               labels=["driver", "component"])
    in_flight = GaugeMetricFamily("nalar_in_flight", m["nalar_in_flight"], labels=inst)
    capacity = GaugeMetricFamily("nalar_capacity", m["nalar_capacity"], labels=inst)
    latency = HistogramMetricFamily("nalar_call_latency_seconds", m["nalar_call_latency_seconds"], labels=inst)
    commit = HistogramMetricFamily("nalar_journal_commit_seconds", m["nalar_journal_commit_seconds"],
                                   labels=["driver"])
    sessions = GaugeMetricFamily("nalar_active_sessions", m["nalar_active_sessions"], labels=["driver"])
    outstanding = GaugeMetricFamily("nalar_calls_in_flight", m["nalar_calls_in_flight"], labels=["driver"])
    ticks = CounterMetricFamily("nalar_ticks", m["nalar_ticks"], labels=["driver"])
    limited = CounterMetricFamily("nalar_ratelimited_calls", m["nalar_ratelimited_calls"],
                                  labels=["driver", "component"])
    limit_wait = CounterMetricFamily("nalar_ratelimit_wait_seconds", m["nalar_ratelimit_wait_seconds"],
                                     labels=["driver", "component"])
    for rep in reports:
        drv = rep["driver"]
        for comp, by in rep.get("calls", {}).items():
            for outcome, n in by.items():
                calls.add_metric([drv, comp, outcome], n)
        for comp, by in rep.get("rejections", {}).items():
            for reason, n in by.items():
                rejected.add_metric([drv, comp, reason], n)
        for kind, n in rep.get("decision_counts", {}).items():
            decisions.add_metric([drv, kind], n)
        for comp, c in rep.get("components", {}).items():
            shared.add_metric([drv, comp], c["queue_len"])
            for iid, s in c["instances"].items():
                queue.add_metric([drv, comp, iid], s["queue_len"])
                in_flight.add_metric([drv, comp, iid], s["in_flight"])
                if s["capacity"] is not None:
                    capacity.add_metric([drv, comp, iid], s["capacity"])
        bounds = rep.get("latency_bounds", [])
        for iid, h in rep.get("latency", {}).items():
            latency.add_metric([drv, h["component"], iid], _buckets(bounds, h["counts"]), h["sum"])
        journal = rep.get("journal")
        if journal is not None:
            commit.add_metric([drv], _buckets(journal["bounds"], journal["counts"]), journal["sum"])
        sessions.add_metric([drv], rep.get("sessions_active", 0))
        outstanding.add_metric([drv], rep.get("calls_in_flight", 0))
        ticks.add_metric([drv], rep.get("ticks", 0))
        for comp, r in rep.get("rate_limits", {}).items():
            limited.add_metric([drv, comp], r["limited"])
            limit_wait.add_metric([drv, comp], r["wait_s"])
    return [calls, rejected, decisions, queue, shared, in_flight, capacity, latency, commit, sessions,
            outstanding, ticks, limited, limit_wait]


class _Collector:
    """The process's one collector: families of every driver its sources report."""

    def __init__(self, sources: Callable[[], list[dict[str, Any]]]) -> None:
        self.sources = sources

    def describe(self) -> list[Metric]:
        return []  # names are known only at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        yield from families(self.sources())


def register(sources: Callable[[], list[dict[str, Any]]]) -> None:
    """Register the collector in ``prometheus_client.REGISTRY``, once per process.

    Args:
        sources: Called at each scrape; returns the driver reports to expose.
    """
    with _lock:
        if not _registered:
            collector = _Collector(sources)
            prometheus_client.REGISTRY.register(collector)  # type: ignore[arg-type]
            _registered.append(collector)
