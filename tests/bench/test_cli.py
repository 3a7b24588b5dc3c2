"""``nalar bench WORKLOAD`` and ``nalar bench compare``: JSON, table, plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nalar_plugin.bench.compare import compare, format_table, knee, sustained_rps

from .conftest import TINY


def _nalar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nalar_plugin.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_bench_workload_writes_json_and_plot(tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "router.json", tmp_path / "router.png"
    tiny = TINY["router"]
    proc = _nalar("bench", "router", "--system", "langgraph", "--rps", "1,2", "--duration", str(tiny["duration_s"]),
                  "--time-scale", str(tiny["time_scale"]), "--seed", "2", "--json", str(out_json),
                  "--plot", str(out_png), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out_json.read_text())
    assert [r["rps_offered"] for r in data["runs"]] == [1.0, 2.0]
    assert all(r["completed"] == r["requests"] and r["seed"] == 2 for r in data["runs"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_runs_every_system_on_one_trace_and_reports_ratios() -> None:
    tiny = TINY["router"]
    seen: list[str] = []
    result = compare("router", [1.0], systems=["langgraph", "fcfs"], duration_s=tiny["duration_s"],
                     time_scale=tiny["time_scale"], seed=2, progress=False,
                     on_run=lambda summary, latencies: seen.append(summary["system"]))
    assert seen == ["langgraph", "fcfs"]
    (row,) = result["ratios"]
    base, fcfs = result["runs"]["langgraph"][0], result["runs"]["fcfs"][0]
    assert base["requests"] == fcfs["requests"]
    assert row["fcfs/langgraph"]["mean"] == round(fcfs["latency_s"]["mean"] / base["latency_s"]["mean"], 3)
    table = format_table(result)
    assert "fcfs" in table and "langgraph" in table and "ratio = system / langgraph" in table


def test_compare_with_jobs_runs_each_rate_in_its_own_process_and_joins_them_in_order(tmp_path: Path) -> None:
    tiny = TINY["router"]
    out_json, out_png = tmp_path / "router.json", tmp_path / "router.png"
    args = ("bench", "compare", "router", "--rps", "2,1", "--systems", "langgraph,fcfs", "--duration",
            str(tiny["duration_s"]), "--time-scale", str(tiny["time_scale"]), "--seed", "2", "--no-progress")
    proc = _nalar(*args, "--jobs", "2", "--json", str(out_json), "--plot", str(out_png))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out_json.read_text())
    for system in ("langgraph", "fcfs"):
        runs = data["runs"][system]
        assert [r["rps_offered"] for r in runs] == [2.0, 1.0]  # the order asked for
        assert all(r["completed"] == r["requests"] and r["seed"] == 2 for r in runs)
        assert [len(lat) for lat in data["latencies_s"][system]] == [r["completed"] for r in runs]
    assert [row["rps"] for row in data["ratios"]] == [2.0, 1.0]
    for row, base, fcfs in zip(data["ratios"], data["runs"]["langgraph"], data["runs"]["fcfs"]):
        assert row["fcfs/langgraph"]["mean"] == round(fcfs["latency_s"]["mean"] / base["latency_s"]["mean"], 3)
    assert "fcfs" in proc.stdout and out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same trace whether its rates ran in turn or at once.
    one = json.loads(out_json.read_text())["runs"]["langgraph"][1]
    proc = _nalar(*args[:4], "1", *args[5:], "--json", str(out_json))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out_json.read_text())["runs"]["langgraph"][0]["requests"] == one["requests"]
    bad = _nalar(*args, "--jobs", "0")
    assert bad.returncode != 0 and "expected 1 or more" in bad.stderr


def _run(rps: float, mean: float, p99: float, failed: int = 0, bound: float = 10.0) -> dict[str, object]:
    return {"rps_offered": rps, "failed": failed, "lower_bound_s": bound, "latency_s": {"mean": mean, "p99": p99}}


def test_sustained_rate_is_the_highest_rate_under_the_bound_with_nothing_lost() -> None:
    runs = [_run(1, 11, 20), _run(2, 15, 30), _run(3, 19, 90), _run(4, 50, 200)]
    assert sustained_rps(runs, slo_factor=2.0) == 3
    assert sustained_rps([*runs[:2], _run(3, 12, 20, failed=1)], slo_factor=2.0) == 2
    assert sustained_rps([_run(1, 25, 30)], slo_factor=2.0) == 0.0


def test_knee_is_where_p99_doubles_from_the_lowest_rate() -> None:
    assert knee([_run(1, 10, 20), _run(2, 12, 35), _run(3, 30, 41)]) == 3
    assert knee([_run(1, 10, 20), _run(2, 12, 35)]) is None


def test_admit_sets_the_calls_each_engine_takes(tmp_path: Path) -> None:
    """``--admit`` equal to the batch: the local controllers hold every call an engine could not start."""
    out_json = tmp_path / "router.json"
    tiny = TINY["router"]
    proc = _nalar("bench", "router", "--system", "nalar", "--rps", "2", "--duration", str(tiny["duration_s"]),
                  "--time-scale", str(tiny["time_scale"]), "--seed", "2", "--max-batch", "2", "--admit", "2",
                  "--json", str(out_json), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(out_json.read_text())
    assert row["admit"] == 2 and row["completed"] == row["requests"] > 0
    assert row["breakdown"]["engine_queue_s_mean"] == 0.0
    assert sum(c["queue_s_mean"] * c["calls"] for c in row["breakdown"]["components"].values()) > 0
