"""A ``StateGraph`` with a ``ToolNode``, served by nalar through a callback.

The graph is plain LangGraph. Adding ``rt.callback()`` to the run's callbacks is
the only change: every model call and tool call of that run becomes a nalar call
(admitted by the controllers, journaled, in the session's graph), and the session
is the run's ``thread_id``.

Run: ``python examples/tool_node_callback.py``
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

import nalar_plugin as nl
from nalar_plugin.testing import (
    EngineConfig,
    EngineServer,
    SimulatedChatModel,
    SimulatedEngine,
)

SCRIPT: list[Any] = [
    {"tool_calls": [{"name": "add", "args": {"a": 2, "b": 3}}, {"name": "multiply", "args": {"a": 4, "b": 5}}]},
    {"tool_calls": [{"name": "add", "args": {"a": 5, "b": 20}}]},
    "2+3 plus 4*5 is 25.",
]
QUESTION = {"messages": [("user", "What is 2+3 plus 4*5?")]}


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
def add(a: int, b: int) -> tuple[str, dict[str, Any]]:
    """Add two integers."""
    return str(a + b), ran_on()


@tool(response_format="content_and_artifact")
def multiply(a: int, b: int) -> tuple[str, dict[str, Any]]:
    """Multiply two integers."""
    return str(a * b), ran_on()


def build(model: Any) -> Any:
    """A model node and a ToolNode in a loop."""
    tools = [add, multiply]
    bound = model.bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def main(processes: bool = False, state_dir: str | None = None) -> dict[str, Any]:
    """Run the graph without nalar, then with the callback; return both final states and the calls."""
    with simulated_engine(processes) as engine:
        app = build(SimulatedChatModel(engine=engine, script=SCRIPT))
        plain = app.invoke(QUESTION)
        with nl.Runtime(processes=processes, state_dir=state_dir) as rt:
            thread = f"calc-{uuid.uuid4().hex[:8]}"
            final = app.invoke(QUESTION, {"callbacks": [rt.callback()], "configurable": {"thread_id": thread}})
            graph = rt.graph(thread)
    print("answer:", final["messages"][-1].content)
    print("tools ran on:", tool_workers(final["messages"]))
    show(graph)
    return {"plain": plain, "final": final, "graph": graph, "session": thread}


if __name__ == "__main__":
    main()
