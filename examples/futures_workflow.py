"""A plain-Python futures workflow with ``@nl.tool`` and ``@nl.agent`` stubs.

Without a Runtime the functions run as plain Python. Under a Runtime each call
returns a future at once; a future passed to another stub is a dependency, so
each ``write`` starts as soon as its own ``search`` is done, and the agents'
model calls run on the simulated engine from the workers.

Run: ``python examples/futures_workflow.py``
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import nalar_plugin as nl
from nalar_plugin.testing import (
    EngineConfig,
    EngineServer,
    SimulatedChatModel,
    SimulatedEngine,
)

TOPICS = ["futures", "controllers", "sessions"]


@contextlib.contextmanager
def simulated_engine(processes: bool) -> Iterator[Any]:
    """A fast simulated LLM engine; worker processes reach it over HTTP on 127.0.0.1."""
    engine = SimulatedEngine("llm", EngineConfig(time_scale=0.002))
    if not processes:
        yield engine  # in-process workers use it directly
        return
    with EngineServer(engine) as server:
        yield server.url


def ran_on() -> dict[str, Any]:
    """Where the calling code runs: its Dask worker (``None`` outside one) and thread."""
    try:
        from distributed import get_worker

        worker: str | None = get_worker().address
    except ValueError:
        worker = None
    return {"worker": worker, "thread": threading.current_thread().name}


def show(graph: nl.SessionGraph) -> None:
    """Print a session's calls and what each depended on."""
    names = {n["call_id"]: n["component"] for n in graph.nodes}
    for n in sorted(graph.nodes, key=lambda n: n["started"]):
        deps = ", ".join(names.get(d, d) for d in n["dependencies"]) or "-"
        print(f"  {n['component']:<22} {n['status']:<9} after: {deps}")


@nl.tool
async def search(topic: str) -> dict[str, Any]:
    """Find facts about a topic (I/O-bound: it awaits and holds no thread)."""
    await asyncio.sleep(0.05)
    return {"facts": f"{topic} appear in the Nalar paper", "ran_on": ran_on()}


@nl.agent
async def write(topic: str, found: dict[str, Any], engine: Any) -> dict[str, Any]:
    """Write a note about a topic from its facts, with a simulated LLM."""
    model = SimulatedChatModel(engine=engine, script=lambda messages: f"A note on {topic}.")
    answer = await model.ainvoke(f"Write about {topic}: {found['facts']}")
    return {"note": answer.content, "ran_on": ran_on()}


@nl.agent
def review(notes: list[dict[str, Any]]) -> str:
    """Join the notes into one report."""
    return " ".join(n["note"] for n in notes)


def workflow(engine: Any) -> tuple[Any, Any]:
    """The same code with and without nalar: futures under a Runtime, values without."""
    notes = [write(t, search(t), engine) for t in TOPICS]
    return notes, review(notes)


def main(processes: bool = False, state_dir: str | None = None) -> dict[str, Any]:
    """Run the workflow as plain Python, then on nalar; return both results and the calls."""
    with simulated_engine(processes) as engine:
        _, plain = workflow(engine)
        with nl.Runtime(processes=processes, state_dir=state_dir) as rt:
            session = f"notes-{uuid.uuid4().hex[:8]}"
            with rt.session(session):
                notes, report = workflow(engine)  # futures, returned at once
                final, written = nl.value(report), nl.value(notes)
            graph = rt.graph(session)
    print("report:", final)
    print("notes written on:", [n["ran_on"]["worker"] for n in written])
    show(graph)
    return {"plain": plain, "final": final, "graph": graph, "session": session,
            "workers": [n["ran_on"]["worker"] for n in written]}


if __name__ == "__main__":
    main()
