"""nalar's metrics on Dask's Prometheus endpoint, scraped and parsed with prometheus_client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

import nalar_plugin as nl
from nalar_plugin.errors import CallVetoedError, UnsatisfiableResourcesError
from nalar_plugin.monitor import METRICS, Monitor
from tests._operators import Engine, Gate, operators_runtime, scrape, summarise, total, wait_until


@nl.agent(resources={"NO-SUCH-RESOURCE": 1})
def needs_what_no_worker_has(x: int) -> int:
    return x


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nl.Runtime]:
    with operators_runtime(str(tmp_path_factory.mktemp("metrics"))) as runtime:
        yield runtime


def test_every_family_is_there(rt: nl.Runtime) -> None:
    summarise(0).result()
    rt.deploy("limited", [Engine("limited")], rpm=600, burst_s=0.1)  # 10 calls a second, a burst of 1
    for f in [rt.call("limited", "generate", i, 0.0) for i in range(3)]:
        f.result()
    with pytest.raises(CallVetoedError):
        rt.call("llm", "generate", "refuse").result()
    samples = wait_until(lambda: (s := scrape(rt)) and total(s, "nalar_calls_total") >= 2
                         and total(s, "nalar_policy_decisions_total") >= 1 and s, what="a count and a decision")
    names = {n for n, _ in samples}
    for family in METRICS:
        assert any(n == family or n.startswith(family + "_") for n in names), family
    assert all(dict(labels)["driver"] == rt.token for _, labels in samples)


def test_rate_limit_waits(rt: nl.Runtime) -> None:
    if "limited" not in rt.components.names():
        rt.deploy("limited", [Engine("limited")], rpm=600, burst_s=0.1)
    for f in [rt.call("limited", "generate", i, 0.0) for i in range(3)]:
        f.result()
    stats = rt.stats()["rate_limits"]["limited"]
    samples = scrape(rt)
    assert stats["limited"] >= 2  # a burst of one: the others waited for the bucket
    assert total(samples, "nalar_ratelimited_calls_total", component="limited") == stats["limited"]
    assert total(samples, "nalar_ratelimit_wait_seconds_total", component="limited") == pytest.approx(stats["wait_s"])
    assert stats["wait_s"] >= 0.1 * (stats["limited"] - 1)


def test_call_counts_match_the_calls_made(rt: nl.Runtime) -> None:
    before = scrape(rt)
    with rt.session("m1"):
        futs = [rt.call("llm", "generate", i, 0.02) for i in range(12)]
    stubs = [summarise(100 + i) for i in range(5)]
    for f in futs + stubs:
        f.result()
    vetoed = [rt.call("llm", "generate", "refuse") for _ in range(3)]
    for f in vetoed:
        with pytest.raises(CallVetoedError):
            f.result()
    fut = needs_what_no_worker_has(1)
    with pytest.raises(UnsatisfiableResourcesError):
        fut.result()

    def delta(name: str, **labels: str) -> float:
        return total(scrape(rt), name, **labels) - total(before, name, **labels)

    wait_until(lambda: delta("nalar_calls_total", component="llm", outcome="finished") == 12, what="12 llm calls")
    assert delta("nalar_calls_total", component="summarise", outcome="finished") == 5
    assert delta("nalar_calls_total", component="llm", outcome="rejected") == 3
    assert delta("nalar_admission_rejections_total", component="llm", reason="veto") == 3
    assert delta("nalar_admission_rejections_total", component="needs_what_no_worker_has", reason="resources") == 1
    assert delta("nalar_calls_total", component="llm", outcome="error") == 0
    # Latency: one observation per finished call, on the instance that ran it.
    assert delta("nalar_call_latency_seconds_count", component="llm") == 12
    after = scrape(rt)
    per_instance = {dict(lab)["instance"]: v for (n, lab), v in after.items()
                    if n == "nalar_call_latency_seconds_count" and dict(lab)["component"] == "llm"}
    assert set(per_instance) == {"llm/0", "llm/1"}
    inf = total(after, "nalar_call_latency_seconds_bucket", component="llm", le="+Inf")
    assert inf == sum(per_instance.values())
    assert total(after, "nalar_call_latency_seconds_sum", component="llm") >= 0.02 * sum(per_instance.values())
    # The completed counts of the local controllers agree.
    stats = rt.stats()["instances"]
    assert per_instance == {i: float(stats[i]["completed"]) for i in ("llm/0", "llm/1")}


def test_journal_commit_latency(rt: nl.Runtime) -> None:
    for i in range(4):
        summarise(200 + i).result()
    samples = scrape(rt)
    transactions, units = rt.journal.commit_counts
    assert transactions >= 1 and units >= 4
    assert total(samples, "nalar_journal_commit_seconds_count") == rt.journal.commit_seconds.count
    assert total(samples, "nalar_journal_commit_seconds_count") >= 1
    assert total(samples, "nalar_journal_commit_seconds_bucket", le="+Inf") == \
        total(samples, "nalar_journal_commit_seconds_count")
    assert total(samples, "nalar_journal_commit_seconds_sum") > 0


def test_decisions_by_type(rt: nl.Runtime) -> None:
    with rt.session("m-dec"):
        futs = [rt.call("llm", "generate", i, 0.05) for i in range(6)]
    for f in futs:
        f.result()
    counts = wait_until(lambda: rt.controller.decision_counts.get("Migrate") and dict(rt.controller.decision_counts),
                        what="a migration")
    samples = scrape(rt)
    for kind in ("SetPriority", "Migrate", "RouteWeights"):
        assert total(samples, "nalar_policy_decisions_total", type=kind) >= 1
    assert total(samples, "nalar_policy_decisions_total") >= sum(counts.values())
    assert total(samples, "nalar_ticks_total") >= 1


def test_queue_and_in_flight_gauges(rt: nl.Runtime) -> None:
    gate = Gate()
    rt.deploy("gated", [gate], capacity=2)
    futs = [rt.call("gated", "wait", i) for i in range(6)]
    try:
        def held() -> dict | None:  # type: ignore[type-arg]
            s = scrape(rt)
            return s if total(s, "nalar_in_flight", component="gated") == 2 else None

        samples = wait_until(held, what="two gated calls in flight")
        queued = total(samples, "nalar_queue_length", component="gated") + \
            total(samples, "nalar_shared_queue_length", component="gated")
        assert queued == 4
        assert total(samples, "nalar_capacity", component="gated", instance="gated/0") == 2
        assert total(samples, "nalar_calls_in_flight") >= 6
        assert total(samples, "nalar_active_sessions") >= 1
    finally:
        gate.open.set()
    assert [f.result() for f in futs] == list(range(6))
    samples = wait_until(lambda: (s := scrape(rt)) and total(s, "nalar_in_flight", component="gated") == 0 and s,
                         what="the gauges to fall back")
    assert total(samples, "nalar_calls_total", component="gated", outcome="finished") == 6


def test_the_hot_path_hook_is_cheap() -> None:
    controller = SimpleNamespace(last_snapshot=None, recent=[], decision_counts={}, ticks=0)
    monitor = Monitor("d", controller)
    call = SimpleNamespace(context=SimpleNamespace(component="c"), instance="c/0", enqueued_at=1.0, finished_at=1.2)
    n = 20_000
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            monitor.nalar_call_finished(call, "finished", None)
        best = min(best, (time.perf_counter() - t0) / n)
    assert best < 10e-6, f"{best * 1e6:.2f} µs per call"
    report = monitor.report()
    assert report["calls"] == {"c": {"finished": 3 * n}}
    assert sum(report["latency"]["c/0"]["counts"]) == 3 * n


def test_a_refused_input_is_counted_once(rt: nl.Runtime) -> None:
    before = scrape(rt)
    refused = rt.call("llm", "generate", "refuse")
    dependent = summarise(refused)  # fails with its input's error, without being refused itself
    with pytest.raises(CallVetoedError):
        dependent.result()

    def delta(name: str, **labels: str) -> float:
        return total(scrape(rt), name, **labels) - total(before, name, **labels)

    wait_until(lambda: delta("nalar_calls_total", component="summarise", outcome="error") == 1, what="the dependent")
    assert delta("nalar_admission_rejections_total", reason="veto") == 1
    assert delta("nalar_calls_total", component="llm", outcome="rejected") == 1
    assert delta("nalar_calls_total", component="summarise", outcome="rejected") == 0
