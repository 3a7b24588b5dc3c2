"""Every workload on every system: every request completes and nalar answers as the baseline does."""

from __future__ import annotations

import pytest

from nalar_plugin.bench.runner import RunResult, RunSettings
from nalar_plugin.errors import ConfigError

from .conftest import tiny_run

REQUIRED = {"workload", "system", "policy", "rps_offered", "rps_completed", "requests", "completed", "failed",
            "latency_s", "makespan_s", "lower_bound_s", "per_engine_load_imbalance", "control", "seed", "time_scale"}


def _check(result: RunResult) -> None:
    summary = result.summary
    assert REQUIRED <= set(summary)
    assert summary["requests"] > 0 and summary["completed"] == summary["requests"] and summary["failed"] == 0
    assert summary["errors"] == []
    lat = summary["latency_s"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    # Nobody beats the critical path of the engine model (the bound is on the mean).
    assert lat["mean"] >= 0.95 * summary["lower_bound_s"]
    assert summary["per_engine_load_imbalance"] >= 1.0
    assert summary["breakdown"]["model_calls"] > 0
    # Each request took at least its critical path on an idle farm: the bound is a bound.
    ts = summary["time_scale"]
    for rec in result.records:
        assert (rec.end - rec.start) / ts >= result.critical_paths[rec.request] * (1 - 1e-3), rec.request


@pytest.mark.parametrize("workload", ["financial", "router", "swe"])
def test_nalar_and_fcfs_answer_every_request_as_langgraph_does(workload: str) -> None:
    base = tiny_run(workload, "langgraph")
    _check(base)
    assert base.summary["control"]["ticks"] == 0 and base.summary["policy"] == "client-side router"
    for system in ("nalar", "fcfs"):
        other = tiny_run(workload, system, app="graph")
        _check(other)
        assert other.answers() == base.answers()
        assert other.summary["control"]["ticks"] > 0 and other.summary["control"]["futures_max"] >= 1
        # Same trace, same work: the engines generated the same calls.
        assert other.summary["breakdown"]["model_calls"] == base.summary["breakdown"]["model_calls"]
        assert other.summary["breakdown"]["tool_calls"] == base.summary["breakdown"]["tool_calls"]


def test_swe_futures_workflow_answers_as_the_langgraph_app() -> None:
    base = tiny_run("swe", "langgraph")
    futures = tiny_run("swe", "nalar")  # the default app of nalar on swe
    assert futures.summary["app"] == "futures"
    _check(futures)
    assert futures.answers() == base.answers()
    assert futures.summary["breakdown"]["model_calls"] == base.summary["breakdown"]["model_calls"]


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="no workload"):
        RunSettings("nope", "nalar", 1.0).resolved()
    with pytest.raises(ConfigError, match="no system"):
        RunSettings("swe", "ray", 1.0).resolved()
    with pytest.raises(ConfigError, match="no 'futures' app"):
        RunSettings("router", "nalar", 1.0, app="futures").resolved()
    with pytest.raises(ConfigError, match="futures workflow runs on nalar"):
        RunSettings("swe", "langgraph", 1.0, app="futures").resolved()
    assert RunSettings("swe", "fcfs", 1.0).resolved().policy == "fcfs"
