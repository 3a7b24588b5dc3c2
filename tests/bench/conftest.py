"""Small traces for the benchmark tests: correctness on a tiny trace, not speed."""

from __future__ import annotations

from typing import Any

from nalar_plugin.bench.runner import RunResult, RunSettings, run

# Short traces on a fast clock; every system runs the same one.
TINY: dict[str, dict[str, Any]] = {
    "financial": {"rps": 0.6, "duration_s": 12.0, "time_scale": 0.01},
    "router": {"rps": 1.0, "duration_s": 8.0, "time_scale": 0.02},
    "swe": {"rps": 0.2, "duration_s": 12.0, "time_scale": 0.02},
}


def tiny_run(workload: str, system: str, **overrides: Any) -> RunResult:
    """Run the tiny trace of ``workload`` on ``system`` (seed 1, no progress bar)."""
    settings = {**TINY[workload], "seed": 1, "progress": False, **overrides}
    return run(RunSettings(workload, system, **settings))
