"""The deep-research LangGraph app of ``nalar bench research``, as a LangGraph user writes it.

Nothing in it is nalar-specific: ``plan`` asks the model for k topics (2..6), a
``Send`` fan-out runs ``research`` per topic (an ``async`` ``web_search`` tool, then
one summary call), and ``write`` makes one final call over the summaries. Every
model call is ``await llm.ainvoke(messages)`` on a ``ChatOpenAI`` client
(:func:`make_llms`); the app balances its calls over the replicas itself, round
robin (:class:`ResearchContext`). The harness that serves and measures it is
:mod:`nalar_plugin.bench.research`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import operator
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime as GraphRuntime
from langgraph.types import Send
from typing_extensions import TypedDict

from .replicas import filler, lognormal

__all__ = ["SEARCH_SCALE_ENV", "SYSTEM_PROMPT", "Note", "ResearchContext", "ResearchState", "TopicTask", "build_app",
           "fan_out", "make_llms", "plan", "research", "web_search", "write"]

SEARCH_SCALE_ENV = "RESEARCH_SEARCH_TIME_SCALE"  # wall seconds per model second of the search backend
SYSTEM_PROMPT = "You are a careful research assistant. Work only from the material you are given."


class Note(TypedDict):
    """One topic's summary."""

    index: int
    topic: str
    summary: str


class ResearchState(TypedDict, total=False):
    """The graph's state."""

    question: str
    topics: list[str]
    notes: Annotated[list[Note], operator.add]
    report: str


class TopicTask(TypedDict):
    """The input of one ``research`` task."""

    question: str
    topic: str
    index: int


@dataclass
class ResearchContext:
    """LangGraph run context: the model's replicas, and the app's own load balancing over them.

    Attributes:
        llms: One chat model per replica; :meth:`llm` takes them round robin.
    """

    llms: list[Any]
    _order: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._order = itertools.cycle(self.llms)

    def llm(self) -> Any:
        """The replica of the next call (round robin)."""
        return next(self._order)


@tool
async def web_search(query: str) -> str:
    """Search the web for a query and return the top results as text."""
    rng = random.Random(hashlib.sha256(query.encode()).hexdigest())
    # A search backend answering in 20-80 ms, on the engines' clock.
    await asyncio.sleep(rng.uniform(0.02, 0.08) * float(os.environ.get(SEARCH_SCALE_ENV, "1")))
    return filler(rng, lognormal(rng, 250, 0.6, 40, 2000), f"Search results for {query}:")


def _messages(question: str, instruction: str) -> list[Any]:
    """A prompt: the shared system prompt and question first, the instruction last."""
    return [SystemMessage(SYSTEM_PROMPT), HumanMessage(question), HumanMessage(instruction)]


async def plan(state: ResearchState, runtime: GraphRuntime[ResearchContext]) -> dict[str, Any]:
    """Ask the model which topics to research."""
    llm = runtime.context.llm()
    reply = await llm.ainvoke(_messages(state["question"], "Plan the research: list the topics to investigate, "
                                                           "one per numbered line."))
    topics = re.findall(r"^\s*\d+\.\s+(.+?)(?:\s+-\s.*)?$", reply.text, flags=re.M)
    return {"topics": topics or [state["question"].split("\n", 1)[0]]}


def fan_out(state: ResearchState) -> list[Send]:
    """One ``research`` task per topic."""
    return [Send("research", TopicTask(question=state["question"], topic=t, index=i))
            for i, t in enumerate(state["topics"])]


async def research(task: TopicTask, runtime: GraphRuntime[ResearchContext]) -> dict[str, Any]:
    """Search one topic, then summarise what was found."""
    results = await web_search.ainvoke({"query": task["topic"]})
    llm = runtime.context.llm()
    reply = await llm.ainvoke(_messages(task["question"], f"Summarise the search results on {task['topic']}.\n"
                                                          f"{results}"))
    return {"notes": [Note(index=task["index"], topic=task["topic"], summary=reply.text)]}


async def write(state: ResearchState, runtime: GraphRuntime[ResearchContext]) -> dict[str, Any]:
    """Write the report from every topic's summary."""
    notes = sorted(state["notes"], key=lambda n: n["index"])
    body = "\n\n".join(f"## {n['topic']}\n{n['summary']}" for n in notes)
    llm = runtime.context.llm()
    reply = await llm.ainvoke(_messages(state["question"], f"Write the final report from these notes.\n{body}"))
    return {"report": reply.text}


def build_app() -> Any:
    """The compiled research graph: plan -> research per topic -> write."""
    graph = StateGraph(ResearchState, context_schema=ResearchContext)
    graph.add_node("plan", plan)
    graph.add_node("research", research)  # type: ignore[call-overload, arg-type]  # a Send target takes its own input
    graph.add_node("write", write)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", fan_out, ["research"])
    graph.add_edge("research", "write")
    graph.add_edge("write", END)
    return graph.compile()



def make_llms(urls: Sequence[str], model: str = "llm") -> list[Any]:
    """One ``ChatOpenAI`` client per replica URL."""
    from langchain_openai import ChatOpenAI  # noqa: PLC0415 - langchain_openai is an optional dependency

    return [ChatOpenAI(base_url=url, api_key="x", model=model, timeout=600) for url in urls]  # type: ignore[arg-type]
