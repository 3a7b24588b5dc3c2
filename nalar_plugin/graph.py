"""The dynamic dependency graph of a session, as JSON and as DOT."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["SessionGraph"]


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
