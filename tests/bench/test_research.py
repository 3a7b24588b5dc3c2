"""The research benchmark: same requests and answers for both systems, complete JSON, content prefix keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from nalar_plugin.bench.replicas import ResearchScript, make_schedule, schedule_digest
from nalar_plugin.bench.research import KNEE_DEFINITION, ResearchSettings, bench_research, format_table, knee
from nalar_plugin.testing import EngineConfig, EngineServer, SimulatedEngine

# Tiny and fast: a couple of seconds of arrivals on a fast clock, every system on one seed.
TINY = ResearchSettings(rps=(2.0,), duration_s=2.0, replicas=2, seed=3, time_scale=0.05, drain_s=60.0,
                        keep_answers=True, progress=False)

RUN_FIELDS = {
    "benchmark", "system", "rps_offered", "duration_s", "seed", "time_scale", "replicas", "capacity", "routing",
    "schedule_sha256", "requests_scheduled", "requests_issued", "completed", "failed", "max_start_lag_s",
    "mean_start_lag_s", "latency_s", "rps_completed", "calls", "calls_per_s", "wall_s", "driver_cpu_s",
    "driver_cpu_per_wall", "driver_cpu_per_call_us", "server_requests", "prefix_cache_hit_rate", "replica_metrics",
    "answers_sha256", "answers", "errors", "nalar",
}


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    """Both systems on the tiny schedule, each in its own driver and replica processes."""
    return bench_research(TINY)


def test_both_systems_give_the_same_answers(tiny: dict[str, Any]) -> None:
    base, nalar = tiny["runs"]["langgraph"][0], tiny["runs"]["nalar"][0]
    assert base["answers"] and base["answers"] == nalar["answers"]
    assert all(report.startswith("Report:") for _, report in base["answers"])
    assert tiny["checks"]["answers_identical"] is True


def test_every_request_completes(tiny: dict[str, Any]) -> None:
    for system in ("langgraph", "nalar"):
        run = tiny["runs"][system][0]
        assert run["requests_scheduled"] == run["requests_issued"] == run["completed"] > 0, run["errors"]
        assert run["failed"] == 0 and run["errors"] == []
        # plan + (search + summary) per topic + report, all counted, none failed
        calls = run["calls"]
        assert calls["errors"] == 0 and calls["model"] > 2 * run["completed"]
        assert calls["tool"] == calls["model"] - 2 * run["completed"]
        assert run["server_requests"] == calls["model"]


def test_the_json_has_every_field(tiny: dict[str, Any]) -> None:
    assert {"benchmark", "seed", "time_scale", "duration_s", "replicas", "capacity", "systems", "rps", "units", "runs",
            "ratios", "knee", "checks", "host"} <= set(tiny)
    for system in ("langgraph", "nalar"):
        run = tiny["runs"][system][0]
        assert RUN_FIELDS <= set(run), RUN_FIELDS - set(run)
        assert set(run["latency_s"]) == {"mean", "p50", "p95", "p99", "max"}
        assert len(run["replica_metrics"]) == TINY.replicas
    assert tiny["runs"]["nalar"][0]["nalar"]["ticks"] > 0 and tiny["runs"]["langgraph"][0]["nalar"] is None
    (ratio,) = tiny["ratios"]
    assert ratio["rps"] == 2.0 and set(ratio["nalar/langgraph"]) == {"mean", "p99", "calls_per_s", "driver_cpu_per_call"}
    assert tiny["knee"]["definition"] == KNEE_DEFINITION and "langgraph_rps" in tiny["knee"]
    assert "nalar" in format_table(tiny)


def test_the_schedule_is_the_same_for_both_systems(tiny: dict[str, Any]) -> None:
    jobs = make_schedule(TINY.seed, 2.0, TINY.duration_s)
    assert jobs == make_schedule(TINY.seed, 2.0, TINY.duration_s)
    assert jobs != make_schedule(TINY.seed + 1, 2.0, TINY.duration_s)
    assert all(a.at_s < b.at_s for a, b in zip(jobs, jobs[1:])) and jobs[-1].at_s < TINY.duration_s
    digests = {run["schedule_sha256"] for runs in tiny["runs"].values() for run in runs}
    assert digests == {schedule_digest(jobs)}
    assert tiny["checks"]["schedule_identical"] is True


def test_the_model_script_is_deterministic() -> None:
    script = ResearchScript(seed=0)
    question = make_schedule(0, 1.0, 10.0)[0].question
    ask = [SystemMessage("s"), HumanMessage(question), HumanMessage("Plan the research: list the topics.")]
    plan = script(ask)
    assert plan == ResearchScript(seed=0)(ask) and plan != ResearchScript(seed=1)(ask)
    topics = [line for line in plan.splitlines()[1:] if line[0].isdigit()]
    assert 2 <= len(topics) <= 6


def _chat(server: EngineServer) -> ChatOpenAI:
    return ChatOpenAI(model="e", base_url=server.url, api_key="x", max_retries=0)  # type: ignore[arg-type]


def _cached(reply: Any) -> int:
    return int(reply.response_metadata["token_usage"]["prompt_tokens_details"]["cached_tokens"])


def test_a_content_derived_prefix_key_hits_the_cache() -> None:
    lead = [SystemMessage("You are terse."), HumanMessage("A long shared question. " * 50)]
    engine = SimulatedEngine("e", EngineConfig(time_scale=0.001))
    with EngineServer(engine, script=["ok"]) as server:
        llm = _chat(server)
        assert _cached(llm.invoke([*lead, HumanMessage("first follow-up")])) == 0
        assert _cached(llm.invoke([*lead, HumanMessage("second follow-up")])) > 0  # same leading messages
        assert _cached(llm.invoke([lead[0], HumanMessage("another question")])) == 0
    off = SimulatedEngine("off", EngineConfig(time_scale=0.001))
    with EngineServer(off, script=["ok"], content_prefix=False) as server:
        llm = _chat(server)
        llm.invoke(lead)
        assert _cached(llm.invoke(lead)) == 0  # no session and no content key: nothing cached


def _run(rps: float, failed: int, mean: float | None) -> dict[str, Any]:
    return {"rps_offered": rps, "failed": failed, "latency_s": {"mean": mean}}


def test_the_knee_is_the_last_rate_under_twice_the_lowest_mean() -> None:
    assert knee([_run(4, 0, 1.0), _run(8, 0, 1.9), _run(12, 0, 2.5), _run(16, 0, 1.5)]) == 8.0
    assert knee([_run(8, 1, 1.2), _run(4, 0, 1.0)]) == 4.0
    assert knee([_run(4, 2, 1.0)]) is None


def test_the_plot_is_written(tiny: dict[str, Any], tmp_path: Path) -> None:
    from nalar_plugin.bench.research import plot_research

    path = tmp_path / "research.png"
    plot_research(tiny, str(path))
    assert path.stat().st_size > 1000
