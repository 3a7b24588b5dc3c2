"""The capacity bound: the critical paths with the farm's slots counted, below every system."""

from __future__ import annotations

import pytest

from nalar_plugin.bench.bound import capacity_bound, capacity_bound_of, integral_of_max, srpt_counts
from nalar_plugin.bench.seeds import merge_seeds
from nalar_plugin.bench.workloads import workload
from nalar_plugin.errors import ConfigError

from .conftest import tiny_run


def test_srpt_serves_the_shortest_remaining_work_first_and_counts_what_is_left() -> None:
    # At 0 a 10 s and a 1 s job; the short one first; at 5 a 2 s job preempts the long one.
    assert srpt_counts([(0.0, 10.0), (0.0, 1.0), (5.0, 2.0)], speed=1.0) == [
        (0.0, 2), (1.0, 1), (5.0, 2), (7.0, 1), (13.0, 0)]
    # An idle gap between jobs counts zero; twice the speed halves every service.
    assert srpt_counts([(0.0, 1.0), (5.0, 1.0)], speed=2.0) == [(0.0, 1), (0.5, 0), (5.0, 1), (5.5, 0)]
    assert srpt_counts([(3.0, 0.0)], speed=1.0) == []  # no work, no job
    with pytest.raises(ConfigError, match="speed"):
        srpt_counts([(0.0, 1.0)], speed=0.0)


def test_the_integral_takes_the_larger_curve_at_every_instant() -> None:
    a = [(0.0, 1), (4.0, 0)]
    b = [(1.0, 3), (2.0, 0)]
    assert integral_of_max(a, b) == pytest.approx(1 * 1 + 3 * 1 + 1 * 2)
    assert integral_of_max(a) == pytest.approx(4.0)


def test_a_large_farm_leaves_the_critical_paths_and_a_small_one_adds_its_queueing() -> None:
    trace = workload("router").make_trace(1, 6.0, 8.0)
    big = capacity_bound(trace, engines=1000, max_batch=16)
    small = capacity_bound(trace, engines=3, max_batch=1)
    assert big["mean_s"] == pytest.approx(trace.lower_bound_s(), abs=1e-3) and big["capacity_share"] == 0
    assert small["mean_s"] > 2 * small["path_mean_s"] and small["slots"] == 3
    with pytest.raises(ConfigError, match="engines"):
        capacity_bound(trace, engines=0, max_batch=1)


@pytest.mark.parametrize(("name", "settings"), [
    ("router", {"rps": 6.0, "duration_s": 8.0, "engines": 3, "max_batch": 1}),
    # Sessions: the bound is taken over sessions, with their think time taken out again.
    ("financial", {"rps": 4.0, "duration_s": 12.0, "engines": 4, "max_batch": 1}),
])
def test_no_system_beats_the_bound_on_a_farm_too_small_for_its_trace(name: str, settings: dict[str, float]) -> None:
    rows = [tiny_run(name, system, **settings).summary for system in ("langgraph", "nalar")]
    bound = capacity_bound_of(rows[0])
    assert bound == capacity_bound_of(rows[1])  # one trace, one farm
    # The row carries it; a row from before it did is given it from its trace, made again.
    assert bound == rows[0]["capacity_bound_s"]
    assert capacity_bound_of({k: v for k, v in rows[0].items() if k != "capacity_bound_s"}) == bound
    assert bound > 1.5 * rows[0]["lower_bound_s"]  # the farm's capacity binds
    for row in rows:
        assert row["completed"] == row["requests"]
        assert row["latency_s"]["mean"] >= bound
    # nalar bench seeds reports the most of the excess any system could remove on this farm.
    merged = merge_seeds([{"workload": name, "seed": 1, "runs": {"langgraph": [rows[0]], "nalar": [rows[1]]}}])
    most = merged["systems"]["nalar"][0]["mean_removable"]["mean"]
    base, floor = rows[0]["latency_s"]["mean"], rows[0]["lower_bound_s"]
    assert most == pytest.approx((base - bound) / (base - floor), abs=1e-3) and 0 < most < 1


def test_a_row_without_its_farm_has_no_bound() -> None:
    with pytest.raises(ConfigError, match="farm or trace"):
        capacity_bound_of({"workload": "router", "seed": 0})
    row = {"workload": "router", "seed": 0, "rps_offered": 1.0, "duration_s": 8.0, "engines": 3, "max_batch": 1}
    with pytest.raises(ConfigError, match="barrier"):
        capacity_bound_of(row, barrier=True)
