"""Node timeouts (``TimeoutPolicy``, LangGraph >= 1.2): run timeouts, and idle timeouts that progress resets.

Under ``refresh_on="auto"`` LangGraph resets a node's idle clock on every
callback event of the node's runs, tokens included, so these scenarios check
that events reach the caller while the call runs, not only when it ends. Times
are chosen with a wide margin (5x) for a loaded 2-core machine.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import TimeoutPolicy

from ._harness import Fidelity, Run
from ._kit import TickChat, ask, nap

# NodeTimeoutError's message states the elapsed time, which no run fixes.
ELAPSED = (r"elapsed: [0-9.]+s",)


def _one(node: Any, timeout: Any) -> Any:
    g = StateGraph(MessagesState)
    g.add_node("work", node, timeout=timeout)
    g.add_edge(START, "work")
    g.add_edge("work", END)
    return g.compile()


def test_run_timeout_cancels_a_slow_tool(fid: Fidelity) -> None:
    """run_timeout=0.1 on an async node awaiting a 1 s tool: NodeTimeoutError (kind "run")."""
    async def scenario(run: Run) -> None:
        async def work(state: MessagesState) -> dict[str, Any]:
            return {"messages": [("ai", await nap.ainvoke({"seconds": 1.0}))]}

        with run.raises("error"):
            await _one(work, TimeoutPolicy(run_timeout=0.1)).ainvoke(ask("wait"), run.config())

    fid.check(scenario, scrub=ELAPSED)


def test_run_timeout_not_reached(fid: Fidelity) -> None:
    """run_timeout=2 on a node whose tool takes 10 ms: the output as usual."""
    async def scenario(run: Run) -> None:
        async def work(state: MessagesState) -> dict[str, Any]:
            return {"messages": [("ai", await nap.ainvoke({"seconds": 0.01}))]}

        run.observe("output", await _one(work, TimeoutPolicy(run_timeout=2.0)).ainvoke(ask("wait"), run.config()))

    fid.check(scenario)


def test_idle_timeout_reset_by_streamed_tokens(fid: Fidelity) -> None:
    """idle_timeout=0.25 on a node streaming 8 tokens 50 ms apart (0.4 s in all): tokens keep it alive."""
    async def scenario(run: Run) -> None:
        model = TickChat(text="one two three four five six seven eight", delay=0.05)

        async def work(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
            text = "".join([str(c.content) async for c in model.astream(state["messages"], config)])
            return {"messages": [("ai", text)]}

        run.observe("output", await _one(work, TimeoutPolicy(idle_timeout=0.25)).ainvoke(ask("talk"), run.config()))

    fid.check(scenario)


def test_idle_timeout_reset_by_tokens_of_an_invoked_model(fid: Fidelity) -> None:
    """The same, with the model invoked (it streams because the graph streams messages)."""
    async def scenario(run: Run) -> None:
        model = TickChat(text="one two three four five six seven eight", delay=0.05)

        async def work(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        app = _one(work, TimeoutPolicy(idle_timeout=0.25))
        chunks = [c async for c in app.astream(ask("talk"), run.config(), stream_mode="messages")]
        run.observe("chunks", chunks)

    fid.check(scenario)


def test_idle_timeout_reset_by_tool_events(fid: Fidelity) -> None:
    """idle_timeout=0.25 on a node awaiting four 60 ms tool calls: each call's events are progress."""
    async def scenario(run: Run) -> None:
        async def work(state: MessagesState) -> dict[str, Any]:
            out = [await nap.ainvoke({"seconds": 0.06}) for _ in range(4)]
            return {"messages": [("ai", ", ".join(out))]}

        run.observe("output", await _one(work, TimeoutPolicy(idle_timeout=0.25)).ainvoke(ask("naps"), run.config()))

    fid.check(scenario)


def test_idle_timeout_fires_without_progress(fid: Fidelity) -> None:
    """idle_timeout=0.1 on a node whose model answers after 0.5 s without streaming: NodeTimeoutError."""
    async def scenario(run: Run) -> None:
        model = TickChat(text="slow answer here now please", delay=0.1)

        async def work(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        with run.raises("error"):
            await _one(work, TimeoutPolicy(idle_timeout=0.1)).ainvoke(ask("wait"), run.config())

    fid.check(scenario, scrub=ELAPSED)
