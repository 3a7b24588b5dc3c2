"""``nalar bench soak``: thousands of sessions through one Runtime; memory, threads and disk stay flat.

Each session is one run of a small LangGraph app served by ``rt.callback()``: a
node calls a journaled tool and a model (a fake one: the engine is not what is
measured). Sessions run in waves of ``concurrency``; after every ``sample_every``
sessions the benchmark records the process's resident memory, its threads, the
state directory's size and the sizes of nalar's per-session tables. The
journal keeps ``journal_max_sessions`` sessions (the sweep runs every
``gc_interval_s``), so the state directory is bounded too.

The JSON holds every sample and the figures a reader checks: resident memory
growth per 1,000 sessions after the warm-up, the highest thread count, and the
largest state directory.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TypedDict

import psutil
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from tqdm import tqdm

from ..runtime import Runtime

__all__ = ["bench_soak", "build_app"]


class _State(TypedDict, total=False):
    question: str
    answer: str


@tool
async def lookup(question: str) -> str:
    """Look the question up (a journaled tool call)."""
    await asyncio.sleep(0)
    return f"facts about {question}"


def build_app(model: Any) -> Any:
    """A one-node graph: the node calls the tool, then the model."""

    async def answer(state: _State) -> dict[str, Any]:
        facts = await lookup.ainvoke({"question": state["question"]})
        reply = await model.ainvoke(f"{state['question']}: {facts}")
        return {"answer": str(reply)}

    g = StateGraph(_State)
    g.add_node("answer", answer)
    g.add_edge(START, "answer")
    g.add_edge("answer", END)
    return g.compile()


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _sample(rt: Runtime, done: int, proc: psutil.Process, state_dir: Path) -> dict[str, Any]:
    return {
        "sessions": done,
        "rss_mib": round(proc.memory_info().rss / 2**20, 2),
        "threads": threading.active_count(),
        "state_dir_kib": round(_dir_bytes(state_dir) / 1024, 1),
        "graphs_kept": len(rt.sessions()),
        "controller_sessions": rt.plane.sessions_known(),
        "adapter_flows": rt.adapters.recorder.sessions(),
        "calls_in_flight": rt.calls.in_flight(),
        "claims": len(rt.journal.claims),
    }


def bench_soak(sessions: int = 10_000, *, concurrency: int = 50, sample_every: int = 500,
               journal_max_sessions: int = 1000, gc_interval_s: float = 1.0, progress: bool = True,
               **runtime_kwargs: Any) -> dict[str, Any]:
    """Serve ``sessions`` sessions and sample the process as it goes.

    Args:
        sessions: Sessions to run.
        concurrency: Sessions in flight at once.
        sample_every: Sessions between two samples.
        journal_max_sessions: ``nalar.journal-max-sessions`` of the Runtime.
        gc_interval_s: ``nalar.journal-gc-interval`` of the Runtime.
        progress: Show a progress bar.
        **runtime_kwargs: Passed to :class:`~nalar_plugin.Runtime`.

    Returns:
        The JSON summary.
    """
    proc = psutil.Process(os.getpid())
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nalar-soak-") as tmp:
        state_dir = Path(tmp) / "state"
        with Runtime(state_dir=str(state_dir), journal_max_sessions=journal_max_sessions,
                     journal_gc_interval=gc_interval_s, **runtime_kwargs) as rt:
            model = FakeListChatModel(responses=["ok"])
            app = build_app(model)
            handler = rt.callback()

            async def one(i: int) -> None:
                cfg: Any = {"callbacks": [handler], "configurable": {"thread_id": f"soak-{i}"}}
                await app.ainvoke({"question": f"q{i}"}, cfg)

            async def drive() -> None:
                with tqdm(total=sessions, desc="sessions", disable=not progress, unit="session", leave=False) as bar:
                    samples.append(_sample(rt, 0, proc, state_dir))
                    t0 = time.perf_counter()
                    for start in range(0, sessions, concurrency):
                        batch = range(start, min(sessions, start + concurrency))
                        await asyncio.gather(*(one(i) for i in batch))
                        bar.update(len(batch))
                        done = batch[-1] + 1
                        if done % sample_every == 0 or done == sessions:
                            sample = _sample(rt, done, proc, state_dir)
                            sample["elapsed_s"] = round(time.perf_counter() - t0, 2)
                            samples.append(sample)

            asyncio.run(drive())
            # Commits of the last calls may still be queued: let them land, then look again.
            deadline = time.monotonic() + 60
            while rt.calls.in_flight() and time.monotonic() < deadline:
                time.sleep(0.05)
            # The figure below is read after one whole sweep that began once every session ended.
            swept = rt.state.sweeps
            while gc_interval_s and rt.state.sweeps < swept + 2 and time.monotonic() < deadline:
                time.sleep(gc_interval_s / 4)
            final = _sample(rt, sessions, proc, state_dir)
            final["elapsed_s"] = samples[-1].get("elapsed_s")
            final["drained"] = True
            samples.append(final)
            journal_sessions = len(rt.journal.sessions())
    warm = [s for s in samples if s["sessions"] >= min(2000, sessions // 5)]
    growth = None
    if len(warm) >= 2 and warm[-1]["sessions"] > warm[0]["sessions"]:
        growth = (warm[-1]["rss_mib"] - warm[0]["rss_mib"]) / (warm[-1]["sessions"] - warm[0]["sessions"]) * 1000
    return {
        "benchmark": "soak",
        "sessions": sessions,
        "concurrency": concurrency,
        "journal_max_sessions": journal_max_sessions,
        "rss_mib_first": samples[0]["rss_mib"],
        "rss_mib_last": samples[-1]["rss_mib"],
        "rss_growth_mib_per_1000_sessions_after_warmup": None if growth is None else round(growth, 3),
        "threads_max": max(s["threads"] for s in samples),
        "state_dir_kib_max": max(s["state_dir_kib"] for s in samples),
        "state_dir_kib_last": samples[-1]["state_dir_kib"],
        "journal_sessions_at_end": journal_sessions,
        "tables_at_end": {k: samples[-1][k] for k in ("graphs_kept", "controller_sessions", "adapter_flows",
                                                       "calls_in_flight", "claims")},
        "samples": samples,
    }
