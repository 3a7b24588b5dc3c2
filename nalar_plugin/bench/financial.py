"""W1 ``financial``: a stateful analyst conversation fanning out to four sub-agents.

A session is an analyst conversation of several turns separated by think time.
Each turn: the analyst plans, then in parallel the stock, bonds and market
research sub-agents answer and a news-search tool runs, then the analyst writes
the summary. The conversation (and so the analyst's prompt) grows every turn,
so a session's prefix lives on one analyst engine. Session lengths are heavy
tailed (``P(turns >= k) = k**-1.5``, at most 24), which loads engines unevenly.
A request is one turn; its latency runs from the turn's question to its summary.

The app is one LangGraph ``StateGraph`` with a checkpointer (the conversation is
the thread's state) and a ``Send`` fan-out to the sub-agents.
"""

from __future__ import annotations

import asyncio
import operator
import time
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Send

from ..testing import EngineConfig
from .env import Env
from .trace import ModelStep, ToolStep, Tokens, Trace, TraceBook, keyed_rng, lognormal, poisson_arrivals, service_s

__all__ = ["AGENTS", "FinancialSession", "FinancialTurn", "build_app", "make_trace", "run_client"]

AGENTS = ("analyst", "stock", "bonds", "research")
SUBAGENTS = ("stock", "bonds", "research")
TOOLS = ("news_search",)
STATEFUL = frozenset({"analyst"})

MAX_TURNS = 24
TURN_ALPHA = 1.5  # P(turns >= k) = k ** -alpha: a few sessions are much longer than most
THINK_MEAN_S = 10.0  # the analyst reads and types between turns
SYSTEM_TOKENS = 800  # the analyst's instructions and tool descriptions
QUESTION_MEDIAN = 120  # a typed question
NEWS_MEDIAN_S = 0.5  # a search API round trip


@dataclass(frozen=True)
class FinancialTurn:
    """One turn: its question and the keys of its steps."""

    request: str
    question: str
    think_s: float


@dataclass(frozen=True)
class FinancialSession:
    """One analyst conversation."""

    session: str
    arrival_s: float
    turns: tuple[FinancialTurn, ...]


def mean_turns() -> float:
    """Expected turns per session under the heavy-tailed length distribution."""
    return sum(k ** -TURN_ALPHA for k in range(1, MAX_TURNS + 1))


def _turns(rng: Any) -> int:
    u = 1.0 - rng.random()  # in (0, 1]
    return min(MAX_TURNS, int(u ** (-1.0 / TURN_ALPHA)))


def make_trace(seed: int, rps: float, duration_s: float) -> Trace:
    """The financial trace: sessions arrive so that turns are offered at ``rps``.

    Args:
        seed: Seed of every draw.
        rps: Offered turns per model second (sessions arrive at ``rps / mean_turns()``).
        duration_s: Model seconds over which sessions arrive.
    """
    tokens = Tokens(seed)
    book = TraceBook()
    cfg = EngineConfig()
    clients: list[FinancialSession] = []
    paths: dict[str, float] = {}
    for i, arrival in enumerate(poisson_arrivals(seed, "financial", rps / mean_turns(), duration_s)):
        sid = f"fin{i}"
        rng = keyed_rng(seed, "financial", sid)
        context = SYSTEM_TOKENS
        turns: list[FinancialTurn] = []
        for t in range(_turns(rng)):
            key = f"{sid}/t{t}"
            question = round(lognormal(rng, QUESTION_MEDIAN, 0.8, 8, 2000))
            plan_out = tokens.conv(key, "plan")[1]
            plan = ModelStep(f"{key}/plan", "analyst", context + question, plan_out, sid, context if t else 0,
                             content=f"plan {key}: ask stock, bonds, research; search news")
            book.add(plan)
            subs: list[ModelStep] = []
            for agent in SUBAGENTS:
                p, o = tokens.conv(key, agent)
                subs.append(ModelStep(f"{key}/{agent}", agent, p, o, None, 0, content=f"{agent} view for {key}"))
                book.add(subs[-1])
            news = ToolStep(f"{key}/news", "news_search", lognormal(rng, NEWS_MEDIAN_S, 0.6, 0.05, 10.0),
                            content=f"headlines for {key}")
            book.add(news)
            news_tokens = tokens.conv(key, "news")[1]
            findings = sum(s.output for s in subs) + news_tokens
            summary = ModelStep(f"{key}/summary", "analyst", plan.prompt + plan.output + findings,
                                tokens.conv(key, "summary")[1], sid, plan.prompt + plan.output,
                                content=f"summary {key}")
            book.add(summary)
            context = summary.prompt + summary.output
            think = rng.expovariate(1.0 / THINK_MEAN_S) if t else 0.0
            turns.append(FinancialTurn(key, f"question {key}", think))
            fan = max(max(service_s(s, cfg) for s in subs), news.latency_s)
            paths[key] = service_s(plan, cfg) + fan + service_s(summary, cfg)
        clients.append(FinancialSession(sid, arrival, tuple(turns)))
    return Trace("financial", seed, rps, duration_s, clients, book, paths, AGENTS, STATEFUL,
                 info={"sessions": len(clients), "mean_turns": round(mean_turns(), 3)})


class SubTask(TypedDict):
    """What the fan-out sends to a sub-agent or to the news search."""

    agent: str
    key: str
    ask: str


class FinancialState(TypedDict, total=False):
    """The thread's state: the conversation, and this turn's findings."""

    messages: Annotated[list[AnyMessage], add_messages]
    session: str
    turn: str
    findings: Annotated[list[tuple[str, str, str]], operator.add]  # (turn, source, text)
    answer: str
    notes: str


def build_app(env: Env) -> Any:
    """The analyst app as a compiled LangGraph graph (with an in-memory checkpointer)."""
    router, news_tool = env.dep.router, env.dep.tools["news_search"]

    async def plan(state: FinancialState, config: RunnableConfig) -> dict[str, Any]:
        model = router.pick("analyst", state["session"])
        msg = await model.ainvoke(state["messages"], config, trace_key=f"{state['turn']}/plan")
        return {"messages": [msg]}

    def fan_out(state: FinancialState) -> list[Send]:
        turn = state["turn"]
        ask = str(state["messages"][-1].content)
        asks = [Send("subagent", SubTask(agent=a, key=f"{turn}/{a}", ask=ask)) for a in SUBAGENTS]
        return asks + [Send("news", SubTask(agent="news", key=f"{turn}/news", ask=ask))]

    async def subagent(state: SubTask, config: RunnableConfig) -> dict[str, Any]:
        model = router.pick(state["agent"])
        msg = await model.ainvoke([HumanMessage(state["ask"])], config, trace_key=state["key"])
        return {"findings": [(state["key"].rsplit("/", 1)[0], state["agent"], str(msg.content))]}

    async def news(state: SubTask, config: RunnableConfig) -> dict[str, Any]:
        found = await news_tool.ainvoke({"key": state["key"]}, config)
        return {"findings": [(state["key"].rsplit("/", 1)[0], "news", str(found))]}

    async def summary(state: FinancialState, config: RunnableConfig) -> dict[str, Any]:
        turn = state["turn"]
        found = sorted((src, text) for t, src, text in state["findings"] if t == turn)
        notes = HumanMessage("\n".join(f"{src}: {text}" for src, text in found))
        model = router.pick("analyst", state["session"])
        msg = await model.ainvoke([*state["messages"], notes], config, trace_key=f"{turn}/summary")
        return {"messages": [notes, msg], "answer": str(msg.content), "notes": str(notes.content)}

    graph = StateGraph(FinancialState)
    graph.add_node("plan", plan)
    graph.add_node("subagent", subagent, input_schema=SubTask)
    graph.add_node("news", news, input_schema=SubTask)
    graph.add_node("summary", summary)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", fan_out, ["subagent", "news"])
    graph.add_edge(["subagent", "news"], "summary")
    graph.add_edge("summary", END)
    return graph.compile(checkpointer=InMemorySaver())


async def run_client(app: Any, session: FinancialSession, env: Env) -> None:
    """Play one conversation: each turn after its think time; a failed turn ends the session."""
    for n, turn in enumerate(session.turns):
        if n:
            await env.sleep_model(turn.think_s)
        start = time.monotonic()
        try:
            out = await app.ainvoke(
                {"messages": [HumanMessage(turn.question)], "session": session.session, "turn": turn.request},
                env.config(session.session, priority=-start),  # the oldest turn first, across sessions
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            env.record(turn.request, start, error=exc)
            for rest in session.turns[n + 1:]:
                env.record(rest.request, time.monotonic(), error=RuntimeError("an earlier turn of the session failed"))
            return
        env.record(turn.request, start, answer=(out["answer"], out["notes"]))
