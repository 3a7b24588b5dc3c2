"""``nalar bench agent``: what serving a ``create_agent`` app costs the driver, per call.

The app (:mod:`nalar_plugin.bench.agent_app`): ``langchain.agents.create_agent``
on a scripted chat model (each run asks for one tool call, then answers) with one
``async`` tool; three calls per run (model, tool, model). Many runs go at once on
one event loop, plain LangGraph in one round, with ``rt.callback()`` on a Runtime
in the next, in turn, so the ratio is taken side by side. Every round runs in a
fresh process: the ``langgraph`` rounds never load nalar or Dask, as the app would
run without nalar.

Per system and round it reports the process's CPU time per call (all threads:
in threads mode the Dask scheduler and workers are in the process too), the wall
time, the time Python's cyclic garbage collector took per call (``gc.callbacks``)
and the objects it tracks at the end (frozen ones included, and counted apart),
and whether Dask was loaded in the round's process (``dask_loaded``, 0 or 1);
for ``langgraph:callback`` also the callback events its handler took in the round.
Systems: ``langgraph``, ``nalar``, ``nalar:gc-freeze=0`` (nalar without
:mod:`nalar_plugin.heap`), and ``langgraph:callback``: plain LangGraph with one
callback handler that only counts its events (:class:`~nalar_plugin.bench.agent_app.NoOpHandler`):
what LangChain's callback events cost any handler, a tracer's as much as nalar's.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from . import agent_app
from ..errors import ConfigError, NalarError

__all__ = ["SYSTEMS", "bench_agent"]

SYSTEMS = ("langgraph", "nalar", "nalar:gc-freeze=0", "langgraph:callback")


def _spec(system: str, runs: int, concurrency: int, runtime_kwargs: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"system": system, "runs": runs, "concurrency": concurrency}
    if not system.startswith("langgraph"):
        spec["runtime"] = dict(runtime_kwargs, gc_freeze=system != "nalar:gc-freeze=0")
    return spec


def _one_round(spec: dict[str, Any], timeout_s: float) -> dict[str, float]:
    out = subprocess.run([sys.executable, agent_app.__file__, json.dumps(spec)], capture_output=True, text=True,
                         timeout=timeout_s)
    if out.returncode != 0:
        raise NalarError(f"a {spec['system']} round of bench agent failed:\n{out.stderr[-3000:]}")
    row: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def bench_agent(runs: int = 1000, *, concurrency: int = 50, repeat: int = 3, systems: Sequence[str] = SYSTEMS[:2],
                progress: bool = True, timeout_s: float = 600.0, **runtime_kwargs: Any) -> dict[str, Any]:
    """Run the agent app on every system, ``repeat`` rounds in turn; driver CPU per call.

    Args:
        runs: Agent runs per round (three calls each), after a tenth as many to warm up.
        concurrency: Runs at once.
        repeat: Rounds of each system (the median counts).
        systems: Which of :data:`SYSTEMS`; the first is the baseline of the ratios.
        progress: Show a progress bar.
        timeout_s: How long one round may take.
        **runtime_kwargs: Passed to every :class:`~nalar_plugin.Runtime` (JSON values).

    Returns:
        A JSON-able dict: per system the medians over its rounds, every round, and each
        system's CPU per call as a ratio to the first system's (``cpu_ratio``), the
        median of the ratios of rounds run one after the other.

    Raises:
        ConfigError: An unknown system, or none.
    """
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise ConfigError(f"unknown system(s) {unknown} for bench agent; known: {', '.join(SYSTEMS)}")
    rounds: dict[str, list[dict[str, float]]] = {s: [] for s in systems}
    with tqdm(total=repeat * len(systems), desc="agent rounds", unit="round", disable=not progress,
              leave=False) as bar:
        for _ in range(repeat):
            for system in systems:
                rounds[system].append(_one_round(_spec(system, runs, concurrency, runtime_kwargs), timeout_s))
                bar.update(1)
    base = systems[0]
    return {
        "benchmark": "agent",
        "runs": runs,
        "calls_per_round": runs * agent_app.CALLS_PER_RUN,
        "concurrency": concurrency,
        "repeat": repeat,
        "baseline": base,
        "systems": {s: {k: round(statistics.median(r[k] for r in rows), 1) for k in rows[0]}
                    for s, rows in rounds.items()},
        "cpu_ratio": {s: round(statistics.median(
            r["cpu_per_call_us"] / b["cpu_per_call_us"] for r, b in zip(rounds[s], rounds[base], strict=True)), 3)
            for s in systems},
        "rounds": {s: [{k: round(v, 1) for k, v in r.items()} for r in rows] for s, rows in rounds.items()},
    }
