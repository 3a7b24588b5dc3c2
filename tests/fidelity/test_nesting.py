"""Runnables composed inside nodes and tools: nested agents, structured output, batch, fallbacks, retries."""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from pydantic import BaseModel

from ._harness import Fidelity, Run
from ._kit import FailingChat, FileFlakyChat, TurnChat, add, ask, multiply, react


def _one_node(node: Any) -> Any:
    g = StateGraph(MessagesState)
    g.add_node("work", node)
    g.add_edge(START, "work")
    return g.compile()


@tool
def research(question: str, config: RunnableConfig) -> str:
    """Answer a question by running a small agent (a graph run nested in this tool call)."""
    inner = create_agent(TurnChat(script=[{"name": "multiply", "args": {"a": 6, "b": 7}}, "inner: 42"]), [multiply])
    result = inner.invoke({"messages": [("user", question)]}, config)
    return str(result["messages"][-1].content)


@tool
def second_opinion(question: str) -> str:
    """Ask a model directly from inside the tool (a chat-model call nested in this tool call)."""
    return str(TurnChat(script=["the expert agrees"]).invoke(question).content)


def test_tool_that_runs_an_agent(fid: Fidelity) -> None:
    """A tool whose body runs a create_agent graph: the nested runs, their parents and the answer."""
    def scenario(run: Run) -> None:
        app = react(TurnChat(script=[{"name": "research", "args": {"question": "6*7?"}}, "it is 42"]), [research])
        run.observe("output", app.invoke(ask("research"), run.config()))

    fid.check(scenario)


def test_tool_that_calls_a_model(fid: Fidelity) -> None:
    """A tool whose body calls a chat model (no config passed on: the ambient one applies)."""
    def scenario(run: Run) -> None:
        script = [{"name": "second_opinion", "args": {"question": "safe?"}}, "agreed"]
        run.observe("output", react(TurnChat(script=script), [second_opinion]).invoke(ask("ask"), run.config()))

    fid.check(scenario)


async def _atool_agent(run: Run) -> None:
    app = react(TurnChat(script=[{"name": "research", "args": {"question": "6*7?"}}, "it is 42"]), [research])
    run.observe("output", await app.ainvoke(ask("research"), run.config()))


def test_tool_that_runs_an_agent_under_ainvoke(fid: Fidelity) -> None:
    """The nested agent inside a sync tool, the outer graph under ainvoke."""
    fid.check(_atool_agent)


class Verdict(BaseModel):
    """A reviewer's verdict."""

    ok: bool
    reason: str


def test_with_structured_output_in_a_node(fid: Fidelity) -> None:
    """model.with_structured_output(Schema) in a node: the parsed object and the raw message."""
    def scenario(run: Run) -> None:
        model = TurnChat(script=[{"name": "Verdict", "args": {"ok": True, "reason": "fine"}}])
        judge = model.with_structured_output(Verdict, include_raw=True)

        def work(state: MessagesState) -> dict[str, Any]:
            out = judge.invoke(state["messages"])
            return {"messages": [out["raw"], ("ai", f"parsed: {out['parsed']!r}")]}

        run.observe("output", _one_node(work).invoke(ask("judge"), run.config()))

    fid.check(scenario)


def test_model_batch_in_a_node(fid: Fidelity) -> None:
    """model.batch() of three prompts in a node (the calls run concurrently)."""
    def scenario(run: Run) -> None:
        model = TurnChat(script=["one answer"])

        def work(state: MessagesState) -> dict[str, Any]:
            answers = model.batch(["a", "b", "c"])
            return {"messages": answers}

        run.observe("output", _one_node(work).invoke(ask("batch"), run.config()))

    fid.check(scenario, concurrent=True)


def test_model_with_fallbacks(fid: Fidelity) -> None:
    """model.with_fallbacks([...]): the first model fails, the fallback answers."""
    def scenario(run: Run) -> None:
        chain = FailingChat(script=["never"]).with_fallbacks([TurnChat(script=["fallback answer"])])

        def work(state: MessagesState) -> dict[str, Any]:
            return {"messages": [chain.invoke(state["messages"])]}

        run.observe("output", _one_node(work).invoke(ask("hi"), run.config()))

    fid.check(scenario)


def test_runnable_with_retry(fid: Fidelity) -> None:
    """model.with_retry(): a model that fails once is retried (on_retry reaches the app's handlers)."""
    def scenario(run: Run) -> None:
        flag = run.path("flag")
        flag.touch()
        chain = FileFlakyChat(script=["second try"], flag=str(flag)).with_retry(
            stop_after_attempt=3, wait_exponential_jitter=False, retry_if_exception_type=(ConnectionError,))

        def work(state: MessagesState) -> dict[str, Any]:
            return {"messages": [chain.invoke(state["messages"])]}

        run.observe("output", _one_node(work).invoke(ask("hi"), run.config()))

    fid.check(scenario)


def test_return_direct_tool_in_create_agent(fid: Fidelity) -> None:
    """A return_direct tool ends the agent with the tool's message."""
    @tool(return_direct=True)
    def final_sum(a: int, b: int) -> int:
        """Add and stop."""
        return a + b

    def scenario(run: Run) -> None:
        agent = create_agent(TurnChat(script=[{"name": "final_sum", "args": {"a": 2, "b": 2}}, "unused"]),
                             [final_sum, add])
        run.observe("output", agent.invoke(ask("2+2"), run.config()))

    fid.check(scenario)
