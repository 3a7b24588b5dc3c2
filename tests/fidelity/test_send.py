"""``Send`` fan-out (map-reduce): parallel tasks that call tools and models in each branch."""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langchain_core.messages import AnyMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Send
from typing_extensions import TypedDict

from ._harness import Fidelity, Run
from ._kit import TurnChat, aadd, add, shout

TOPICS = ["dask", "pluggy", "httpx"]


class MapState(TypedDict):
    topics: list[str]
    notes: Annotated[list[str], operator.add]
    messages: Annotated[list[AnyMessage], add_messages]
    summary: str


class TopicState(TypedDict):
    topic: str


def _call(tool: Any, args: dict[str, Any], call_id: str) -> ToolMessage:
    message = tool.invoke({"args": args, "id": call_id, "name": tool.name, "type": "tool_call"})
    assert isinstance(message, ToolMessage)
    return message


def _fan_out(state: MapState) -> list[Send]:
    return [Send("research", {"topic": t}) for t in state["topics"]]


def map_reduce(research: Any, summarise: Any) -> Any:
    """plan -> Send("research") per topic -> summarise."""
    g = StateGraph(MapState)
    g.add_node("plan", lambda state: {"notes": []})
    g.add_node("research", research)
    g.add_node("summarise", summarise)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", _fan_out, ["research"])
    g.add_edge("research", "summarise")
    g.add_edge("summarise", END)
    return g.compile()


def _tool_research(state: TopicState) -> dict[str, Any]:
    message = _call(shout, {"text": state["topic"]}, f"r-{state['topic']}")
    return {"notes": [str(message.content)], "messages": [message]}


def _summary_model() -> TurnChat:
    return TurnChat(script=["All three topics are researched."])


def test_send_with_a_tool_call_per_branch(fid: Fidelity) -> None:
    """Three Send tasks each run a tool; notes are reduced in task order; a model summarises."""
    def scenario(run: Run) -> None:
        model = _summary_model()

        def summarise(state: MapState) -> dict[str, Any]:
            return {"summary": model.invoke("Summarise: " + ", ".join(state["notes"])).content}

        run.observe("output", map_reduce(_tool_research, summarise).invoke({"topics": TOPICS}, run.config()))

    fid.check(scenario, concurrent=True)


def test_send_branches_call_a_model_then_its_tool(fid: Fidelity) -> None:
    """Each Send branch asks a model for a tool call and runs it (model and tool per branch)."""
    def scenario(run: Run) -> None:
        model = TurnChat(script=[{"name": "add", "args": {"a": 2, "b": 3}}]).bind_tools([add])

        def research(state: TopicState) -> dict[str, Any]:
            ask = model.invoke(f"research {state['topic']}")
            call = ask.tool_calls[0]
            message = _call(add, call["args"], f"{state['topic']}-{call['id']}")
            return {"notes": [f"{state['topic']}={message.content}"], "messages": [ask, message]}

        def summarise(state: MapState) -> dict[str, Any]:
            return {"summary": "; ".join(state["notes"])}

        run.observe("output", map_reduce(research, summarise).invoke({"topics": TOPICS}, run.config()))

    fid.check(scenario, concurrent=True)


def test_send_async_branches(fid: Fidelity) -> None:
    """ainvoke: async Send branches await an async tool each."""
    async def research(state: TopicState) -> dict[str, Any]:
        message = await aadd.ainvoke({"args": {"a": len(state["topic"]), "b": 1}, "id": f"a-{state['topic']}",
                                      "name": "aadd", "type": "tool_call"})
        return {"notes": [f"{state['topic']}:{message.content}"], "messages": [message]}

    async def scenario(run: Run) -> None:
        app = map_reduce(research, lambda state: {"summary": ",".join(state["notes"])})
        run.observe("output", await app.ainvoke({"topics": TOPICS}, run.config()))

    fid.check(scenario, concurrent=True)


def test_send_with_max_concurrency_one(fid: Fidelity) -> None:
    """max_concurrency=1: the Send tasks run one after the other, so the global event order is fixed."""
    def scenario(run: Run) -> None:
        app = map_reduce(_tool_research, lambda state: {"summary": "|".join(state["notes"])})
        run.observe("output", app.invoke({"topics": TOPICS}, run.config(max_concurrency=1)))

    fid.check(scenario)


def test_send_stream_updates(fid: Fidelity) -> None:
    """stream(stream_mode="updates") of a fan-out: one update per task (order of arrival not fixed)."""
    def scenario(run: Run) -> None:
        app = map_reduce(_tool_research, lambda state: {"summary": "|".join(state["notes"])})
        chunks = list(app.stream({"topics": TOPICS}, run.config(), stream_mode="updates"))
        run.observe("chunks", chunks, unordered=True)
        run.observe("last chunk", chunks[-1])

    # The streamed updates' message ids are stamped as the tasks finish (order not fixed).
    fid.check(scenario, concurrent=True, uuid4_order=False)


def test_send_streams_tokens_of_parallel_models(fid: Fidelity) -> None:
    """stream_mode="messages" while three branches stream a model each: chunks per message, in order."""
    def scenario(run: Run) -> None:
        model = TurnChat(script=["a short streamed note"])

        def research(state: TopicState, config: RunnableConfig) -> dict[str, Any]:
            note = model.invoke(f"note on {state['topic']}", config)
            return {"notes": [str(note.content)], "messages": [note]}

        app = map_reduce(research, lambda state: {"summary": str(len(state["notes"]))})
        chunks = list(app.stream({"topics": TOPICS}, run.config(), stream_mode="messages"))
        run.observe_grouped("chunks per message", chunks, key=lambda chunk: chunk[0]["id"])

    fid.check(scenario, concurrent=True, uuid4_order=False)
