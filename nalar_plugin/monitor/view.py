"""One view over the reports of every driver of a cluster: what ``/nalar/data.json`` serves.

Pure functions over plain data, shared by the dashboard page (server side),
``nalar top`` (which reads the merged view back) and the tests.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["OUTCOMES", "merge"]

OUTCOMES: Final = ("finished", "error", "cancelled", "rejected")
_SESSIONS: Final = 100
_DECISIONS: Final = 100


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for k, n in counts.items():
        into[k] = into.get(k, 0) + n


def merge(reports: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """Merge driver reports (see :meth:`~nalar_plugin.monitor.Monitor.report`) into one view.

    With one driver, instance and session ids are the driver's own; with
    several, they read ``"<driver>|<id>"``, as in ``Runtime.cluster_view()``.

    Args:
        reports: One report per live driver.
        now: The time of the view (``time.time()``).

    Returns:
        ``time``, ``drivers``, ``policy``, ``totals``, ``components`` (each with
        its ``instances``), ``sessions`` (``active`` and ``rows``),
        ``decisions`` (``counts`` by type and the ``recent`` ones, newest first)
        and ``history`` (per second: queued and in-flight calls per component).
    """
    multi = len(reports) > 1
    comps: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    active = 0
    counts: dict[str, int] = {}
    recent: list[dict[str, Any]] = []
    history: dict[int, dict[str, list[int]]] = {}
    drivers = []
    totals = {"queued": 0, "in_flight": 0, "calls_in_flight": 0, **{o: 0 for o in OUTCOMES}}

    def gid(drv: str, local: str) -> str:
        return f"{drv}|{local}" if multi else local

    for rep in reports:
        drv = rep["driver"]
        drivers.append({"driver": drv, "policy": rep.get("policy", ""), "ticks": rep.get("ticks", 0),
                        "calls_in_flight": rep.get("calls_in_flight", 0),
                        "age_s": max(0.0, now - float(rep.get("time") or now))})
        totals["calls_in_flight"] += rep.get("calls_in_flight", 0)
        for name in set(rep.get("components", {})) | set(rep.get("calls", {})):
            comps.setdefault(name, {"name": name, "shared_queue": 0, "queued": 0, "in_flight": 0, "capacity": 0,
                                    "unbounded": False, "completed": 0, "instances": [], "calls": {},
                                    "rejections": {}})
        for name, c in rep.get("components", {}).items():
            comp = comps[name]
            comp["shared_queue"] += c["queue_len"]
            comp["queued"] += c["queue_len"]
            for iid, s in c["instances"].items():
                comp["instances"].append({"id": gid(drv, iid), "instance": iid, "driver": drv, **s})
                comp["queued"] += s["queue_len"]
                comp["in_flight"] += s["in_flight"]
                comp["completed"] += s["completed"]
                if s["capacity"] is None:
                    comp["unbounded"] = True
                else:
                    comp["capacity"] += s["capacity"]
        for name, by in rep.get("calls", {}).items():
            _add(comps[name]["calls"], by)
            for outcome, n in by.items():
                totals[outcome] = totals.get(outcome, 0) + n
        for name, by in rep.get("rejections", {}).items():
            if name in comps:
                _add(comps[name]["rejections"], by)
        active += rep.get("sessions_active", 0)
        for s in rep.get("sessions", []):
            rows.append({**s, "session": gid(drv, s["session"]), "driver": drv,
                         "location": {k: gid(drv, v) for k, v in s.get("location", {}).items()}})
        _add(counts, rep.get("decision_counts", {}))
        for d in rep.get("decisions", []):
            recent.append({**d, "driver": drv})
        for t, point in rep.get("history", []):
            slot = history.setdefault(int(t), {})
            for name, vals in point.items():
                cur = slot.setdefault(name, [0, 0, 0])
                for i, v in enumerate(vals[:3]):
                    cur[i] += v
    for comp in comps.values():
        comp["instances"].sort(key=lambda r: r["id"])
        totals["queued"] += comp["queued"]
        totals["in_flight"] += comp["in_flight"]
        if comp["unbounded"]:
            comp["capacity"] = None
        del comp["unbounded"]
    rows.sort(key=lambda s: (-s.get("priority", 0.0), -(s.get("queued", 0) + s.get("in_flight", 0)), s["session"]))
    recent.sort(key=lambda d: -d["time"])
    points = []
    for t in sorted(history)[-300:]:
        per = history[t]
        points.append({"t": t, "queued": sum(v[0] for v in per.values()),
                       "in_flight": sum(v[1] for v in per.values()), "components": per})
    policies = sorted({d["policy"] for d in drivers if d["policy"]})
    return {
        "time": now,
        "drivers": sorted(drivers, key=lambda d: d["driver"]),
        "policy": ", ".join(policies),
        "totals": totals,
        "components": [comps[n] for n in sorted(comps)],
        "sessions": {"active": active, "rows": rows[:_SESSIONS]},
        "decisions": {"counts": counts, "recent": recent[:_DECISIONS]},
        "history": points,
    }
