"""A graph with a subgraph: the subgraph's calls are served too, in the same session.

The parent graph introduces the task, runs a compiled ReAct subgraph as one of
its nodes, and reports. The callback reaches the subgraph through LangGraph's
config, so the subgraph's model and tool calls are nalar calls, and the first
model call of the subgraph depends on what ran before it in the parent graph.

Run: ``python examples/subgraph.py``
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

import nalar_plugin as nl
from nalar_plugin.testing import (
    EngineConfig,
    EngineServer,
    SimulatedChatModel,
    SimulatedEngine,
)

SCRIPT: list[Any] = [
    "I will check the inventory.",
    {"tool_calls": [{"name": "stock", "args": {"item": "bolts"}}]},
    "There are 40 bolts.",
]


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


def tool_workers(messages: list[Any]) -> list[str | None]:
    """The workers the tool calls of a conversation ran on (from their artifacts)."""
    return [m.artifact.get("worker") for m in messages if m.type == "tool" and isinstance(m.artifact, dict)]


def show(graph: nl.SessionGraph) -> None:
    """Print a session's calls and what each depended on."""
    names = {n["call_id"]: n["component"] for n in graph.nodes}
    for n in sorted(graph.nodes, key=lambda n: n["started"]):
        deps = ", ".join(names.get(d, d) for d in n["dependencies"]) or "-"
        print(f"  {n['component']:<22} {n['status']:<9} after: {deps}")


@tool(response_format="content_and_artifact")
def stock(item: str) -> tuple[str, dict[str, Any]]:
    """How many of an item are in stock."""
    return f"40 {item}", ran_on()


def build(model: Any) -> Any:
    """A parent graph: plan (model), check (the ReAct subgraph), report."""
    bound = model.bind_tools([stock])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    inner = StateGraph(MessagesState)
    inner.add_node("agent", agent)
    inner.add_node("tools", ToolNode([stock]))
    inner.add_edge(START, "agent")
    inner.add_conditional_edges("agent", tools_condition)
    inner.add_edge("tools", "agent")

    def plan(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def report(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"Report: {state['messages'][-1].content}")]}

    outer = StateGraph(MessagesState)
    outer.add_node("plan", plan)
    outer.add_node("check", inner.compile())
    outer.add_node("report", report)
    outer.add_edge(START, "plan")
    outer.add_edge("plan", "check")
    outer.add_edge("check", "report")
    outer.add_edge("report", END)
    return outer.compile()


def main(processes: bool = False, state_dir: str | None = None) -> dict[str, Any]:
    """Run the graph without nalar, then with the callback; return both final states and the calls."""
    question = {"messages": [("user", "How many bolts do we have?")]}
    with simulated_engine(processes) as engine:
        app = build(SimulatedChatModel(engine=engine, script=SCRIPT))
        plain = app.invoke(question)
        with nl.Runtime(processes=processes, state_dir=state_dir) as rt:
            thread = f"inventory-{uuid.uuid4().hex[:8]}"
            final = app.invoke(question, {"callbacks": [rt.callback()], "configurable": {"thread_id": thread}})
            graph = rt.graph(thread)
    print("answer:", final["messages"][-1].content)
    print("tools ran on:", tool_workers(final["messages"]))
    show(graph)
    return {"plain": plain, "final": final, "graph": graph, "session": thread}


if __name__ == "__main__":
    main()
