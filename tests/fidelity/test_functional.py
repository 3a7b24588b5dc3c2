"""The functional API: ``@entrypoint`` and ``@task`` with tools and models, checkpoints and interrupts."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.func import entrypoint, task
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt

from ._harness import Fidelity, Run
from ._kit import TurnChat, add, multiply


def _agent(model: Any, tools: list[Any], checkpointer: Any = None) -> Any:
    """The documented functional ReAct agent: a model task, a tool task per call, a loop."""
    by_name = {t.name: t for t in tools}
    bound = model.bind_tools(tools)

    @task
    def call_model(messages: list[BaseMessage]) -> BaseMessage:
        return bound.invoke(messages)

    @task
    def call_tool(tool_call: dict[str, Any]) -> ToolMessage:
        return by_name[tool_call["name"]].invoke(tool_call)

    @entrypoint(checkpointer=checkpointer)
    def agent(messages: list[Any]) -> list[BaseMessage]:
        messages = add_messages([], messages)
        response = call_model(messages).result()
        while response.tool_calls:
            futures = [call_tool(c) for c in response.tool_calls]
            results = [f.result() for f in futures]
            messages = add_messages(messages, [response, *results])
            response = call_model(messages).result()
        return add_messages(messages, response)

    return agent


SCRIPT: list[Any] = [
    {"tool_calls": [{"name": "add", "args": {"a": 1, "b": 2}}, {"name": "multiply", "args": {"a": 3, "b": 4}}]},
    "3 and 12",
]


def test_functional_agent(fid: Fidelity) -> None:
    """An @entrypoint agent whose @task tool calls run concurrently."""
    def scenario(run: Run) -> None:
        agent = _agent(TurnChat(script=SCRIPT), [add, multiply])
        run.observe("output", agent.invoke([("user", "1+2 and 3*4")], run.config()))

    fid.check(scenario, concurrent=True)


def test_functional_agent_stream_updates(fid: Fidelity) -> None:
    """stream(stream_mode="updates") of the functional agent: one update per task."""
    def scenario(run: Run) -> None:
        agent = _agent(TurnChat(script=SCRIPT), [add, multiply])
        chunks = list(agent.stream([("user", "go")], run.config(), stream_mode="updates"))
        run.observe("chunks", chunks, unordered=True)

    fid.check(scenario, concurrent=True, uuid4_order=False)


def test_functional_interrupt_and_resume(fid: Fidelity) -> None:
    """An @entrypoint that interrupts for approval between two tasks, resumed with Command."""
    def scenario(run: Run) -> None:
        model = TurnChat(script=["a draft to approve"])

        @task
        def draft(topic: str) -> str:
            return str(model.invoke(f"write about {topic}").content)

        @task
        def publish(text: str) -> str:
            return add.invoke({"a": len(text), "b": 0}) and f"published: {text}"

        @entrypoint(checkpointer=InMemorySaver())
        def flow(topic: str) -> dict[str, Any]:
            text = draft(topic).result()
            verdict = interrupt({"approve": text})
            return {"verdict": verdict, "result": publish(text).result() if verdict == "yes" else None}

        cfg = run.config()
        run.observe("paused", list(flow.stream("dask", cfg, stream_mode="updates")))
        run.observe("resumed", flow.invoke(Command(resume="yes"), cfg))
        run.observe_state("thread", flow, cfg)

    fid.check(scenario)
