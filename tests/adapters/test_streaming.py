"""Streaming through nalar: tokens, protocol events and custom writes reach the caller as they happen."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from nalar_plugin import Runtime
from nalar_plugin.testing import EngineServer

from ._apps import HANDSHAKES, HandshakeModel, history_size, react_graph, runtime_echo


def _model_graph(model: Any) -> Any:
    def answer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    async def aanswer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    from langchain_core.runnables import RunnableLambda

    g = StateGraph(MessagesState)
    g.add_node("answer", RunnableLambda(answer, afunc=aanswer))
    g.add_edge(START, "answer")
    g.add_edge("answer", END)
    return g.compile()


def test_tokens_reach_the_app_while_the_model_runs(rt_threads: Runtime, thread_id: str) -> None:
    name = uuid.uuid4().hex
    HANDSHAKES[name] = threading.Event()
    app = _model_graph(HandshakeModel(handshake=name))
    tokens = []
    cfg = {"callbacks": [rt_threads.callback()], "configurable": {"thread_id": thread_id}}
    for chunk, meta in app.stream({"messages": [("user", "hi")]}, cfg, stream_mode="messages"):
        if isinstance(chunk, AIMessageChunk) and chunk.content:
            tokens.append(chunk.content)
            HANDSHAKES[name].set()  # the model on the worker may now produce its second token
    assert tokens == ["first ", "second"]
    assert [n["component"] for n in rt_threads.graph(thread_id).nodes] == ["HandshakeModel"]


def test_chat_openai_tokens_stream_through_the_cluster(rt: Runtime, server: EngineServer, thread_id: str) -> None:
    model = ChatOpenAI(model="adapters", base_url=server.url, api_key="unused", max_retries=0)
    app = _model_graph(model)
    cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id}}
    chunks = [c for c, _ in app.stream({"messages": [("user", "hi")]}, cfg, stream_mode="messages")]
    pieces = [c.content for c in chunks if isinstance(c, AIMessageChunk) and c.content]
    final = app.invoke({"messages": [("user", "hi")]}, {**cfg, "configurable": {"thread_id": thread_id + "-2"}})
    assert len(pieces) > 1 and "".join(pieces) == final["messages"][-1].content
    assert [n["component"] for n in rt.graph(thread_id).nodes] == ["adapters"]

    async def astream() -> list[Any]:
        acfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id + "-a"}}
        return [c async for c, _ in app.astream({"messages": [("user", "hi")]}, acfg, stream_mode="messages")]

    apieces = [c.content for c in asyncio.run(astream()) if isinstance(c, AIMessageChunk) and c.content]
    assert apieces == pieces


def test_tools_with_graph_runtime_and_state_write_to_the_custom_stream(rt: Runtime, model_for: Any, thread_id: str) -> None:
    calls = [{"name": "runtime_echo", "args": {"text": "ping"}}, {"name": "history_size", "args": {"label": "h"}}]
    tools = [runtime_echo, history_size]
    app = react_graph(model_for([{"tool_calls": calls}, "ok"]), tools, tool_node=ToolNode(tools))
    cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id}}
    custom, finals = [], []
    for mode, chunk in app.stream({"messages": [("user", "go")]}, cfg, stream_mode=["custom", "values"]):
        (custom if mode == "custom" else finals).append(chunk)
    assert custom == [{"echo": "ping"}]
    contents = sorted(m.content for m in finals[-1]["messages"] if m.type == "tool")
    assert contents == ["h: 2 messages", "ping (call_0_0)"]
    assert sorted(n["component"] for n in rt.graph(thread_id).nodes if n["component"] != "SimulatedChatModel") == [
        "history_size", "runtime_echo"]


def test_a_node_that_iterates_model_stream_streams_from_the_cluster(rt: Runtime, server: EngineServer,
                                                                    thread_id: str) -> None:
    model = ChatOpenAI(model="adapters", base_url=server.url, api_key="unused", max_retries=0)

    def answer(state: MessagesState) -> dict[str, Any]:
        pieces = [chunk.content for chunk in model.stream(state["messages"])]
        return {"messages": [("ai", "|".join(p for p in pieces if p))]}

    async def aanswer(state: MessagesState) -> dict[str, Any]:
        pieces = [chunk.content async for chunk in model.astream(state["messages"])]
        return {"messages": [("ai", "|".join(p for p in pieces if p))]}

    from langchain_core.runnables import RunnableLambda

    g = StateGraph(MessagesState)
    g.add_node("answer", RunnableLambda(answer, afunc=aanswer))
    g.add_edge(START, "answer")
    g.add_edge("answer", END)
    app = g.compile()
    plain = app.invoke({"messages": [("user", "hi")]})
    served = app.invoke({"messages": [("user", "hi")]}, {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id}})
    assert served["messages"][-1].content == plain["messages"][-1].content
    assert served["messages"][-1].content.count("|") > 1  # it came in several chunks
    cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id + "-a"}}
    aserved = asyncio.run(app.ainvoke({"messages": [("user", "hi")]}, cfg))
    assert aserved["messages"][-1].content == plain["messages"][-1].content
    for session in (thread_id, thread_id + "-a"):
        assert [(n["component"], n["method"], n["status"]) for n in rt.graph(session).nodes] == [
            ("adapters", "stream" if session == thread_id else "astream", "finished")]
