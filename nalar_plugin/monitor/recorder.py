"""The driver's side of the operators' view: counts on the call path, a report on demand.

:class:`Monitor` is a pluggy plugin of the Runtime. Its one hot-path hook,
``nalar_call_finished``, adds to plain ints and a fixed-bucket histogram under an
uncontended lock (about a microsecond); the tick loop samples a short history
once a second from the snapshot the global controller already built. Nothing
else is made until someone asks: :meth:`Monitor.report` turns the latest tick's
snapshot, the decisions the controller pushed and the counters into plain data,
for the dashboard page, ``nalar top`` and the Prometheus endpoint.
"""

from __future__ import annotations

import heapq
import threading
from bisect import bisect_left
import time
from collections import deque
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Final

from ..errors import CallVetoedError, RuntimeStateError, UnsatisfiableResourcesError
from ..hookspecs import hookimpl
from ..measure import LATENCY_BOUNDS
from ..scheduler.decisions import Decision, Kill, Migrate, Provision, Route, RouteWeights, SetPriority, Snapshot

__all__ = ["HISTORY_SAMPLES", "HISTORY_STEP", "Monitor", "decision_record", "rejection_reason"]

HISTORY_STEP: Final = 1.0  # seconds between two history samples
HISTORY_SAMPLES: Final = 300  # samples kept: five minutes
REPORT_SESSIONS: Final = 100  # sessions a report lists at most (the count covers them all)
REPORT_DECISIONS: Final = 100  # latest decisions a report lists


# Refusals known by their class name (their module need not be imported here).
_REASONS_BY_NAME: Final = {"AdmissionRejectedError": "slo"}
_MARK: Final = "_nalar_refused"  # set on a refusal once counted: its dependents fail with the same object


def rejection_reason(error: BaseException) -> str | None:
    """Why a call that never reached an instance was refused, or ``None`` if it was not a refusal.

    An exception may name its own reason with a ``nalar_reason`` attribute;
    otherwise vetoes (``nalar_call_veto``), resource needs no worker offers,
    calls shed at admission (``AdmissionRejectedError``) and calls refused
    because the Runtime closed are refusals.
    """
    reason = getattr(error, "nalar_reason", None)
    if isinstance(reason, str):
        return reason
    if isinstance(error, CallVetoedError):
        return "veto"
    if isinstance(error, UnsatisfiableResourcesError):
        return "resources"
    if isinstance(error, RuntimeStateError):
        return "closed"
    return _REASONS_BY_NAME.get(type(error).__name__)


def _refused(call: Any, error: BaseException) -> str | None:
    """The reason ``call`` itself was refused; ``None`` for other errors and for a refusal of one of its inputs."""
    if call.context.dependencies and getattr(error, _MARK, False):
        return None  # an input was refused; this call failed because of it
    reason = rejection_reason(error)
    if reason is not None:
        try:
            setattr(error, _MARK, True)
        except AttributeError:
            pass
    return reason


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return str(value)


def decision_record(at: float, d: Decision) -> dict[str, Any]:
    """A decision as plain data: ``time``, ``type``, ``kind`` (what it does), ``text`` and its fields."""
    if isinstance(d, Route):
        kind, text = "move", f"{d.session}: {d.component} \u2192 {d.instance}"
    elif isinstance(d, Migrate):
        kind, text = "migration", f"{d.session}: {d.src_instance} \u2192 {d.dst_instance}"
    elif isinstance(d, RouteWeights):
        kind = "reallocation"
        text = f"{d.component}: " + ", ".join(f"{i} {w:.2f}" for i, w in zip(d.instances, d.weights))
    elif isinstance(d, Provision):
        kind, text = "reallocation", f"+1 {d.component}" + (f" (from {d.where})" if d.where is not None else "")
    elif isinstance(d, Kill):
        kind, text = "reallocation", f"\u2212 {d.instance}"
    elif isinstance(d, SetPriority):
        kind = "priority"
        text = f"{d.session}: {d.value:g}" + (f" on {d.component}" if d.component else "")
    else:
        kind, text = "other", repr(d)
    out: dict[str, Any] = {"time": at, "type": type(d).__name__, "kind": kind, "text": text}
    for f in fields(d):
        out[f.name] = _plain(getattr(d, f.name))
    return out


_INSTANCE_FIELDS = ("queue_len", "in_flight", "capacity", "completed", "busy_s", "latency_p50", "latency_p95",
                    "latency_p99", "warming")
_SESSION_FIELDS = ("priority", "priority_set", "queued", "in_flight", "completed", "migrations", "attained_s",
                   "waiting_s", "deadline", "expected_s")


class Monitor:
    """Counts of one Runtime's calls, and its report for the operators' view.

    Args:
        driver: The Runtime's token (the ``driver`` label of its metrics).
        controller: Its global controller (the latest snapshot, the decisions pushed, the ticks).
        journal: Its journal (commit latency), or ``None``.
        in_flight: Calls made and not finished, when asked.
        policy: The active policy's name, when asked.
        rate_limits: The rate-limited components' counts, when asked
            (:meth:`~nalar_plugin.scheduler.leases.RateLimiter.stats`).
    """

    def __init__(self, driver: str, controller: Any, journal: Any = None, *,
                 in_flight: Callable[[], int] | None = None, policy: Callable[[], str] | None = None,
                 rate_limits: Callable[[], dict[str, dict[str, Any]]] | None = None) -> None:
        self.driver = driver
        self._rate_limits = rate_limits
        self.controller = controller
        self.journal = journal
        self._in_flight = in_flight
        self._policy = policy
        self._lock = threading.Lock()
        self._calls: dict[tuple[str, str], int] = {}  # (component, outcome) -> calls
        self._rejected: dict[tuple[str, str], int] = {}  # (component, reason) -> calls
        # instance -> [component, counts per latency bucket, sum]; under ``_lock`` (one lock round per call)
        self._latency: dict[str, list[Any]] = {}
        self.history: deque[list[Any]] = deque(maxlen=HISTORY_SAMPLES)  # [time, {component: [q, f, done]}]

    # -- the hot path -------------------------------------------------------------------------
    @hookimpl
    def nalar_call_finished(self, call: Any, status: str, error: BaseException | None) -> None:
        """Count the call by component and outcome; its latency goes to its instance's histogram."""
        component = call.context.component
        instance = call.instance
        if instance is None:
            reason = _refused(call, error) if error is not None and status == "error" else None
            with self._lock:
                if reason is not None:
                    key = (component, reason)
                    self._rejected[key] = self._rejected.get(key, 0) + 1
                    status = "rejected"
                key = (component, status)
                self._calls[key] = self._calls.get(key, 0) + 1
            return
        latency = call.finished_at - call.enqueued_at if call.finished_at > 0.0 and call.enqueued_at > 0.0 else None
        key = (component, status)
        with self._lock:
            calls = self._calls
            calls[key] = calls.get(key, 0) + 1
            if latency is not None:
                entry = self._latency.get(instance)
                if entry is None:
                    entry = self._latency[instance] = [component, [0] * (len(LATENCY_BOUNDS) + 1), 0.0]
                entry[1][bisect_left(LATENCY_BOUNDS, latency)] += 1
                entry[2] += latency

    # -- the tick loop ---------------------------------------------------------------------------
    def sample(self) -> None:
        """Add one point to the history: per component, queued, in flight and completed calls."""
        snap: Snapshot | None = self.controller.last_snapshot
        if snap is None:
            return
        point: dict[str, list[int]] = {}
        for name, comp in snap.components.items():
            q, f, done = comp.queue_len, 0, 0
            for s in comp.instances.values():
                q += s.queue_len
                f += s.in_flight
                done += s.completed
            point[name] = [q, f, done]
        self.history.append([snap.time, point])

    # -- on demand ---------------------------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        """The call counters and histograms as plain data."""
        with self._lock:
            calls = dict(self._calls)
            rejected = dict(self._rejected)
            latency = {i: (comp, list(counts), total) for i, (comp, counts, total) in self._latency.items()}
        by_comp: dict[str, dict[str, int]] = {}
        for (comp, outcome), n in calls.items():
            by_comp.setdefault(comp, {})[outcome] = n
        rej: dict[str, dict[str, int]] = {}
        for (comp, reason), n in rejected.items():
            rej.setdefault(comp, {})[reason] = n
        lat = {}
        for iid, (comp, counts, total) in latency.items():
            lat[iid] = {"component": comp, "counts": counts, "sum": total}
        out: dict[str, Any] = {"calls": by_comp, "rejections": rej, "latency": lat,
                               "latency_bounds": list(LATENCY_BOUNDS)}
        if self.journal is not None:
            journal = self.journal.commit_seconds.to_dict()
            journal["transactions"], journal["units"] = self.journal.commit_counts
            out["journal"] = journal
        return out

    def report(self, max_sessions: int = REPORT_SESSIONS) -> dict[str, Any]:
        """Everything the operators' view shows of this Runtime, as plain (JSON and msgpack) data.

        Args:
            max_sessions: Active sessions listed at most (highest priority, then
                most calls, first); ``sessions_active`` counts them all.
        """
        ctl = self.controller
        snap: Snapshot | None = ctl.last_snapshot
        if snap is None and getattr(ctl, "plane", None) is not None:
            snap = ctl.plane.snapshot(ctl.ticks)  # before the first tick
        components: dict[str, Any] = {}
        sessions: list[dict[str, Any]] = []
        active = 0
        if snap is not None:
            for name, comp in snap.components.items():
                components[name] = {
                    "queue_len": comp.queue_len,
                    "instances": {i: {k: getattr(s, k) for k in _INSTANCE_FIELDS} for i, s in comp.instances.items()},
                }
            live = list(snap.sessions.values())
            active = len(live)
            if active > max_sessions:
                live = heapq.nlargest(max_sessions, live, key=lambda s: (s.priority, s.queued + s.in_flight))
            else:
                live.sort(key=lambda s: (-s.priority, -(s.queued + s.in_flight)))
            for s in live:
                row = {"session": s.session, **{k: getattr(s, k) for k in _SESSION_FIELDS}}
                row["location"] = dict(s.location)
                sessions.append(row)
        recent = list(ctl.recent)[-REPORT_DECISIONS:]
        return {
            "driver": self.driver,
            "policy": self._policy() if self._policy is not None else "",
            "time": time.time(),
            "snapshot_time": snap.time if snap is not None else None,
            "ticks": ctl.ticks,
            "calls_in_flight": self._in_flight() if self._in_flight is not None else 0,
            "components": components,
            "sessions_active": active,
            "sessions": sessions,
            "decision_counts": dict(ctl.decision_counts),
            "decisions": [decision_record(at, d) for at, d in recent],
            "history": [list(p) for p in self.history],
            "rate_limits": self._rate_limits() if self._rate_limits is not None else {},
            **self.counters(),
        }
