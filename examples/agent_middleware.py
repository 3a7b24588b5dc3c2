"""A ``create_agent`` app served by nalar through its middleware.

The agent is the one LangChain builds; adding ``rt.middleware()`` makes its model
calls and tool calls nalar calls: admitted and ordered by the controllers, journaled,
recorded in the session's graph. They run where they live (in the agent), so the
agent behaves exactly as without nalar; the two tool calls of the first answer run
in parallel, as LangGraph runs them.

Run: ``python examples/agent_middleware.py``
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import tool

import nalar_plugin as nl
from nalar_plugin.testing import (
    EngineConfig,
    EngineServer,
    SimulatedChatModel,
    SimulatedEngine,
)

SCRIPT: list[Any] = [
    {"tool_calls": [{"name": "get_weather", "args": {"city": "Paris"}},
                    {"name": "get_time", "args": {"city": "Paris"}}]},
    "In Paris it is sunny, and it is noon.",
]
QUESTION = {"messages": [("user", "What is the weather and the time in Paris?")]}


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
def get_weather(city: str) -> tuple[str, dict[str, Any]]:
    """Look up the weather of a city."""
    return f"It is sunny in {city}.", ran_on()


@tool(response_format="content_and_artifact")
def get_time(city: str) -> tuple[str, dict[str, Any]]:
    """Look up the local time of a city."""
    return f"It is noon in {city}.", ran_on()


def main(processes: bool = False, state_dir: str | None = None) -> dict[str, Any]:
    """Run the agent without nalar, then with it; return both final states and the calls."""
    with simulated_engine(processes) as engine:
        model = SimulatedChatModel(engine=engine, script=SCRIPT)
        tools = [get_weather, get_time]
        plain = create_agent(model, tools).invoke(QUESTION)
        with nl.Runtime(processes=processes, state_dir=state_dir) as rt:
            agent = create_agent(model, tools, middleware=[rt.middleware()])
            thread = f"agent-{uuid.uuid4().hex[:8]}"
            final = agent.invoke(QUESTION, {"configurable": {"thread_id": thread}})
            graph = rt.graph(thread)
    print("answer:", final["messages"][-1].content)
    print("tools ran on workers:", tool_workers(final["messages"]), "(None: where they live)")
    show(graph)
    return {"plain": plain, "final": final, "graph": graph, "session": thread}


if __name__ == "__main__":
    main()
