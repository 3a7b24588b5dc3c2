"""``nalar demo``: a research LangGraph app, served by plain LangGraph and by nalar.

:func:`run_research_demo` (``nalar demo``) runs the deep-research app of
:mod:`nalar_plugin.bench.research` on four simulated LLM replicas (``ChatOpenAI``
clients against OpenAI-compatible servers in a separate process), once as plain
LangGraph and once through nalar on the embedded threads-mode ``Runtime()``, on the
same seeded requests, and prints the two side by side.

:func:`run_demo` (``nalar demo --futures``) is the small futures workflow: a
planner splits a question into topics, a search tool runs once per topic in
parallel, a writer drafts one note per topic as soon as that topic's search is
done (no barrier), and an editor joins the notes. The same functions run as plain
Python when no Runtime is active.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .bench.research import ResearchSettings, bench_research
from .future import value
from .runtime import Runtime
from .stubs import agent, tool

__all__ = ["editor", "planner", "research", "run_demo", "run_research_demo", "search", "writer"]


@agent
def planner(question: str, k: int = 3) -> list[str]:
    """Split a question into ``k`` topics."""
    words = [w.strip("?.,") for w in question.split() if len(w) > 3]
    return [f"{w.lower()}" for w in words[:k]] or ["everything"]


@tool
async def search(topic: str) -> str:
    """Pretend to search the web (an I/O-bound call)."""
    await asyncio.sleep(0.05)
    return f"facts about {topic}"


@agent
def writer(topic: str, facts: str) -> str:
    """Draft a note on one topic."""
    return f"[{topic}] {facts}"


@agent
def editor(notes: list[str]) -> str:
    """Join the notes into one answer."""
    return "\n".join(sorted(notes))


def research(question: str) -> Any:
    """The workflow: plain code, with or without a Runtime."""
    topics = planner(question)
    # Under a Runtime search(t) is a future; in plain sync code, its value.
    notes = [writer(t, search(t)) for t in value(topics)]  # type: ignore[arg-type]
    return editor(notes)


def run_demo(print_fn: Any = print, **runtime_kwargs: Any) -> dict[str, Any]:
    """Run the workflow on an embedded Runtime and print its futures and graph."""
    question = "How do futures, sessions and policies serve agent workflows?"
    plain = research(question)
    with Runtime(**runtime_kwargs) as rt:
        with rt.session("demo") as session:
            answer = research(question)
            text = answer.result()
        graph = rt.graph(session)
        print_fn(f"nalar demo on {rt!r}\n")
        print_fn(f"answer:\n{text}\n")
        print_fn(f"{len(graph)} futures in session {session!r}:")
        for n in graph.nodes:
            deps = ", ".join(n["dependencies"]) or "-"
            print_fn(f"  {n['call_id']:<24} {n['component']:<8} {n['status']:<9} on {n['executor']}  inputs: {deps}")
        print_fn("\ndependency graph (DOT):")
        print_fn(graph.to_dot())
        print_fn(f"\nsame answer as plain Python: {text == plain}")
        return {"answer": text, "plain": plain, "graph": graph.to_dict()}


# The comparison's settings: two moderate rates, short runs (about a minute on two cores).
DEMO = {"rps": (4.0, 10.0), "duration_s": 4.0, "time_scale": 0.25, "drain_s": 60.0}
QUICK = {"rps": (2.0,), "duration_s": 2.0, "time_scale": 0.1, "drain_s": 30.0}


def _demo_table(data: dict[str, Any]) -> list[str]:
    """The comparison as a few lines: per rate, each system and the ratio nalar / langgraph."""
    head = f"{'rate':>6}  {'system':<15} {'done':>7} {'mean s':>7} {'p99 s':>7} {'calls/s':>8} {'CPU/call':>9} {'cache':>6}"
    lines = [head, "-" * len(head)]
    ratios = {r["rps"]: r["nalar/langgraph"] for r in data["ratios"]}

    def f(x: Any, spec: str, width: int) -> str:
        return format(x, spec).rjust(width) if isinstance(x, (int, float)) else "-".rjust(width)

    for i, rate in enumerate(data["rps"]):
        label = f"{rate:g}/s"
        for system, runs in data["runs"].items():
            m = runs[i]
            cpu = m["driver_cpu_per_call_us"]
            lines.append(f"{label:>6}  {system:<15} {m['completed']:>3}/{m['requests_scheduled']:<3} "
                         f"{f(m['latency_s']['mean'], '.2f', 7)} {f(m['latency_s']['p99'], '.2f', 7)} "
                         f"{f(m['calls_per_s'], '.1f', 8)} {f(cpu / 1000 if cpu else None, '.1f', 6)} ms "
                         f"{f(m['prefix_cache_hit_rate'], '.2f', 6)}")
            label = ""
        x = ratios.get(rate)
        if x:
            lines.append(f"{'':>6}  {'nalar/langgraph':<15} {'':>7} {f(x['mean'], '.2f', 7)} {f(x['p99'], '.2f', 7)} "
                         f"{f(x['calls_per_s'], '.2f', 8)} {f(x['driver_cpu_per_call'], '.2f', 9)}")
    return lines


def run_research_demo(*, quick: bool = False, processes: bool = False, progress: bool = True,
                      print_fn: Any = print, nalar_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Serve the research app through plain LangGraph and through nalar; print a comparison.

    Args:
        quick: One short run per system on a fast clock (a smoke test).
        processes: nalar's embedded cluster with worker processes instead of threads.
        progress: Show a progress bar.
        print_fn: Where the text goes.
        nalar_config: ``nalar`` settings for the nalar run (as ``dask.config``'s ``nalar`` key).

    Returns:
        The benchmark's JSON data (see :func:`nalar_plugin.bench.research.bench_research`).
    """
    preset: dict[str, Any] = dict(QUICK if quick else DEMO)
    settings = ResearchSettings(**preset, processes=processes, progress=progress, nalar_config=nalar_config or {})
    print_fn("nalar demo: a deep-research LangGraph app (plan -> a web search and a summary per topic -> report)")
    print_fn(f"on {settings.replicas} simulated LLM replicas, ChatOpenAI clients, seeded Poisson arrivals at "
             f"{', '.join(f'{r:g}' for r in settings.rps)} requests/s for {settings.duration_s:g} s each.")
    print_fn("langgraph: app.ainvoke per request, the app's own round robin over the replicas.")
    print_fn(f"nalar:     the same app with rt.callback(); rt.deploy_model('llm', llms, capacity={settings.slots()}) "
             "picks each call's replica.\n")
    data = bench_research(settings)
    for line in _demo_table(data):
        print_fn(line)
    checks = data["checks"]
    print_fn("\nlatency: wall seconds from scheduled arrival to the report; CPU/call: the driver process's CPU "
             "per model or tool call; cache: prefix-cache hit rate at the replicas.")
    print_fn(f"same requests for both systems: {checks['schedule_identical']}; "
             f"same answers: {checks['answers_identical']}")
    print_fn("the full sweep: nalar bench research --rps 4,8,12,16,20 --json research.json --plot research.png")
    return data
