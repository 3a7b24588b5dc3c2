"""A map-reduce graph: one ``Send`` task per topic, then a summary by the model.

Each research task calls a tool; with ``rt.callback()`` the tool calls are nalar
calls that run in parallel where they live (LangGraph's tasks), admitted by the
controllers, and the summary's model call depends on all of them in the
session's graph.

Run: ``python examples/map_reduce.py``
"""

from __future__ import annotations

import contextlib
import operator
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

import nalar_plugin as nl
from nalar_plugin.testing import (
    EngineConfig,
    EngineServer,
    SimulatedChatModel,
    SimulatedEngine,
)

TOPICS = ["dask", "langgraph", "pluggy"]


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


class State(TypedDict):
    topics: list[str]
    notes: Annotated[list[str], operator.add]
    where: Annotated[list[dict[str, Any]], operator.add]
    summary: str


class Topic(TypedDict):
    topic: str


@tool(response_format="content_and_artifact")
def research(topic: str) -> tuple[str, dict[str, Any]]:
    """Research a topic (takes a moment)."""
    record = ran_on()
    record["start"] = time.time()
    time.sleep(0.1)
    record["end"] = time.time()
    return f"{topic} is well documented", record


def build(model: Any) -> Any:
    """Plan, fan out one research task per topic, summarise."""

    def plan(state: State) -> dict[str, Any]:
        return {}

    def fan_out(state: State) -> list[Send]:
        return [Send("research_topic", {"topic": t}) for t in state["topics"]]

    def research_topic(state: Topic) -> dict[str, Any]:
        call = {"name": "research", "args": {"topic": state["topic"]}, "id": f"research-{state['topic']}",
                "type": "tool_call"}
        message = research.invoke(call)
        return {"notes": [message.content], "where": [message.artifact]}

    def summarise(state: State) -> dict[str, Any]:
        return {"summary": model.invoke("Summarise: " + "; ".join(sorted(state["notes"]))).content}

    graph = StateGraph(State)
    graph.add_node("plan", plan)
    graph.add_node("research_topic", research_topic)
    graph.add_node("summarise", summarise)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", fan_out, ["research_topic"])
    graph.add_edge("research_topic", "summarise")
    graph.add_edge("summarise", END)
    return graph.compile()


def main(processes: bool = False, state_dir: str | None = None) -> dict[str, Any]:
    """Run the graph without nalar, then with the callback; return both final states and the calls."""
    with simulated_engine(processes) as engine:
        app = build(SimulatedChatModel(engine=engine, script=["All three are well documented."]))
        plain = app.invoke({"topics": TOPICS})
        with nl.Runtime(processes=processes, state_dir=state_dir) as rt:
            thread = f"mapreduce-{uuid.uuid4().hex[:8]}"
            final = app.invoke({"topics": TOPICS}, {"callbacks": [rt.callback()], "configurable": {"thread_id": thread}})
            graph = rt.graph(thread)
    spans = final["where"]
    print("summary:", final["summary"])
    print("research ran on:", [s["worker"] for s in spans])
    print("all research ran at once:", max(s["start"] for s in spans) < min(s["end"] for s in spans))
    show(graph)
    return {"plain": plain, "final": final, "graph": graph, "session": thread}


if __name__ == "__main__":
    main()
