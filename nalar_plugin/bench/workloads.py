"""The three workloads and their default settings, by name.

Defaults are one fixed scale-down of the paper's set-up for a 2-core host (see
``docs/benchmarks.md``): engines keep the documented performance model except
``max_batch``, which is 2 instead of 16, so that a farm at its knee asks the host
for about a hundred calls per wall second rather than a thousand; every system
runs on the same farm, so the comparison stays like for like. ``time_scale`` makes one
Dask round trip (about 10 ms of wall time, whatever the scale) at most about 5 % of
the workload's typical model call: 0.1 for conversation-sized calls (~2 s), 0.3 for
code-sized ones (~0.6 s).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from . import financial, router, swe
from .env import Env
from .trace import Trace

__all__ = ["WORKLOADS", "Workload", "workload"]


@dataclass(frozen=True)
class Workload:
    """One workload: how to make its trace, its app and its clients, and its defaults.

    Attributes:
        name: ``financial``, ``router`` or ``swe``.
        make_trace: ``(seed, rps, duration_s) -> Trace``.
        build_app: ``(env) -> app`` (the compiled LangGraph graph, or the futures workflow).
        run_client: ``async (app, client, env) -> None``; records each request with ``env.record``.
        tools: Tool names of the workload.
        engines: Engines of the farm.
        max_batch: Batch slots per engine.
        time_scale: Wall seconds per model second.
        duration_s: Model seconds of arrivals.
        rps: Offered rates of the standard sweep.
        policy: The nalar system's policy: the built-in policies that act on this
            workload's levers (names joined by ``+``).
        apps: The app variants (``graph``; ``futures`` too for ``swe``).
        unit: What a request is, for the report.
    """

    name: str
    make_trace: Callable[[int, float, float], Trace]
    build_app: Callable[[Env], Any]
    run_client: Callable[[Any, Any, Env], Any]
    tools: tuple[str, ...]
    engines: int
    max_batch: int
    time_scale: float
    duration_s: float
    rps: tuple[float, ...]
    policy: str = "nalar"
    apps: tuple[str, ...] = ("graph",)
    unit: str = "request"


WORKLOADS: dict[str, Workload] = {
    "financial": Workload(
        "financial", financial.make_trace, financial.build_app, financial.run_client, financial.TOOLS,
        engines=10, max_batch=2, time_scale=0.1, duration_s=300.0, rps=(0.5, 0.75, 1.0, 1.25, 1.5),
        policy="least_loaded+migrate", unit="turn",
    ),
    "router": Workload(
        "router", router.make_trace, router.build_app, router.run_client, router.TOOLS,
        engines=7, max_batch=2, time_scale=0.3, duration_s=400.0, rps=(1.0, 1.5, 2.0, 2.5),
        policy="least_loaded+reallocate:horizon_ticks=30,margin=0.5",
    ),
    "swe": Workload(
        "swe", swe.make_trace, swe.build_app, swe.run_client, swe.TOOLS,
        engines=6, max_batch=2, time_scale=0.3, duration_s=120.0, rps=(0.1, 0.2, 0.3),
        policy="least_loaded+srtf",
        apps=("graph", "futures"), unit="job",
    ),
}


def workload(name: str) -> Workload:
    """The workload ``name``.

    Raises:
        ConfigError: No workload has this name.
    """
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ConfigError(f"no workload {name!r}; choose one of {sorted(WORKLOADS)}") from None
