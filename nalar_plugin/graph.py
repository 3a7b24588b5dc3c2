"""The dynamic dependency graph of a session, as JSON and as DOT."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .context import CallContext

__all__ = ["CallGraph", "SessionGraph"]


@dataclass
class SessionGraph:
    """Calls of one session and the edges between them.

    Edges are ``data`` (a future passed as an input) and ``spawn`` (a call made
    from inside another call's body).
    """

    session: str
    nodes: list[dict[str, Any]]

    @property
    def edges(self) -> list[dict[str, str]]:
        """Every edge, ``{"src", "dst", "kind"}``."""
        ids = {n["call_id"] for n in self.nodes}
        out: list[dict[str, str]] = []
        for n in self.nodes:
            for dep in n["dependencies"]:
                out.append({"src": dep, "dst": n["call_id"], "kind": "data"})
            if n["parent"] is not None and n["parent"] in ids:
                out.append({"src": n["parent"], "dst": n["call_id"], "kind": "spawn"})
        return out

    def to_dict(self) -> dict[str, Any]:
        """The graph as plain data."""
        return {"session": self.session, "nodes": self.nodes, "edges": self.edges}

    def to_json(self, **kwargs: Any) -> str:
        """The graph as a JSON string."""
        return json.dumps(self.to_dict(), default=str, **kwargs)

    def to_dot(self) -> str:
        """The graph in Graphviz DOT: solid edges carry data, dashed ones spawn calls."""
        colour = {"finished": "palegreen", "error": "salmon", "cancelled": "grey", "running": "lightblue"}
        lines = [f'digraph "{self.session}" {{', "  rankdir=LR;", "  node [shape=box, style=filled];"]
        for n in self.nodes:
            label = f"{n['component']}.{n['method']}\\n{n['call_id']}\\n{n['status']}"
            if n["method"] == "__call__":
                label = f"{n['component']}\\n{n['call_id']}\\n{n['status']}"
            lines.append(f'  "{n["call_id"]}" [label="{label}", fillcolor="{colour.get(n["status"], "white")}"];')
        for e in self.edges:
            style = "solid" if e["kind"] == "data" else "dashed"
            lines.append(f'  "{e["src"]}" -> "{e["dst"]}" [style={style}];')
        lines.append("}")
        return "\n".join(lines)

    def __len__(self) -> int:
        return len(self.nodes)


class _Node:
    __slots__ = ("context", "finished", "started", "status")

    def __init__(self, context: CallContext) -> None:
        self.context = context
        self.status = "pending"
        self.started = time.time()
        self.finished: float | None = None


class CallGraph:
    """The dynamic dependency graph of every recent session (thread-safe, bounded).

    Args:
        cap: Sessions kept; the least recently used sessions with no call in
            flight are forgotten beyond it.
    """

    def __init__(self, cap: int = 1000) -> None:
        self._lock = threading.Lock()
        self._cap = max(1, cap)
        self._graphs: OrderedDict[str, dict[str, _Node]] = OrderedDict()
        self._live: dict[str, int] = {}  # session -> calls not done yet

    def record(self, ctx: CallContext) -> None:
        """Add a call (and its edges from its inputs)."""
        with self._lock:
            nodes = self._graphs.get(ctx.session)
            if nodes is None:
                nodes = self._graphs[ctx.session] = {}
                self._trim()
            else:
                self._graphs.move_to_end(ctx.session)
            nodes[ctx.call_id] = _Node(ctx)
            self._live[ctx.session] = self._live.get(ctx.session, 0) + 1
            for dep in ctx.dependencies:
                node = nodes.get(dep)
                if node is not None and ctx.call_id not in node.context.consumers:
                    node.context.consumers.append(ctx.call_id)

    def _trim(self) -> None:
        excess = len(self._graphs) - self._cap
        if excess <= 0:
            return
        victims = []
        for session in self._graphs:  # oldest first
            if not self._live.get(session):
                victims.append(session)
                if len(victims) >= excess:
                    break
        for session in victims:
            del self._graphs[session]

    def mark(self, ctx: CallContext, status: str) -> None:
        """Set a call's status (``running``)."""
        with self._lock:
            node = self._graphs.get(ctx.session, {}).get(ctx.call_id)
            if node is not None:
                node.status = status

    def done(self, ctx: CallContext, status: str) -> None:
        """A call ended as ``status``."""
        with self._lock:
            node = self._graphs.get(ctx.session, {}).get(ctx.call_id)
            if node is not None and node.finished is None:
                node.status = status
                node.finished = time.time()
            live = self._live.get(ctx.session, 0) - 1
            if live > 0:
                self._live[ctx.session] = live
            else:
                self._live.pop(ctx.session, None)
                self._trim()  # sessions kept past the cap while they had calls in flight

    def forget(self, session: str) -> None:
        """Drop a session's graph."""
        with self._lock:
            self._graphs.pop(session, None)

    def sessions(self) -> list[str]:
        """The sessions kept, oldest first."""
        with self._lock:
            return list(self._graphs)

    def __len__(self) -> int:
        with self._lock:
            return len(self._graphs)

    def graph(self, session: str) -> SessionGraph:
        """The graph of ``session``."""
        with self._lock:
            data = []
            for n in list(self._graphs.get(session, {}).values()):
                d = n.context.to_dict()
                d["status"] = n.status
                d["started"] = n.started
                d["finished"] = n.finished
                data.append(d)
        return SessionGraph(session, data)
