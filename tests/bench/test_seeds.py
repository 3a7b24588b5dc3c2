"""``nalar bench seeds``: one workload's comparisons on several seeds, merged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nalar_plugin.bench.seeds import merge_seeds, share_removed
from nalar_plugin.errors import ConfigError

from .conftest import TINY


def _nalar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nalar_plugin.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_share_removed_is_the_part_of_the_baselines_excess_over_the_floor_gone() -> None:
    assert share_removed(system=12.0, baseline=20.0, floor=10.0) == 0.8
    assert share_removed(system=10.0, baseline=20.0, floor=10.0) == 1.0
    assert share_removed(system=22.0, baseline=20.0, floor=10.0) == -0.2  # worse than the baseline
    assert share_removed(system=10.0, baseline=10.2, floor=10.0) is None  # nothing to remove
    assert share_removed(system=None, baseline=20.0, floor=10.0) is None


def test_seeds_merges_real_comparisons_into_ratios_shares_and_the_never_worse_check(tmp_path: Path) -> None:
    tiny = TINY["router"]
    files = []
    for seed in (1, 2):
        out = tmp_path / f"router-{seed}.json"
        proc = _nalar("bench", "compare", "router", "--rps", "1,2", "--systems", "langgraph,fcfs",
                      "--duration", str(tiny["duration_s"]), "--time-scale", str(tiny["time_scale"]),
                      "--seed", str(seed), "--json", str(out))
        assert proc.returncode == 0, proc.stderr
        files.append(out)
    merged_json, png = tmp_path / "merged.json", tmp_path / "merged.png"
    proc = _nalar("bench", "seeds", *map(str, files), "--json", str(merged_json), "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    assert "| rps | mean ratio |" in proc.stdout and "`fcfs` against `langgraph`, seeds 1, 2" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    merged = json.loads(merged_json.read_text())
    assert merged["seeds"] == [1, 2] and merged["rates"] == [1.0, 2.0]
    inputs = [json.loads(f.read_text()) for f in files]
    for i, row in enumerate(merged["systems"]["fcfs"]):
        ratios = [round(r["runs"]["fcfs"][i]["latency_s"]["p99"] / r["runs"]["langgraph"][i]["latency_s"]["p99"], 3)
                  for r in inputs]
        assert row["p99_ratio"]["seeds"] == ratios
        assert row["p99_ratio"]["min"] == min(ratios) and row["p99_ratio"]["max"] == max(ratios)
        assert row["worst_ratio"] >= max(ratios)
        assert row["never_worse"] == (row["worst_ratio"] <= 1.02)
        assert row["completed"]
    assert merged["never_worse"]["fcfs"] == all(r["never_worse"] for r in merged["systems"]["fcfs"])


def test_seeds_refuses_what_cannot_be_merged() -> None:
    run = {"rps_offered": 1.0, "latency_s": {"mean": 1.0, "p99": 2.0}, "completed": 1, "requests": 1,
           "lower_bound_s": 1.0, "critical_path_s": {"p99": 1.5}}
    one = {"workload": "router", "seed": 0, "runs": {"langgraph": [run], "nalar": [run]}}
    with pytest.raises(ConfigError, match="no comparison"):
        merge_seeds([])
    with pytest.raises(ConfigError, match="twice"):
        merge_seeds([one, one])
    with pytest.raises(ConfigError, match="different workloads"):
        merge_seeds([one, {**one, "seed": 1, "workload": "swe"}])
    with pytest.raises(ConfigError, match="other systems or rates"):
        merge_seeds([one, {**one, "seed": 1, "runs": {"langgraph": [run]}}])
    with pytest.raises(ConfigError, match="baseline"):
        merge_seeds([{**one, "runs": {"nalar": [run]}}])


def test_comparisons_of_one_seed_at_different_rates_are_joined_in_order_of_rate() -> None:
    def run(rate: float, mean: float) -> dict[str, object]:
        return {"rps_offered": rate, "latency_s": {"mean": mean, "p99": 2 * mean}, "completed": 1, "requests": 1,
                "lower_bound_s": 1.0, "critical_path_s": {"p99": 1.5}}

    def cell(seed: int, rate: float, mine: float) -> dict[str, object]:
        return {"workload": "router", "seed": seed, "runs": {"langgraph": [run(rate, 4.0)], "nalar": [run(rate, mine)]}}

    merged = merge_seeds([cell(0, 2.0, 2.0), cell(1, 1.0, 3.0), cell(0, 1.0, 4.0), cell(1, 2.0, 1.0)])
    assert merged["seeds"] == [0, 1] and merged["rates"] == [1.0, 2.0]
    assert [row["mean_ratio"]["seeds"] for row in merged["systems"]["nalar"]] == [[1.0, 0.75], [0.5, 0.25]]
    with pytest.raises(ConfigError, match="twice"):
        merge_seeds([cell(0, 1.0, 2.0), cell(0, 1.0, 3.0)])
    other = {"workload": "router", "seed": 0, "runs": {"langgraph": [run(2.0, 4.0)], "fcfs": [run(2.0, 4.0)]}}
    with pytest.raises(ConfigError, match="different systems"):
        merge_seeds([cell(0, 1.0, 2.0), other])


def test_a_graph_app_on_a_trace_with_barrier_paths_is_floored_by_them() -> None:
    def run(app: str, mean: float) -> dict[str, object]:
        return {"rps_offered": 0.1, "app": app, "latency_s": {"mean": mean, "p99": 2 * mean}, "completed": 1,
                "requests": 1, "lower_bound_s": 10.0, "critical_path_s": {"p99": 15.0},
                "trace": {"barrier_path_s": {"job0": 16.0, "job1": 24.0}}}

    merged = merge_seeds([{"workload": "swe", "seed": 0, "runs": {
        "langgraph": [run("graph", 30.0)], "nalar": [run("futures", 15.0)], "nalar/graph": [run("graph", 25.0)]}}])
    futures, graph = merged["systems"]["nalar"][0], merged["systems"]["nalar/graph"][0]
    assert futures["floor"] == "critical path" and graph["floor"] == "barrier path"
    assert futures["mean_share_removed"]["mean"] == 0.75  # (30 - 15) / (30 - 10)
    assert graph["mean_share_removed"]["mean"] == 0.5  # (30 - 25) / (30 - 20): the barrier paths' mean is 20
