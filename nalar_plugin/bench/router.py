"""W2 ``router``: a light classifier routes each request to a chat workflow or a coding agent.

The chat workflow makes one or two model calls (the first answer says whether a
follow-up is needed); the coding agent is a ReAct loop of 3 to 8 model calls,
each but the last asking for a tool call (running code), with its context
growing call by call. The branch mix shifts in four equal phases - 50 %, 90 %,
10 % and 50 % of requests to the coding agent - so each pool in turn carries
most of the load, while the static split matches the mean over the whole trace.

The app is one LangGraph ``StateGraph``: the classifier node, a conditional
edge, the chat node and the coding agent's model node with a ``ToolNode`` loop.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition

from ..testing import EngineConfig
from .env import Env
from .trace import ModelStep, ToolStep, Tokens, Trace, TraceBook, keyed_rng, lognormal, poisson_arrivals, service_s

__all__ = ["AGENTS", "PHASES", "RouterRequest", "build_app", "make_trace", "run_client"]

AGENTS = ("classifier", "chat", "coder")
TOOLS = ("run_code",)
STATEFUL = frozenset({"chat", "coder"})

PHASES = (0.5, 0.9, 0.1, 0.5)  # share of requests sent to the coding agent, per quarter of the trace
FOLLOW_UP = 0.5  # share of chat requests that need a second call
LABEL_TOKENS = 2  # the classifier answers with a label
CHAT_SYSTEM_TOKENS = 200
FOLLOW_UP_MEDIAN = 100
TOOL_MEDIAN_S = 0.5  # running the code / the tests
TOOL_RESULT_MEDIAN = 300  # tokens of tool output fed back to the agent
FOLLOW_UP_MARK = "[follow-up]"


@dataclass(frozen=True)
class RouterRequest:
    """One routed request."""

    request: str
    arrival_s: float
    text: str


def make_trace(seed: int, rps: float, duration_s: float) -> Trace:
    """The router trace: Poisson arrivals at ``rps``, the branch mix shifting by phase."""
    tokens = Tokens(seed)
    book = TraceBook()
    cfg = EngineConfig()
    clients: list[RouterRequest] = []
    paths: dict[str, float] = {}
    branches = {"chat": 0, "code": 0}
    for i, arrival in enumerate(poisson_arrivals(seed, "router", rps, duration_s)):
        rid = f"req{i}"
        rng = keyed_rng(seed, "router", rid)
        share = PHASES[min(len(PHASES) - 1, int(len(PHASES) * arrival / duration_s))]
        branch = "code" if rng.random() < share else "chat"
        branches[branch] += 1
        ask = tokens.conv(rid, "request")[0]
        classify = ModelStep(f"{rid}/classify", "classifier", ask, LABEL_TOKENS, None, 0, content=branch)
        book.add(classify)
        path = service_s(classify, cfg)
        if branch == "chat":
            follow = rng.random() < FOLLOW_UP
            first_out = tokens.conv(rid, "chat", 0)[1]
            first = ModelStep(f"{rid}/chat/0", "chat", CHAT_SYSTEM_TOKENS + ask, first_out, rid, 0,
                              content=f"answer {rid}" + (f" {FOLLOW_UP_MARK}" if follow else ""))
            book.add(first)
            path += service_s(first, cfg)
            if follow:
                extra = round(lognormal(rng, FOLLOW_UP_MEDIAN, 0.6, 8, 2000))
                second = ModelStep(f"{rid}/chat/1", "chat", first.prompt + first.output + extra,
                                   tokens.conv(rid, "chat", 1)[1], rid, first.prompt + first.output,
                                   content=f"refined answer {rid}")
                book.add(second)
                path += service_s(second, cfg)
        else:
            calls = rng.randint(3, 8)
            prompt, cached = tokens.code_pair(rid, "code", 0)[0], 0
            for j in range(calls):
                out = tokens.code_pair(rid, "code", j)[1]
                last = j == calls - 1
                tool_calls: tuple[tuple[str, str, str], ...] = ()
                if not last:
                    tool_calls = (("run_code", f"{rid}/tool/{j}", f"{rid}-call{j}"),)
                step = ModelStep(f"{rid}/code/{j}", "coder", prompt, out, rid, cached,
                                 content=f"patch {rid}" if last else f"try {rid}/{j}", tool_calls=tool_calls)
                book.add(step)
                path += service_s(step, cfg)
                if not last:
                    tool = ToolStep(f"{rid}/tool/{j}", "run_code", lognormal(rng, TOOL_MEDIAN_S, 0.7, 0.05, 10.0),
                                    content=f"result {rid}/{j}")
                    book.add(tool)
                    path += tool.latency_s
                    cached = prompt + out
                    prompt = cached + round(lognormal(rng, TOOL_RESULT_MEDIAN, 0.8, 8, 8000))
        clients.append(RouterRequest(rid, arrival, f"request {rid}"))
        paths[rid] = path
    arrivals = {c.request: c.arrival_s for c in clients}
    return Trace("router", seed, rps, duration_s, clients, book, paths, AGENTS, STATEFUL,
                 info={"phases": list(PHASES), "branches": branches,
                       "phase_demand": phase_demand(book, arrivals, duration_s, cfg)})


def phase_demand(book: TraceBook, arrivals: dict[str, float], duration_s: float,
                 cfg: EngineConfig) -> list[dict[str, float]]:
    """Per phase, the engine slot-seconds each agent type needs per model second.

    A request's steps count in the phase of its arrival; each step costs its
    service time (batch of one, warm prefix cache). Divided by an agent type's
    slots (engines x ``max_batch``), this is the utilisation its pool would run at.
    """
    out: list[dict[str, float]] = [dict.fromkeys(AGENTS, 0.0) for _ in PHASES]
    span = duration_s / len(PHASES)
    for step in book.model_steps():
        phase = min(len(PHASES) - 1, int(arrivals[step.key.split("/")[0]] // span))
        out[phase][step.agent] += service_s(step, cfg) / span
    return [{a: round(x, 3) for a, x in d.items()} for d in out]


class RouterState(TypedDict, total=False):
    """One request's state."""

    messages: Annotated[list[AnyMessage], add_messages]
    request: str
    branch: str
    answer: str


def build_app(env: Env) -> Any:
    """The router app as a compiled LangGraph graph."""
    router, run_code = env.dep.router, env.dep.tools["run_code"]

    async def classify(state: RouterState, config: RunnableConfig) -> dict[str, Any]:
        msg = await router.pick("classifier").ainvoke(state["messages"], config,
                                                      trace_key=f"{state['request']}/classify")
        return {"branch": str(msg.content).strip()}

    def branch(state: RouterState) -> str:
        return "coder" if state["branch"] == "code" else "chat"

    async def chat(state: RouterState, config: RunnableConfig) -> dict[str, Any]:
        rid = state["request"]
        model = router.pick("chat", rid)
        msg = await model.ainvoke(state["messages"], config, trace_key=f"{rid}/chat/0")
        out: list[AnyMessage] = [msg]
        if FOLLOW_UP_MARK in str(msg.content):
            ask = HumanMessage("please go on")
            msg = await model.ainvoke([*state["messages"], msg, ask], config, trace_key=f"{rid}/chat/1")
            out += [ask, msg]
        return {"messages": out, "answer": str(msg.content)}

    async def coder(state: RouterState, config: RunnableConfig) -> dict[str, Any]:
        rid = state["request"]
        done = sum(1 for m in state["messages"] if isinstance(m, AIMessage) and m.tool_calls)
        model = router.pick("coder", rid).bind_tools([run_code])
        msg = await model.ainvoke(state["messages"], config, trace_key=f"{rid}/code/{done}")
        return {"messages": [msg], "answer": str(msg.content)}

    graph = StateGraph(RouterState)
    graph.add_node("classify", classify)
    graph.add_node("chat", chat)
    graph.add_node("coder", coder)
    graph.add_node("tools", ToolNode([run_code]))
    graph.add_edge(START, "classify")
    graph.add_conditional_edges("classify", branch, ["chat", "coder"])
    graph.add_edge("chat", END)
    graph.add_conditional_edges("coder", tools_condition, {"tools": "tools", END: END})
    graph.add_edge("tools", "coder")
    return graph.compile()


async def run_client(app: Any, req: RouterRequest, env: Env) -> None:
    """Serve one request."""
    start = time.monotonic()
    try:
        out = await app.ainvoke({"messages": [HumanMessage(req.text)], "request": req.request},
                                env.config(req.request, recursion_limit=64))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        env.record(req.request, start, error=exc)
        return
    env.record(req.request, start, answer=(out["branch"], out["answer"]))
