"""Traces: seeded, independent of the system and of the offered rate; the static split; the bound."""

from __future__ import annotations

import json
import pickle

import pytest

from nalar_plugin.bench import router, swe
from nalar_plugin.bench.trace import ModelStep, ToolStep, TraceBook, apportion, poisson_arrivals, service_s
from nalar_plugin.bench.workloads import WORKLOADS
from nalar_plugin.errors import ConfigError
from nalar_plugin.testing import EngineConfig


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_same_seed_same_trace_and_request_content_does_not_depend_on_the_rate(name: str) -> None:
    make = WORKLOADS[name].make_trace
    a, b = make(3, 0.5, 60.0), make(3, 0.5, 60.0)
    assert [c.arrival_s for c in a.clients] == [c.arrival_s for c in b.clients]
    assert a.critical_paths == b.critical_paths
    assert sorted(s.key for s in a.book.model_steps()) == sorted(s.key for s in b.book.model_steps())
    # At a higher rate there are more requests, and the ones with the same id are the same
    # (a routed request's branch follows the phase of its arrival, so compare its classifier call).
    busier = make(3, 1.0, 60.0)
    shared = set(a.critical_paths) & set(busier.critical_paths)
    assert shared
    if name == "router":
        size = [(a.book.model(f"{k}/classify").prompt, busier.book.model(f"{k}/classify").prompt) for k in shared]
        assert all(x == y for x, y in size)
    else:
        assert all(a.critical_paths[k] == busier.critical_paths[k] for k in shared)
    # Nested arrivals: the same requests, the arrival times scaled by the rate.
    arrivals = {c.request if hasattr(c, "request") else c.session: c.arrival_s for c in busier.clients}
    for c in a.clients:
        assert arrivals[c.request if hasattr(c, "request") else c.session] == pytest.approx(c.arrival_s / 2)
    other = make(4, 0.5, 60.0)
    assert [c.arrival_s for c in other.clients] != [c.arrival_s for c in a.clients]


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_model_step_is_served_by_an_agent_type_of_the_trace(name: str) -> None:
    trace = WORKLOADS[name].make_trace(0, 0.5, 60.0)
    steps = list(trace.book.model_steps())
    assert steps and all(s.agent in trace.agents for s in steps)
    assert all(0 <= s.cached <= s.prompt and s.output > 0 for s in steps)
    # A cached prefix is only ever claimed for a session (something to keep it under).
    assert all(s.session is not None for s in steps if s.cached)
    assert trace.lower_bound_s() > 0
    assert set(trace.demand(EngineConfig())) == set(trace.agents)


def test_service_time_is_prefill_of_the_uncached_prompt_plus_decode_at_batch_one() -> None:
    cfg = EngineConfig()  # 60 ms per 1k prefill, 15 + 0.5 * batch ms per token
    step = ModelStep("k", "a", prompt=3000, output=100, session="s", cached=1000)
    assert service_s(step, cfg) == pytest.approx(0.060 * 2 + 100 * 0.0155)


def test_poisson_arrivals_have_the_offered_rate() -> None:
    times = poisson_arrivals(1, "w", 5.0, 2000.0)
    assert times == sorted(times) and all(0 <= t < 2000.0 for t in times)
    assert len(times) == pytest.approx(10_000, rel=0.05)
    with pytest.raises(ConfigError):
        poisson_arrivals(1, "w", 0.0, 10.0)


@pytest.mark.parametrize("engines", [3, 4, 7, 10, 23])
def test_apportion_splits_every_engine_in_proportion_to_demand(engines: int) -> None:
    demand = {"a": 6.0, "b": 3.0, "c": 1.0}
    split = apportion(demand, engines)
    assert sum(split.values()) == engines and min(split.values()) >= 1
    for name, share in demand.items():  # largest remainder: within one engine of the exact share
        assert abs(split[name] - max(1.0, share / 10.0 * engines)) <= 1.0
    assert split["a"] >= split["b"] >= split["c"]


def test_apportion_needs_an_engine_per_agent_type() -> None:
    with pytest.raises(ConfigError, match="cannot serve 3 agent types"):
        apportion({"a": 1.0, "b": 1.0, "c": 1.0}, 2)


def test_book_finds_steps_by_kind_and_pickles_by_reference() -> None:
    book = TraceBook()
    book.add(ModelStep("m", "a", 10, 5))
    book.add(ToolStep("t", "search", 0.5, "found"))
    assert book.model("m").output == 5 and book.tool("t").content == "found"
    with pytest.raises(ConfigError):
        book.model("t")
    with pytest.raises(ConfigError):
        book.add(ModelStep("m", "a", 1, 1))
    assert pickle.loads(pickle.dumps(book)) is book


def test_swe_barrier_path_is_the_plan_with_every_step_waiting_for_its_slowest_sibling() -> None:
    trace = swe.make_trace(3, 0.2, 60.0)
    book = trace.book
    cfg = EngineConfig()

    def subtasks(job: str) -> list[str]:
        return [s["id"] for s in json.loads(str(book.model(f"{job}/plan").content))["subtasks"]]

    def attempts(sub: str) -> list[tuple[float, float]]:  # (develop, test) per attempt of a coded subtask
        out, a = [], 0
        while f"{sub}/a{a}/ask" in book:
            k = f"{sub}/a{a}"
            out.append((service_s(book.model(f"{k}/ask"), cfg) + book.tool(f"{k}/docs").latency_s
                        + service_s(book.model(f"{k}/write"), cfg), service_s(book.model(f"{k}/test"), cfg)))
            a += 1
        return out

    flat = [c.request for c in trace.clients if all(f"{s}/a0/ask" in book for s in subtasks(c.request))]
    assert flat  # jobs without a sub-job, checked by hand
    for job in flat:
        rounds = [attempts(s) for s in subtasks(job)]
        barrier = service_s(book.model(f"{job}/plan"), cfg) + sum(
            max(r[a][0] for r in rounds if len(r) > a) + max(r[a][1] for r in rounds if len(r) > a)
            for a in range(max(map(len, rounds))))
        assert trace.info["barrier_path_s"][job] == pytest.approx(barrier, abs=1e-3)
    for job, cp in trace.critical_paths.items():
        assert trace.info["barrier_path_s"][job] >= cp - 1e-3  # stored to the millisecond
    mean_cp = sum(trace.critical_paths.values()) / len(trace.critical_paths)
    assert trace.info["barrier_path_s_mean"] > mean_cp  # siblings differ, so the barrier costs on average


def test_router_phase_demand_adds_up_to_the_trace_demand_and_follows_the_branch_mix() -> None:
    trace = router.make_trace(1, 1.5, 200.0)
    phases = trace.info["phase_demand"]
    span = 200.0 / len(router.PHASES)
    for agent, total in trace.demand(EngineConfig()).items():
        assert sum(p[agent] for p in phases) * span == pytest.approx(total, abs=len(phases) * span * 5e-4)  # rounding
    # 90 % of requests go to the coding agent in the second phase, 10 % in the third.
    assert phases[1]["coder"] > 4 * phases[1]["chat"] and phases[2]["chat"] > 4 * phases[2]["coder"]
