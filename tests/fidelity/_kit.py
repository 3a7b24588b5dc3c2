"""Scripted chat models, tools and graph builders shared by the fidelity scenarios.

Everything here is defined at module level, so worker processes can import it
(tools and model classes travel as import references or by value). Scenarios
that need objects which do not travel, or classes defined inside a function,
make them in the test itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import re
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool, InjectedToolArg, InjectedToolCallId, StructuredTool, ToolException, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.config import get_stream_writer
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState, InjectedStore, ToolNode, ToolRuntime, tools_condition
from langgraph.store.base import BaseStore
from langgraph.types import Command, interrupt
from pydantic import BaseModel

# -- scripted chat models ----------------------------------------------------------------


def to_ai(entry: Any, turn: int) -> AIMessage:
    """A fresh AIMessage from a script entry.

    Args:
        entry: A str (the answer), an AIMessage, or a dict ``{"content", "tool_calls",
            "id"}``; ``{"name", "args"}`` is shorthand for one tool call.
        turn: The turn, which makes default tool-call ids unique: ``call_<turn>_<i>``.

    Returns:
        A new message (the script's own objects are never handed out).
    """
    if isinstance(entry, AIMessage):
        return entry.model_copy(deep=True)
    if isinstance(entry, str):
        return AIMessage(content=entry)
    if "name" in entry:
        entry = {"tool_calls": [entry]}
    calls = [{"name": c["name"], "args": dict(c.get("args", {})), "id": c.get("id", f"call_{turn}_{i}"),
              "type": "tool_call"} for i, c in enumerate(entry.get("tool_calls", []))]
    return AIMessage(content=entry.get("content", ""), tool_calls=calls, id=entry.get("id"))


def chunks_of(message: AIMessage) -> Iterator[ChatGenerationChunk]:
    """The message as streamed chunks: one per word and space, then one per tool call."""
    content = message.content if isinstance(message.content, str) else ""
    for piece in re.split(r"(\s)", content):
        if piece:
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece, id=message.id))
    for i, call in enumerate(message.tool_calls):
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", id=message.id,
            tool_call_chunks=[{"name": call["name"], "args": json.dumps(call["args"]), "id": call["id"],
                               "index": i, "type": "tool_call_chunk"}]))


class _Tools:
    """``bind_tools`` for a scripted model: the schemas are bound, the script decides."""

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        """Bind tools as OpenAI schemas (they show in the run's invocation params)."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)  # type: ignore[attr-defined]


class TurnChat(_Tools, BaseChatModel):
    """Stateless scripted model: answers with the entry at "number of AI messages in the input".

    Copies of it answer alike, wherever they run; it streams words and tool calls.
    """

    script: list[Any]

    @property
    def _llm_type(self) -> str:
        return "turn-chat"

    def answer(self, messages: list[BaseMessage]) -> AIMessage:
        """The scripted answer to ``messages``."""
        turn = sum(isinstance(m, AIMessage) for m in messages)
        return to_ai(self.script[min(turn, len(self.script) - 1)], turn)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.answer(messages))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        yield from chunks_of(self.answer(messages))


class StepChat(_Tools, FakeMessagesListChatModel):
    """Stateful scripted model: walks its list of responses, one per call (``i`` counts them).

    The app must see the same sequence with nalar: a copy of the model that
    advanced on a worker would leave this object behind.
    """

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        message = result.generations[0].message
        return ChatResult(generations=[ChatGeneration(message=message.model_copy(deep=True))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages, stop, run_manager, **kwargs).generations[0].message
        assert isinstance(message, AIMessage)
        yield from chunks_of(message)


def steps(*entries: Any) -> list[AIMessage]:
    """The responses of a :class:`StepChat` from script entries (turn = position)."""
    return [to_ai(e, i) for i, e in enumerate(entries)]


class TickChat(BaseChatModel):
    """Async model that streams ``text`` word by word, ``delay`` seconds apart.

    Without streaming it waits the whole time and then answers.
    """

    text: str
    delay: float

    @property
    def _llm_type(self) -> str:
        return "tick-chat"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        raise NotImplementedError("TickChat is async only")

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        await asyncio.sleep(self.delay * len(self.text.split()))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.text))])

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: Any = None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for word in self.text.split():
            await asyncio.sleep(self.delay)
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))


class FileFlakyChat(TurnChat):
    """A :class:`TurnChat` that fails once while the file ``flag`` exists (then removes it)."""

    flag: str

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        flag = Path(self.flag)
        if flag.exists():
            flag.unlink()
            raise ConnectionError("the model endpoint dropped the connection")
        return super()._generate(messages, stop, run_manager, **kwargs)


class FailingChat(TurnChat):
    """A :class:`TurnChat` whose every call fails (a provider outage)."""

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        raise TimeoutError("the provider timed out")


BARRIERS: dict[str, threading.Barrier] = {}
"""Barriers of this process by name: calls that must run at the same time meet at one."""


class MeetChat(TurnChat):
    """A :class:`TurnChat` whose calls wait at the barrier ``BARRIERS[barrier]`` before answering.

    Calls that did not run at the same time never all arrive: the barrier breaks
    after its timeout and the call fails with ``BrokenBarrierError``.
    """

    barrier: str

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        BARRIERS[self.barrier].wait()
        return super()._generate(messages, stop, run_manager, **kwargs)


REQUEST_USER: contextvars.ContextVar[str] = contextvars.ContextVar("request_user", default="anonymous")
"""A request-scoped context variable, as apps keep the current user or tenant."""


class TenantChat(TurnChat):
    """A :class:`TurnChat` that prefixes its answer with the tenant in :data:`REQUEST_USER`."""

    def answer(self, messages: list[BaseMessage]) -> AIMessage:
        """The scripted answer, for the current tenant."""
        reply = super().answer(messages)
        reply.content = f"[{REQUEST_USER.get()}] {reply.content}"
        return reply


class CountingChat(TurnChat):
    """A :class:`TurnChat` that appends a line to the file ``log`` for every call it really makes."""

    log: str

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write("call\n")
        return super()._generate(messages, stop, run_manager, **kwargs)


# -- tools --------------------------------------------------------------------------------
@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@tool
async def aadd(a: int, b: int) -> int:
    """Add two integers, asynchronously."""
    await asyncio.sleep(0)
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fail, with a RuntimeError naming the reason."""
    raise RuntimeError(f"explode refused: {reason}")


@tool
async def aexplode(reason: str) -> str:
    """Always fail, asynchronously."""
    await asyncio.sleep(0)
    raise LookupError(f"aexplode found nothing for {reason}")


def _fragile(x: int) -> str:
    """Fail with a ToolException, which the tool turns into an error message."""
    raise ToolException(f"fragile cannot take {x}")


fragile = StructuredTool.from_function(_fragile, name="fragile", handle_tool_error=True)


@tool(response_format="content_and_artifact")
def listing(n: int) -> tuple[str, dict[str, Any]]:
    """List n items: a summary for the model, the items as an artifact."""
    return f"{n} items", {"items": list(range(n))}


@tool
def log_call(key: str, log: str) -> str:
    """Append ``key`` to the file ``log``; say how many lines it holds now."""
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(key + "\n")
    with open(log, encoding="utf-8") as fh:
        return f"{key} is entry {len(fh.readlines())}"


@tool
def flaky(key: str, flag: str) -> str:
    """Fail once while the file ``flag`` exists (removing it), then succeed."""
    path = Path(flag)
    if path.exists():
        path.unlink()
        raise ConnectionError(f"{key}: the service hung up")
    return f"{key}: ok"


@tool
def make_id(prefix: str) -> str:
    """Make a new id (from uuid.uuid4)."""
    return f"{prefix}-{uuid.uuid4()}"


@tool
def roll(sides: int) -> int:
    """Roll a die (from the random module)."""
    return random.randint(1, sides)


NOTES: list[str] = []


@tool
def note(text: str) -> str:
    """Keep a note in this module's list of notes."""
    NOTES.append(text)
    return f"{len(NOTES)} note(s)"


@tool
def whoami(question: str, config: RunnableConfig) -> str:
    """Report the run config a tool receives: thread, tags, metadata."""
    meta = config.get("metadata") or {}
    keep = {k: meta[k] for k in sorted(meta) if k in ("thread_id", "user", "langgraph_node", "langgraph_step")}
    return json.dumps({"thread": (config.get("configurable") or {}).get("thread_id"),
                       "tags": sorted(config.get("tags") or []), "metadata": keep}, sort_keys=True)


@tool
def state_size(label: str, state: Annotated[dict[str, Any], InjectedState]) -> str:
    """Count the messages in the graph state."""
    return f"{label}: {len(state['messages'])} messages"


@tool
def last_words(state: Annotated[list[BaseMessage], InjectedState("messages")]) -> str:
    """Repeat the first words of the conversation (injected state field)."""
    return str(state[0].content)[:20]


@tool
def call_id(text: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
    """Echo a text with the id of the tool call."""
    return f"{text} <- {tool_call_id}"


@tool
def set_topic(topic: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
    """Set the graph's topic and answer the tool call, as one Command."""
    return Command(update={"topic": topic,
                           "messages": [ToolMessage(f"topic set to {topic}", tool_call_id=tool_call_id)]})


@tool
def runtime_echo(text: str, runtime: ToolRuntime) -> str:
    """Echo with the tool call id and the message count; write to the custom stream."""
    runtime.stream_writer({"echo": text, "call": runtime.tool_call_id})
    return f"{text} ({runtime.tool_call_id}, {len(runtime.state['messages'])} messages)"


class _KeyOnly(BaseModel):
    key: str


class Lookup(BaseTool):
    """A tool class whose schema names only ``key``; ``secret`` is an injected argument of its body.

    Its annotations are strings (this module postpones them), which LangChain resolves
    against the body's own module to find the injected argument.
    """

    name: str = "lookup"
    description: str = "Look a key up."
    args_schema: type[BaseModel] = _KeyOnly

    def _run(self, key: str, secret: Annotated[str, InjectedToolArg] = "none") -> str:
        return f"{key}: {secret}"

    async def _arun(self, key: str, secret: Annotated[str, InjectedToolArg] = "none") -> str:
        return f"{key}: {secret} (async)"


@tool
def remember(fact: str, store: Annotated[BaseStore, InjectedStore()]) -> str:
    """Put a fact in the graph's store."""
    store.put(("facts",), fact, {"fact": fact})
    return f"remembered {fact} ({len(store.search(('facts',)))} facts)"


@tool
def recall(runtime: ToolRuntime) -> str:
    """List the facts of the graph's store (through the tool runtime)."""
    assert runtime.store is not None
    return ", ".join(sorted(item.key for item in runtime.store.search(("facts",))))


@tool
def progress(text: str) -> str:
    """Write progress to LangGraph's custom stream with get_stream_writer()."""
    writer = get_stream_writer()
    writer({"progress": text, "stage": "start"})
    writer({"progress": text, "stage": "end"})
    return f"{text} done"


@tool
def announce(text: str) -> str:
    """Dispatch custom callback events (sync)."""
    dispatch_custom_event("announce", {"text": text, "n": 1})
    dispatch_custom_event("announce", {"text": text, "n": 2})
    return f"announced {text}"


@tool
async def aannounce(text: str) -> str:
    """Dispatch custom callback events (async)."""
    await adispatch_custom_event("announce", {"text": text, "n": 1})
    await adispatch_custom_event("announce", {"text": text, "n": 2})
    return f"announced {text}"


@tool
async def nap(seconds: float) -> str:
    """Sleep, asynchronously."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@tool
def ask_human(question: str) -> str:
    """Ask a human (interrupts the graph) and return the answer."""
    answer = interrupt({"question": question})
    return f"{question} -> {answer}"


# -- graphs -----------------------------------------------------------------------------------
def react(model: Any, tools: Sequence[Any], *, checkpointer: Any = None, store: Any = None,
          tool_node: Any = None, state: type = MessagesState, **compile_kwargs: Any) -> Any:
    """A StateGraph agent: a model node (sync and async), a ToolNode, the loop between them."""
    bound = model.bind_tools(list(tools))

    def agent(s: Any) -> dict[str, Any]:
        return {"messages": [bound.invoke(s["messages"])]}

    async def aagent(s: Any) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(s["messages"])]}

    g: StateGraph[Any] = StateGraph(state)
    g.add_node("agent", RunnableLambda(agent, afunc=aagent, name="agent"))
    g.add_node("tools", tool_node if tool_node is not None else ToolNode(list(tools)))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=checkpointer, store=store, **compile_kwargs)


def ask(text: str) -> dict[str, Any]:
    """A graph input: one user message."""
    return {"messages": [("user", text)]}


def lines(path: Path) -> list[str]:
    """The lines of a log file (none if it does not exist)."""
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
