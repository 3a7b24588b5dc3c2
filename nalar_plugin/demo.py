"""``nalar demo``: a small futures workflow on the embedded cluster.

A planner splits a question into topics, a search tool runs once per topic in
parallel, a writer drafts one note per topic as soon as that topic's search is
done (no barrier), and an editor joins the notes. The same functions run as plain
Python when no Runtime is active.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .future import value
from .stubs import agent, tool

__all__ = ["editor", "planner", "research", "run_demo", "search", "writer"]


@agent
def planner(question: str, k: int = 3) -> list[str]:
    """Split a question into ``k`` topics."""
    words = [w.strip("?.,") for w in question.split() if len(w) > 3]
    return [f"{w.lower()}" for w in words[:k]] or ["everything"]


@tool
async def search(topic: str) -> str:
    """Pretend to search the web (an I/O-bound call)."""
    await asyncio.sleep(0.05)
    return f"facts about {topic}"


@agent
def writer(topic: str, facts: str) -> str:
    """Draft a note on one topic."""
    return f"[{topic}] {facts}"


@agent
def editor(notes: list[str]) -> str:
    """Join the notes into one answer."""
    return "\n".join(sorted(notes))


def research(question: str) -> Any:
    """The workflow: plain code, with or without a Runtime."""
    topics = planner(question)
    # Under a Runtime search(t) is a future; in plain sync code, its value.
    notes = [writer(t, search(t)) for t in value(topics)]  # type: ignore[arg-type]
    return editor(notes)


def run_demo(print_fn: Any = print, **runtime_kwargs: Any) -> dict[str, Any]:
    """Run the workflow on an embedded Runtime and print its futures and graph."""
    from .runtime import Runtime

    question = "How do futures, sessions and policies serve agent workflows?"
    plain = research(question)
    with Runtime(**runtime_kwargs) as rt:
        with rt.session("demo") as session:
            answer = research(question)
            text = answer.result()
        graph = rt.graph(session)
        print_fn(f"nalar demo on {rt!r}\n")
        print_fn(f"answer:\n{text}\n")
        print_fn(f"{len(graph)} futures in session {session!r}:")
        for n in graph.nodes:
            deps = ", ".join(n["dependencies"]) or "-"
            print_fn(f"  {n['call_id']:<24} {n['component']:<8} {n['status']:<9} on {n['executor']}  inputs: {deps}")
        print_fn("\ndependency graph (DOT):")
        print_fn(graph.to_dot())
        print_fn(f"\nsame answer as plain Python: {text == plain}")
        return {"answer": text, "plain": plain, "graph": graph.to_dict()}
