"""Tools with ``InjectedStore`` and ``ToolRuntime`` (store, context, stream writer) over an ``InMemoryStore``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.prebuilt import ToolRuntime
from langgraph.store.memory import InMemoryStore

from ._harness import Fidelity, Run
from ._kit import TurnChat, ask, recall, react, remember, runtime_echo, state_size


def _facts(store: InMemoryStore) -> list[tuple[str, Any]]:
    return [(item.key, item.value) for item in store.search(("facts",))]


def test_injected_store_writes_to_the_apps_store(fid: Fidelity) -> None:
    """InjectedStore: two facts remembered, then recalled through ToolRuntime.store; the store's content."""
    script = [{"name": "remember", "args": {"fact": "blue"}}, {"name": "remember", "args": {"fact": "red"}},
              {"name": "recall", "args": {}}, "blue and red"]

    def scenario(run: Run) -> None:
        store = InMemoryStore()
        app = react(TurnChat(script=script), [remember, recall], store=store)
        run.observe("output", app.invoke(ask("remember"), run.config()))
        run.observe("store", _facts(store))

    fid.check(scenario)


def test_create_agent_with_a_store(fid: Fidelity) -> None:
    """create_agent(store=InMemoryStore()) with a tool that writes to it, under ainvoke."""
    script = [{"name": "remember", "args": {"fact": "green"}}, "remembered"]

    async def scenario(run: Run) -> None:
        store = InMemoryStore()
        agent = create_agent(TurnChat(script=script), [remember], store=store)
        run.observe("output", await agent.ainvoke(ask("remember green"), run.config()))
        run.observe("store", _facts(store))

    fid.check(scenario)


def test_tool_runtime_stream_writer_and_state(fid: Fidelity) -> None:
    """ToolRuntime: the stream writer (custom mode), the tool call id and the state, with InjectedState."""
    calls = [{"name": "runtime_echo", "args": {"text": "ping"}}, {"name": "state_size", "args": {"label": "h"}}]

    def scenario(run: Run) -> None:
        app = react(TurnChat(script=[{"tool_calls": calls}, "ok"]), [runtime_echo, state_size])
        run.observe("chunks", list(app.stream(ask("go"), run.config(), stream_mode=["custom", "values"])))

    fid.check(scenario, concurrent=True)


@dataclass
class User:
    name: str
    tier: str


def test_tool_runtime_context(fid: Fidelity) -> None:
    """ToolRuntime.context: the run's context (context_schema) reaches the tool."""
    @tool
    def greet(greeting: str, runtime: ToolRuntime[User]) -> str:
        """Greet the user of the run."""
        return f"{greeting}, {runtime.context.name} ({runtime.context.tier})"

    def scenario(run: Run) -> None:
        agent = create_agent(TurnChat(script=[{"name": "greet", "args": {"greeting": "hi"}}, "greeted"]), [greet],
                             context_schema=User)
        run.observe("output", agent.invoke(ask("greet me"), run.config(), context=User("ada", "gold")))

    fid.check(scenario)
