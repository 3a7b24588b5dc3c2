"""Stream modes (messages, custom, debug, tasks, checkpoints) and ``astream_events(version="v2")``."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph

from ._harness import Fidelity, Run
from ._kit import TurnChat, add, ask, progress, react

ONE_CALL: list[Any] = [{"name": "add", "args": {"a": 40, "b": 2}}, "The answer is forty two."]


def _events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """astream_events output as the app would log it (every field but the wall-clock ones)."""
    return [{k: v for k, v in e.items() if k != "timestamp"} for e in events]


def test_stream_messages_tokens(fid: Fidelity) -> None:
    """stream(stream_mode="messages"): word tokens of both model calls, the tool message, metadata."""
    def scenario(run: Run) -> None:
        app = react(TurnChat(script=ONE_CALL), [add])
        run.observe("chunks", list(app.stream(ask("40+2"), run.config(), stream_mode="messages")))

    fid.check(scenario)


def test_astream_messages_tokens(fid: Fidelity) -> None:
    """astream(stream_mode="messages") of the same app."""
    async def scenario(run: Run) -> None:
        app = react(TurnChat(script=ONE_CALL), [add])
        run.observe("chunks", [c async for c in app.astream(ask("40+2"), run.config(), stream_mode="messages")])

    fid.check(scenario)


def test_astream_events_v2_with_token_streaming(fid: Fidelity) -> None:
    """astream_events(version="v2"): every event (names, run ids, parents, tags, data) in order."""
    async def scenario(run: Run) -> None:
        app = react(TurnChat(script=ONE_CALL), [add])
        events = [e async for e in app.astream_events(ask("40+2"), run.config(), version="v2")]
        run.observe("events", _events(events))

    fid.check(scenario)


def test_astream_events_v2_of_a_node_that_streams_a_model(fid: Fidelity) -> None:
    """A node iterating model.astream(): on_chat_model_stream events carry each chunk."""
    async def scenario(run: Run) -> None:
        model = TurnChat(script=["streamed from inside a node"])

        async def answer(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
            text = "".join([str(c.content) async for c in model.astream(state["messages"], config)])
            return {"messages": [("ai", text)]}

        g = StateGraph(MessagesState)
        g.add_node("answer", answer)
        g.add_edge(START, "answer")
        g.add_edge("answer", END)
        events = [e async for e in g.compile().astream_events(ask("hi"), run.config(), version="v2")]
        run.observe("events", _events(events))

    fid.check(scenario)


def test_node_iterates_model_stream(fid: Fidelity) -> None:
    """A sync node iterating model.stream() (chunks joined), also seen through stream_mode="messages"."""
    def scenario(run: Run) -> None:
        model = TurnChat(script=["one two three"])

        def answer(state: MessagesState) -> dict[str, Any]:
            pieces = [str(c.content) for c in model.stream(state["messages"])]
            return {"messages": [("ai", "|".join(pieces))]}

        g = StateGraph(MessagesState)
        g.add_node("answer", answer)
        g.add_edge(START, "answer")
        app = g.compile()
        run.observe("output", app.invoke(ask("count"), run.config("invoke")))
        run.observe("messages", list(app.stream(ask("count"), run.config("stream"), stream_mode="messages")))

    fid.check(scenario)


def test_stream_custom_from_a_node_and_a_tool(fid: Fidelity) -> None:
    """stream_mode="custom": get_stream_writer() in a node and in a tool, with the values stream."""
    def scenario(run: Run) -> None:
        model = TurnChat(script=[{"name": "progress", "args": {"text": "index"}}, "indexed"]).bind_tools([progress])

        def agent(state: MessagesState) -> dict[str, Any]:
            get_stream_writer()({"node": "agent", "turn": len(state["messages"])})
            return {"messages": [model.invoke(state["messages"])]}

        from langgraph.prebuilt import ToolNode, tools_condition

        g = StateGraph(MessagesState)
        g.add_node("agent", agent)
        g.add_node("tools", ToolNode([progress]))
        g.add_edge(START, "agent")
        g.add_conditional_edges("agent", tools_condition)
        g.add_edge("tools", "agent")
        chunks = list(g.compile().stream(ask("index it"), run.config(), stream_mode=["custom", "values"]))
        run.observe("chunks", chunks)

    fid.check(scenario)


def test_stream_debug(fid: Fidelity) -> None:
    """stream_mode="debug": checkpoint, task and task_result events of a ReAct run."""
    def scenario(run: Run) -> None:
        app = react(TurnChat(script=ONE_CALL), [add], checkpointer=InMemorySaver())
        run.observe("chunks", list(app.stream(ask("40+2"), run.config(), stream_mode="debug")))

    fid.check(scenario)


def test_stream_tasks_and_checkpoints(fid: Fidelity) -> None:
    """stream_mode=["tasks", "checkpoints"]: task starts and results, and every checkpoint."""
    def scenario(run: Run) -> None:
        app = react(TurnChat(script=ONE_CALL), [add], checkpointer=InMemorySaver())
        run.observe("chunks", list(app.stream(ask("40+2"), run.config(), stream_mode=["tasks", "checkpoints"])))

    fid.check(scenario)


def test_astream_every_mode_at_once(fid: Fidelity) -> None:
    """astream with values, updates, messages and custom together: one interleaved sequence."""
    async def scenario(run: Run) -> None:
        app = react(TurnChat(script=[{"name": "progress", "args": {"text": "x"}}, "done"]), [progress])
        chunks = [c async for c in app.astream(ask("go"), run.config(),
                                               stream_mode=["values", "updates", "messages", "custom"])]
        run.observe("chunks", chunks)

    fid.check(scenario)


def test_nostream_tag_hides_tokens(fid: Fidelity) -> None:
    """A model tagged "nostream" streams no tokens in messages mode; its final message still shows."""
    def scenario(run: Run) -> None:
        app = react(TurnChat(script=ONE_CALL).with_config(tags=["nostream"]), [add])
        run.observe("chunks", list(app.stream(ask("40+2"), run.config(), stream_mode="messages")))

    fid.check(scenario)


def test_disable_streaming_model_in_messages_mode(fid: Fidelity) -> None:
    """disable_streaming=True: messages mode gets whole messages, no token chunks."""
    def scenario(run: Run) -> None:
        app = react(TurnChat(script=ONE_CALL, disable_streaming=True), [add])
        run.observe("chunks", list(app.stream(ask("40+2"), run.config(), stream_mode="messages")))

    fid.check(scenario)
