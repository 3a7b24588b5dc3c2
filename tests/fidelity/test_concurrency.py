"""Concurrency semantics: calls LangGraph runs at the same time must still run at the same time.

Each scenario makes its concurrent calls meet at a barrier (three parties, a
5 s timeout). Without nalar they all arrive at once and pass; calls that were
queued one behind the other would break the barrier (``BrokenBarrierError``).
"""

from __future__ import annotations

import asyncio
import operator
import threading
from typing import Annotated, Any

from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

from ._harness import Fidelity, Run
from ._kit import BARRIERS, MeetChat, TurnChat, ask, react

PARTIES = 3
WAIT_S = 5.0


def _meeting_tool() -> Any:
    barrier = threading.Barrier(PARTIES, timeout=WAIT_S)

    @tool
    def meet(name: str) -> str:
        """Wait until every party has arrived."""
        barrier.wait()
        return f"{name} met the others"

    return meet


def test_parallel_tool_calls_of_one_tool_run_at_once(fid: Fidelity) -> None:
    """Three calls of the same tool in one turn (sync ToolNode): they meet."""
    calls = [{"name": "meet", "args": {"name": n}} for n in ("a", "b", "c")]

    def scenario(run: Run) -> None:
        app = react(TurnChat(script=[{"tool_calls": calls}, "all met"]), [_meeting_tool()])
        run.observe("output", app.invoke(ask("meet"), run.config()))

    fid.check(scenario, concurrent=True)


def test_parallel_async_tool_calls_run_at_once(fid: Fidelity) -> None:
    """Three calls of one async tool in one turn (async ToolNode, asyncio.Barrier): they meet."""
    calls = [{"name": "ameet", "args": {"name": n}} for n in ("a", "b", "c")]

    async def scenario(run: Run) -> None:
        barrier = asyncio.Barrier(PARTIES)

        @tool
        async def ameet(name: str) -> str:
            """Wait (on the app's loop) until every party has arrived."""
            await asyncio.wait_for(barrier.wait(), WAIT_S)
            return f"{name} met the others"

        app = react(TurnChat(script=[{"tool_calls": calls}, "all met"]), [ameet])
        run.observe("output", await app.ainvoke(ask("meet"), run.config()))

    fid.check(scenario, concurrent=True)


class Fan(TypedDict):
    names: list[str]
    met: Annotated[list[str], operator.add]


def _fan_out(branch: Any) -> Any:
    g = StateGraph(Fan)
    g.add_node("start", lambda state: {})
    g.add_node("branch", branch)
    g.add_edge(START, "start")
    g.add_conditional_edges("start", lambda state: [Send("branch", {"name": n}) for n in state["names"]],
                            ["branch"])
    g.add_edge("branch", END)
    return g.compile()


def test_send_branches_calling_one_tool_run_at_once(fid: Fidelity) -> None:
    """Three Send branches call the same tool: the branches' calls meet."""
    def scenario(run: Run) -> None:
        meet = _meeting_tool()

        def branch(state: dict[str, Any]) -> dict[str, Any]:
            return {"met": [meet.invoke({"name": state["name"]})]}

        run.observe("output", _fan_out(branch).invoke({"names": ["a", "b", "c"], "met": []}, run.config()))

    fid.check(scenario, concurrent=True)


def test_send_branches_calling_one_model_run_at_once(fid: Fidelity) -> None:
    """Three Send branches call the same model: the three model calls meet."""
    def scenario(run: Run) -> None:
        name = run.thread_prefix  # the same name in every run: the model's fields show in its events
        BARRIERS[name] = threading.Barrier(PARTIES, timeout=WAIT_S)
        model = MeetChat(script=["met"], barrier=name)

        def branch(state: dict[str, Any]) -> dict[str, Any]:
            return {"met": [f"{state['name']}: {model.invoke(state['name']).content}"]}

        try:
            run.observe("output", _fan_out(branch).invoke({"names": ["a", "b", "c"], "met": []}, run.config()))
        finally:
            BARRIERS.pop(name, None)

    fid.check(scenario, concurrent=True)


def test_batch_of_graph_runs_runs_at_once(fid: Fidelity) -> None:
    """batch() of three runs whose tool calls meet: the runs overlap."""
    def scenario(run: Run) -> None:
        app = react(TurnChat(script=[{"name": "meet", "args": {"name": "x"}}, "met"]), [_meeting_tool()])
        outs = app.batch([ask("a"), ask("b"), ask("c")], [run.config(t) for t in "abc"])
        run.observe("outputs", outs)

    fid.check(scenario, concurrent=True, uuid4_order=False)


def test_concurrent_ainvokes_on_one_loop_run_at_once(fid: Fidelity) -> None:
    """asyncio.gather of three ainvoke calls whose async tools meet on the app's loop."""
    async def scenario(run: Run) -> None:
        barrier = asyncio.Barrier(PARTIES)

        @tool
        async def ameet(name: str) -> str:
            """Wait until every party has arrived."""
            await asyncio.wait_for(barrier.wait(), WAIT_S)
            return f"{name} met"

        app = react(TurnChat(script=[{"name": "ameet", "args": {"name": "x"}}, "met"]), [ameet])
        outs = await asyncio.gather(*(app.ainvoke(ask(t), run.config(t)) for t in "abc"))
        run.observe("outputs", list(outs))

    fid.check(scenario, concurrent=True, uuid4_order=False)


def test_two_nodes_in_one_superstep_run_at_once(fid: Fidelity) -> None:
    """Two nodes of one superstep plus a tool call between them: all three parties meet."""
    def scenario(run: Run) -> None:
        meet = _meeting_tool()

        def left(state: MessagesState) -> dict[str, Any]:
            return {"messages": [("ai", meet.invoke({"name": "left"}))]}

        def right(state: MessagesState) -> dict[str, Any]:
            return {"messages": [("ai", meet.invoke({"name": "right"}))]}

        def middle(state: MessagesState) -> dict[str, Any]:
            return {"messages": [("ai", meet.invoke({"name": "middle"}))]}

        g = StateGraph(MessagesState)
        for name, node in (("left", left), ("right", right), ("middle", middle)):
            g.add_node(name, node)
            g.add_edge(START, name)
        run.observe("output", g.compile().invoke(ask("go"), run.config()))

    fid.check(scenario, concurrent=True)
