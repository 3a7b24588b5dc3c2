"""W3 ``swe``: MetaGPT-like software jobs - planner, parallel developers, a tester per subtask.

A job's planner splits it into 2 to 8 subtasks. A developer agent takes each
subtask: it asks for documentation (a retrieval tool call), then writes the
code; a tester tests it, and a failed test (35 % of first and second attempts)
sends the subtask back to a developer with the tester's feedback. A subtask may
itself be a job for a planner one level down (20 % at the top, 10 % below; at
most three planner levels, 2 to 4 subtasks below the top), whose result gets
one integration test. A request is one job; jobs arrive as a Poisson batch.

Two apps run the same trace:

* :func:`build_app` - a LangGraph ``StateGraph`` with ``Send`` fan-out, as
  users write it: developers run as one superstep, testers as the next, so
  every subtask waits for its slowest sibling at each step (the barrier);
* :mod:`nalar_plugin.bench.swe_futures` - the futures workflow of the paper:
  each subtask's developer and tester pipeline on their own.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langchain_core.messages import HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.types import Command, Send

from ..testing import EngineConfig
from .env import Env
from .swe_common import MAX_ATTEMPTS, PASS
from .swe_futures import run_job
from .trace import ModelStep, ToolStep, Tokens, Trace, TraceBook, keyed_rng, lognormal, poisson_arrivals, service_s

__all__ = ["AGENTS", "SweJob", "build_app", "make_trace", "run_client"]

AGENTS = ("planner", "developer", "tester")
TOOLS = ("retrieve_docs",)
STATEFUL = frozenset({"developer"})  # a developer's context grows with each attempt of its subtask

P_FAIL = 0.35
P_RECURSE = (0.2, 0.1)  # chance that a subtask is a sub-job, at planner depth 0 and 1
DOCS_MEDIAN_S = 0.3
DOCS_TOKENS_MEDIAN = 600


@dataclass(frozen=True)
class SweJob:
    """One job: its id (also its top planner's key prefix) and arrival."""

    request: str
    arrival_s: float


class _Maker:
    """Builds one job's steps recursively and its critical path."""

    def __init__(self, seed: int, book: TraceBook, tokens: Tokens, cfg: EngineConfig) -> None:
        self.seed, self.book, self.tokens, self.cfg = seed, book, tokens, cfg

    def svc(self, step: ModelStep) -> float:
        return service_s(step, self.cfg)

    def plan(self, key: str, depth: int) -> tuple[float, float]:
        """Make the plan ``key`` (a planner call and its subtasks).

        Returns:
            Its critical path, and its path under superstep barriers: the time the
            plan takes on an idle farm when every developer step waits for its
            slowest sibling before the testers start, and every test step for its
            slowest sibling before failed subtasks go back to a developer.
        """
        rng = keyed_rng(self.seed, "swe", key)
        k = rng.randint(2, 8) if depth == 0 else rng.randint(2, 4)
        subs = []
        paths = []
        rounds: list[list[tuple[float, float]]] = []  # per subtask, (develop, test) model seconds per attempt
        for i in range(k):
            sub = f"{key}/s{i}"
            nested = depth < len(P_RECURSE) and rng.random() < P_RECURSE[depth]
            subs.append({"id": sub, "kind": "plan" if nested else "code"})
            attempts = self.subplan(sub, depth) if nested else self.leaf(sub)
            paths.append(sum(d + t for d, t, _ in attempts))
            rounds.append([(b, t) for _, t, b in attempts])
        p, o = self.tokens.conv(key, "plan")
        planner = ModelStep(f"{key}/plan", "planner", p, o, None, 0, content=json.dumps({"subtasks": subs}))
        self.book.add(planner)
        barrier = sum(max(r[a][0] for r in rounds if len(r) > a) + max(r[a][1] for r in rounds if len(r) > a)
                      for a in range(max(len(r) for r in rounds)))
        return self.svc(planner) + max(paths), self.svc(planner) + barrier

    def subplan(self, sub: str, depth: int) -> list[tuple[float, float, float]]:
        """A sub-job: one attempt whose develop step is a whole plan, then its integration test."""
        path, barrier = self.plan(sub, depth + 1)
        p, o = self.tokens.code_pair(sub, "integration")
        self.book.add(ModelStep(f"{sub}/test", "tester", p, o, None, 0, content=f"{PASS} integration {sub}"))
        return [(path, self.svc(self.book.model(f"{sub}/test")), barrier)]

    def leaf(self, sub: str) -> list[tuple[float, float, float]]:
        """A coded subtask: per attempt, (develop, test, develop under barriers) model seconds."""
        rng = keyed_rng(self.seed, "swe", sub)
        out: list[tuple[float, float, float]] = []
        prev: tuple[ModelStep, ModelStep] | None = None  # the last attempt's write and test
        for a in range(MAX_ATTEMPTS):
            key = f"{sub}/a{a}"
            if prev is None:
                prompt, cached = self.tokens.code_pair(key, "ask")[0], 0
            else:
                write, test = prev
                cached = write.prompt + write.output
                prompt = cached + test.output
            ask = ModelStep(f"{key}/ask", "developer", prompt, self.tokens.code_pair(key, "ask")[1], sub, cached,
                            content="", tool_calls=(("retrieve_docs", f"{key}/docs", f"{key}-docs"),))
            docs = ToolStep(f"{key}/docs", "retrieve_docs", lognormal(rng, DOCS_MEDIAN_S, 0.6, 0.05, 10.0),
                            content=f"docs for {key}")
            doc_tokens = round(lognormal(rng, DOCS_TOKENS_MEDIAN, 0.5, 16, 8000))
            write = ModelStep(f"{key}/write", "developer", ask.prompt + ask.output + doc_tokens,
                              self.tokens.code_pair(key, "write")[1], sub, ask.prompt + ask.output,
                              content=f"code {key}")
            failed = a < MAX_ATTEMPTS - 1 and rng.random() < P_FAIL
            tp = self.tokens.code_pair(key, "test")
            test = ModelStep(f"{key}/test", "tester", tp[0] + write.output, tp[1], None, 0,
                             content=f"FAIL {key}: fix the edge case" if failed else f"{PASS} {key}")
            for step in (ask, docs, write, test):
                self.book.add(step)
            develop = self.svc(ask) + docs.latency_s + self.svc(write)
            out.append((develop, self.svc(test), develop))
            if not failed:
                return out
            prev = (write, test)
        return out


def make_trace(seed: int, rps: float, duration_s: float) -> Trace:
    """The swe trace: jobs arrive at ``rps`` over ``duration_s``."""
    book = TraceBook()
    maker = _Maker(seed, book, Tokens(seed), EngineConfig())
    clients: list[SweJob] = []
    paths: dict[str, float] = {}
    barriers: dict[str, float] = {}
    for i, arrival in enumerate(poisson_arrivals(seed, "swe", rps, duration_s)):
        job = f"job{i}"
        paths[job], barriers[job] = maker.plan(job, 0)
        clients.append(SweJob(job, arrival))
    subtasks = sum(1 for s in book.model_steps() if s.key.endswith("/a0/ask"))
    # The mean job time on an idle farm with superstep barriers: the best the graph app can do.
    barrier_mean = round(sum(barriers.values()) / len(barriers), 3) if barriers else None
    return Trace("swe", seed, rps, duration_s, clients, book, paths, AGENTS, STATEFUL,
                 info={"jobs": len(clients), "leaf_subtasks": subtasks, "barrier_path_s_mean": barrier_mean,
                       "barrier_path_s": {j: round(b, 3) for j, b in barriers.items()}})


def _merge(a: dict[str, str], b: dict[str, str]) -> dict[str, str]:
    return {**a, **b}


class Work(TypedDict, total=False):
    """One subtask on its way between developer and tester (what ``Send`` carries)."""

    job: str
    sub: str
    kind: str
    attempt: int
    feedback: str
    code: str
    key: str


class SweState(TypedDict, total=False):
    """One job's (or sub-job's) state: the planner to ask, and the code that passed its tests."""

    job: str
    plan: str
    code: Annotated[dict[str, str], _merge]


def build_app(env: Env) -> Any:
    """The swe app as a compiled LangGraph graph; a sub-job runs the same graph as a subgraph."""
    router, docs_tool = env.dep.router, env.dep.tools["retrieve_docs"]
    compiled: list[Any] = []

    async def plan(state: SweState, config: RunnableConfig) -> Command[Any]:
        msg = await router.pick("planner").ainvoke([HumanMessage(f"plan {state['plan']}")], config,
                                                   trace_key=f"{state['plan']}/plan")
        subtasks = json.loads(str(msg.content))["subtasks"]
        return Command(goto=[Send("develop", Work(job=state["job"], sub=s["id"], kind=s["kind"], attempt=0, feedback=""))
                             for s in subtasks])

    async def develop(state: Work, config: RunnableConfig) -> Command[Any]:
        sub, attempt = state["sub"], state["attempt"]
        if state["kind"] == "plan":
            out = await compiled[0].ainvoke({"job": state["job"], "plan": sub, "code": {}}, config)
            return Command(update={"code": out["code"]},
                           goto=Send("test", {**state, "code": f"integrated {sub}", "key": f"{sub}/test"}))
        model = router.pick("developer", sub)
        # The subtask is the developer's session (its context grows attempt by attempt);
        # the app names it for any session-aware router, as it names it for its own.
        mine: RunnableConfig = {**config, "metadata": {**(config.get("metadata") or {}), "nalar_session": sub}}
        asked = [HumanMessage(f"implement {sub}\n{state['feedback']}".strip())]
        ask = await model.bind_tools([docs_tool]).ainvoke(asked, mine, trace_key=f"{sub}/a{attempt}/ask")
        found = [await docs_tool.ainvoke({**call, "type": "tool_call"}, mine) for call in ask.tool_calls]
        code = await model.ainvoke([*asked, ask, *found], mine, trace_key=f"{sub}/a{attempt}/write")
        return Command(goto=Send("test", {**state, "code": str(code.content), "key": f"{sub}/a{attempt}/test"}))

    async def test(state: Work, config: RunnableConfig) -> Command[Any]:
        verdict = await router.pick("tester").ainvoke([HumanMessage(f"test {state['sub']}:\n{state['code']}")], config,
                                                      trace_key=state["key"])
        if str(verdict.content).startswith(PASS):
            return Command(update={"code": {state["sub"]: state["code"]}})
        return Command(goto=Send("develop", {**state, "attempt": state["attempt"] + 1, "feedback": str(verdict.content)}))

    graph = StateGraph(SweState)
    graph.add_node("plan", plan, destinations=("develop",))
    graph.add_node("develop", develop, destinations=("test",), input_schema=Work)
    graph.add_node("test", test, destinations=("develop",), input_schema=Work)
    graph.add_edge(START, "plan")
    compiled.append(graph.compile())
    return compiled[0]


async def run_client(app: Any, job: SweJob, env: Env) -> None:
    """Serve one job (the LangGraph app, or the futures workflow if ``env.app == "futures"``)."""
    start = time.monotonic()
    try:
        if env.app == "futures":
            code = await run_job(env, job.request)
        else:
            out = await app.ainvoke({"job": job.request, "plan": job.request, "code": {}}, env.config(job.request))
            code = out["code"]
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        env.record(job.request, start, error=exc)
        return
    env.record(job.request, start, answer=sorted(code.items()))
