"""``nalar top``: a terminal view of the nalar page, read from its JSON endpoint.

``nalar top http://127.0.0.1:8787`` polls ``<dashboard>/nalar/data.json`` (any
address of the dashboard works: its root, ``/status``, ``/nalar``) and shows the
components and instances, the sessions and the policy's latest decisions. It
uses ``rich`` when it is installed (``pip install nalar-plugin[top]``) and the
output is a terminal, plain text otherwise; ``--once`` prints plain text once.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

from ..errors import ClusterError
from .dashboard import dashboard_base

__all__ = ["data_url", "fetch", "render_text", "run"]


def data_url(url: str) -> str:
    """The JSON endpoint of the nalar page of the dashboard at ``url``."""
    return dashboard_base(url) + "/nalar/data.json"


def fetch(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """Read the merged view from the dashboard at ``url``.

    Raises:
        ClusterError: The dashboard could not be reached or has no nalar page.
    """
    target = data_url(url)
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:  # noqa: S310 (an operator's own URL)
            return dict(json.loads(resp.read().decode("utf-8")))
    except urllib.error.HTTPError as exc:
        hint = " (is a nalar Runtime attached to this cluster?)" if exc.code == 404 else ""
        raise ClusterError(f"the nalar dashboard at {target} answered HTTP {exc.code}{hint}") from exc
    except (OSError, ValueError) as exc:
        raise ClusterError(f"could not read the nalar dashboard at {target}: {exc}") from exc


def _ms(seconds: float | None) -> str:
    return "-" if not seconds else f"{seconds * 1000:.1f}"


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.2f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))
    return str(x)


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}"


def _header(view: dict[str, Any]) -> tuple[str, str]:
    t = view["totals"]
    ticks = ", ".join(str(d["ticks"]) for d in view["drivers"]) or "0"
    decisions = sum(view["decisions"]["counts"].values())
    line1 = (f"nalar  policy {view['policy'] or '-'}  drivers {len(view['drivers'])}  ticks {ticks}  "
             f"at {_clock(view['time'])}")
    line2 = (f"queued {t['queued']}  in flight {t['in_flight']}  finished {t['finished']}  errors {t['error']}  "
             f"rejected {t['rejected']}  sessions {view['sessions']['active']}  decisions {decisions}")
    return line1, line2


_INSTANCE_COLS = ("COMPONENT", "INSTANCE", "QUEUE", "IN FLIGHT", "CAPACITY", "DONE", "P50 ms", "P95 ms", "P99 ms")
_SESSION_COLS = ("SESSION", "PRIORITY", "QUEUED", "IN FLIGHT", "DONE", "WHERE", "MOVES")
_DECISION_COLS = ("TIME", "KIND", "DECISION", "WHAT")


def _instance_rows(view: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for c in view["components"]:
        cap = "inf" if c["capacity"] is None else str(c["capacity"])
        rows.append((c["name"], "(shared queue)", str(c["shared_queue"]), "", cap, _num(c["calls"].get("finished", 0)),
                     "", "", ""))
        for s in c["instances"]:
            rows.append(("", s["id"] + (" (warming)" if s.get("warming") else ""), str(s["queue_len"]),
                         str(s["in_flight"]), "inf" if s["capacity"] is None else str(s["capacity"]),
                         str(s["completed"]), _ms(s["latency_p50"]), _ms(s["latency_p95"]), _ms(s["latency_p99"])))
    return rows


def _session_rows(view: dict[str, Any], limit: int) -> list[tuple[str, ...]]:
    return [(s["session"], _num(s["priority"]) + ("*" if s.get("priority_set") else ""), str(s["queued"]),
             str(s["in_flight"]), str(s["completed"]), ", ".join(s.get("location", {}).values()), str(s["migrations"]))
            for s in view["sessions"]["rows"][:limit]]


def _decision_rows(view: dict[str, Any], limit: int) -> list[tuple[str, ...]]:
    return [(_clock(d["time"]), d["kind"], d["type"], d["text"]) for d in view["decisions"]["recent"][:limit]]


def _table(cols: Sequence[str], rows: list[tuple[str, ...]], left: int = 1) -> list[str]:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]

    def line(cells: Sequence[str]) -> str:
        out = [cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    return [line(cols)] + [line(r) for r in rows]


def render_text(view: dict[str, Any], *, sessions: int = 10, decisions: int = 10) -> str:
    """The merged view as plain text: a header, instances, sessions, latest decisions."""
    out = list(_header(view))
    out.append("")
    out += _table(_INSTANCE_COLS, _instance_rows(view), left=2) if view["components"] else ["no component yet"]
    s = view["sessions"]
    out += ["", f"sessions: {s['active']} active" + (f", top {min(sessions, len(s['rows']))}" if s["rows"] else "")]
    if s["rows"]:
        out += _table(_SESSION_COLS, _session_rows(view, sessions))
    counts = view["decisions"]["counts"]
    out += ["", "decisions: " + (", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "none")]
    if view["decisions"]["recent"]:
        out += _table(_DECISION_COLS, _decision_rows(view, decisions), left=4)
    return "\n".join(out) + "\n"


def _render_rich(view: dict[str, Any]) -> Any:
    from rich.console import Group  # optional dependency: the ``top`` extra
    from rich.table import Table

    line1, line2 = _header(view)
    parts: list[Any] = [f"[bold]{line1}[/bold]", line2]

    def table(title: str, cols: Sequence[str], rows: list[tuple[str, ...]], left: int = 1) -> Any:
        t = Table(title=title, title_justify="left", expand=False, pad_edge=False)
        for i, c in enumerate(cols):
            t.add_column(c, justify="left" if i < left else "right")
        for r in rows:
            t.add_row(*r)
        return t

    parts.append(table("components and instances", _INSTANCE_COLS, _instance_rows(view), left=2))
    s = view["sessions"]
    parts.append(table(f"sessions ({s['active']} active)", _SESSION_COLS, _session_rows(view, 15)))
    counts = ", ".join(f"{k} {n}" for k, n in sorted(view["decisions"]["counts"].items())) or "none"
    parts.append(table(f"decisions ({counts})", _DECISION_COLS, _decision_rows(view, 12), left=4))
    return Group(*parts)


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401  (optional dependency)
    except ImportError:
        return False
    return True


def run(url: str, *, once: bool = False, interval: float = 1.0, plain: bool = False,
        iterations: int | None = None, out: TextIO | None = None) -> int:
    """Show the dashboard at ``url`` in the terminal until interrupted (or once).

    Args:
        url: Any address of the Dask dashboard (its root, ``/status``, ``/nalar``).
        once: Print plain text once and return.
        interval: Seconds between two reads.
        plain: Plain text even when ``rich`` and a terminal are there.
        iterations: Stop after showing this many views (``None``: until interrupted).
        out: Where to write (standard output by default).

    Returns:
        The exit status (0).

    Raises:
        ClusterError: The first read failed (later failures are shown and retried).
    """
    stream = out or sys.stdout
    view = fetch(url)
    if once:
        stream.write(render_text(view))
        return 0
    fancy = not plain and stream.isatty() and _has_rich()
    shown = 1
    try:
        if fancy:
            from rich.console import Console  # optional dependency: the ``top`` extra
            from rich.live import Live

            with Live(_render_rich(view), console=Console(file=stream), refresh_per_second=4,
                      screen=False) as live:
                while iterations is None or shown < iterations:
                    time.sleep(interval)
                    shown += 1
                    try:
                        live.update(_render_rich(fetch(url)))
                    except ClusterError as exc:
                        live.update(f"[red]{exc}[/red]")
            return 0
        tty = stream.isatty()
        while True:
            text = render_text(view)
            stream.write(("\x1b[H\x1b[2J" if tty else "\n") + text)
            stream.flush()
            if iterations is not None and shown >= iterations:
                return 0
            time.sleep(interval)
            shown += 1
            try:
                view = fetch(url)
            except ClusterError as exc:
                stream.write(f"{exc}\n")
    except KeyboardInterrupt:
        return 0
