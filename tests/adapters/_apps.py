"""Tools and apps the adapter tests share.

Importable by worker processes (tools travel as import references). Tools that
prove where they ran return ``(content, artifact)``: the content is what the app
sees, the artifact records the worker, thread, process and interval, so runs
with and without nalar can be compared on content alone.
"""

from __future__ import annotations

import asyncio
import operator
import os
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    BaseMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState, ToolNode, ToolRuntime, tools_condition
from langgraph.types import Send, interrupt
from typing_extensions import TypedDict


def where() -> dict[str, Any]:
    """Where and when this code runs: Dask worker (if any), thread, process."""
    try:
        from distributed import get_worker

        worker: str | None = get_worker().address
    except ValueError:
        worker = None
    return {"worker": worker, "thread": threading.current_thread().name, "pid": os.getpid(), "start": time.time()}


def _done(record: dict[str, Any]) -> dict[str, Any]:
    record["end"] = time.time()
    return record


@tool(response_format="content_and_artifact")
def add(a: int, b: int) -> tuple[str, dict[str, Any]]:
    """Add two integers."""
    return str(a + b), _done(where())


@tool(response_format="content_and_artifact")
def multiply(a: int, b: int) -> tuple[str, dict[str, Any]]:
    """Multiply two integers."""
    return str(a * b), _done(where())


def _enter(name: str, room: str) -> None:
    """Put a mark for this call in ``room`` (a directory shared by the calls)."""
    with open(os.path.join(room, f"{name}-{os.getpid()}-{threading.get_ident()}-{time.time_ns()}"), "w"):
        pass


def _timed_out(room: str, deadline: float) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"the calls of {room} never ran at the same time")


@tool(response_format="content_and_artifact")
def meet(name: str, room: str, group: int) -> tuple[str, dict[str, Any]]:
    """Wait until ``group`` calls are in ``room`` at the same time.

    Calls that did not run at once could never meet: the first one would wait
    alone until the timeout and fail.
    """
    record = where()
    _enter(name, room)
    deadline = time.monotonic() + 30
    while len(os.listdir(room)) < group:
        _timed_out(room, deadline)
        time.sleep(0.005)
    return name, _done(record)


@tool(response_format="content_and_artifact")
async def ameet(name: str, room: str, group: int) -> tuple[str, dict[str, Any]]:
    """The async twin of :func:`meet`: awaits instead of holding a thread."""
    record = where()
    _enter(name, room)
    deadline = time.monotonic() + 30
    while len(os.listdir(room)) < group:
        _timed_out(room, deadline)
        await asyncio.sleep(0.005)
    return name, _done(record)


@tool
def count(key: str, log: str) -> str:
    """Count one execution of ``key`` in the file ``log``."""
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(key + "\n")
    return f"counted {key}"


@tool
def flaky(key: str, log: str, fail_flag: str) -> str:
    """Count an execution; fail once while the file ``fail_flag`` exists."""
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(key + "\n")
    if os.path.exists(fail_flag):
        os.remove(fail_flag)
        raise RuntimeError(f"{key} failed once")
    return f"done {key}"


@tool
def approve(action: str) -> str:
    """Ask a human to approve an action (interrupts the graph)."""
    answer = interrupt({"action": action})
    return f"{action}: {answer}"


@tool
def history_size(label: str, state: Annotated[dict[str, Any], InjectedState]) -> str:
    """Report how many messages the graph state holds."""
    return f"{label}: {len(state['messages'])} messages"


@tool
def runtime_echo(text: str, runtime: ToolRuntime) -> str:
    """Echo text with the tool call id, and write it to the graph's custom stream."""
    runtime.stream_writer({"echo": text})
    return f"{text} ({runtime.tool_call_id})"


def records(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """The execution records of the tool messages in ``messages``."""
    return [m.artifact for m in messages if isinstance(m, ToolMessage) and isinstance(m.artifact, dict)]


def normalize(messages: list[AnyMessage]) -> list[tuple[Any, ...]]:
    """Messages without what differs between two runs of the same app (ids, timing, usage)."""
    out: list[tuple[Any, ...]] = []
    for m in messages:
        calls = tuple((c["name"], tuple(sorted(c["args"].items())), c["id"]) for c in getattr(m, "tool_calls", []) or [])
        out.append((m.type, m.content, calls, getattr(m, "tool_call_id", None), getattr(m, "status", None)))
    return out


def react_graph(model: Any, tools: list[Any], *, tool_node: Any = None, checkpointer: Any = None) -> Any:
    """A StateGraph agent: a model node, a ToolNode, and the loop between them."""
    bound = model.bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    async def aagent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    from langchain_core.runnables import RunnableLambda

    g = StateGraph(MessagesState)
    g.add_node("agent", RunnableLambda(agent, afunc=aagent))
    g.add_node("tools", tool_node or ToolNode(tools))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=checkpointer)


class MapState(TypedDict):
    topics: list[str]
    notes: Annotated[list[str], operator.add]
    where: Annotated[list[dict[str, Any]], operator.add]
    summary: str


class TopicState(TypedDict):
    topic: str


def map_reduce_graph(model: Any, room: str) -> Any:
    """Plan topics, research each in its own ``Send`` task (a tool call that meets the others), summarise."""

    def plan(state: MapState) -> dict[str, Any]:
        return {}

    def fan_out(state: MapState) -> list[Send]:
        return [Send("research", {"topic": t}) for t in state["topics"]]

    def research(state: TopicState, config: RunnableConfig) -> dict[str, Any]:
        group = config["configurable"]["group"]
        message = meet.invoke({"args": {"name": state["topic"], "room": room, "group": group},
                               "id": f"r-{state['topic']}", "name": "meet", "type": "tool_call"})
        return {"notes": [message.content], "where": [message.artifact]}

    def summarise(state: MapState) -> dict[str, Any]:
        answer = model.invoke("Summarise: " + ", ".join(sorted(state["notes"])))
        return {"summary": answer.content}

    g = StateGraph(MapState)
    g.add_node("plan", plan)
    g.add_node("research", research)
    g.add_node("summarise", summarise)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan_out, ["research"])
    g.add_edge("research", "summarise")
    g.add_edge("summarise", END)
    return g.compile()


def subgraph_app(model: Any) -> Any:
    """A parent graph whose middle node is a compiled ReAct subgraph."""
    inner = react_graph(model, [add, multiply])

    def intro(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage("Let me compute that.")]}

    def outro(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"Answer: {state['messages'][-1].content}")]}

    g = StateGraph(MessagesState)
    g.add_node("intro", intro)
    g.add_node("compute", inner)
    g.add_node("outro", outro)
    g.add_edge(START, "intro")
    g.add_edge("intro", "compute")
    g.add_edge("compute", "outro")
    g.add_edge("outro", END)
    return g.compile()


# -- a model that proves streaming ------------------------------------------------
HANDSHAKES: dict[str, threading.Event] = {}


class HandshakeModel(BaseChatModel):
    """Streams a first token, then waits until the app has seen it before the second.

    If tokens reached the app only once the call ended, the wait would time out.
    """

    handshake: str

    @property
    def _llm_type(self) -> str:
        return "handshake"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("first second"))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content="first "))
        if not HANDSHAKES[self.handshake].wait(30):
            raise RuntimeError("the app did not see the first token while the model ran: not streaming")
        yield ChatGenerationChunk(message=AIMessageChunk(content="second"))


def locked_tool() -> Any:
    """A tool whose function holds a lock: it cannot be sent to another process."""
    guard = threading.Lock()

    @tool(response_format="content_and_artifact")
    def locked(text: str) -> tuple[str, dict[str, Any]]:
        """Echo the text under a lock."""
        with guard:
            return text[::-1], _done(where())

    return locked


@tool
def consult(question: str, engine_url: str) -> str:
    """Ask an expert model (a chat-model call nested in this tool call)."""
    from nalar_plugin.testing import SimulatedChatModel

    expert = SimulatedChatModel(engine=engine_url, script=lambda messages: f"expert: {messages[-1].content}")
    return str(expert.invoke(question).content)


@tool
def remember(fact: str, runtime: ToolRuntime) -> str:
    """Remember a fact in the graph's store."""
    assert runtime.store is not None
    runtime.store.put(("facts",), fact, {"fact": fact, "ran_on": where()["worker"]})
    return f"remembered {fact}"


class Opaque:
    """A value the journal's serde cannot store."""

    def __init__(self, text: str) -> None:
        self.text = text


@tool(response_format="content_and_artifact")
def opaque(text: str) -> tuple[str, Opaque]:
    """Return an artifact of a class the journal cannot store."""
    return text, Opaque(text)
