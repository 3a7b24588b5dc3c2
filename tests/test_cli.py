"""The `nalar` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _nalar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nalar_plugin.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_demo_prints_futures_and_graph() -> None:
    out = _nalar("demo", "--futures")
    assert out.returncode == 0, out.stderr
    assert "8 futures in session 'demo'" in out.stdout
    assert 'digraph "demo"' in out.stdout
    assert "same answer as plain Python: True" in out.stdout


def test_bench_calls_writes_json(tmp_path: Path) -> None:
    path = tmp_path / "calls.json"
    out = _nalar("bench", "calls", "--n", "200", "--repeat", "1", "--json", str(path), "--no-progress")
    assert out.returncode == 0, out.stderr
    data = json.loads(path.read_text())
    assert data["n"] == 200
    assert data["nalar_calls_per_s"] > 0 and data["dask_calls_per_s"] > 0
    # the ratio is taken before the rates are rounded for the JSON
    assert abs(data["ratio_nalar_to_dask"] - data["nalar_calls_per_s"] / data["dask_calls_per_s"]) < 0.01


def test_errors_are_reported_without_traceback(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", "from nalar_plugin.cli import main; import sys;"
                          "sys.argv=['nalar'];"
                          "import dask; dask.config.set({'nalar.policy': 'nope'});"
                          "sys.exit(main(['demo']))"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "nalar: error: no policy named 'nope'" in out.stderr
    assert "Traceback" not in out.stderr


def test_bench_control_writes_json(tmp_path: Path) -> None:
    path = tmp_path / "control.json"
    out = _nalar("bench", "control", "--futures", "4096", "--instances", "8", "--ticks", "5", "--json", str(path),
                 "--no-progress")
    assert out.returncode == 0, out.stderr
    data = json.loads(path.read_text())
    assert data["futures_outstanding_at_ticks"] == 4096 and data["instances"] == 8 and data["ticks"] == 5
    assert 0 < data["tick_ms_p50"] <= data["tick_ms_max"]
    assert data["local_us_per_call"] > 0


def test_bench_calls_reports_driver_cpu(tmp_path: Path) -> None:
    path = tmp_path / "calls.json"
    out = _nalar("bench", "calls", "--n", "100", "--repeat", "1", "--json", str(path), "--no-progress")
    assert out.returncode == 0, out.stderr
    data = json.loads(path.read_text())
    assert data["journaled"] is True
    assert data["driver_cpu_per_call_us"] > 0 and data["dask_driver_cpu_per_call_us"] > 0
    assert set(data["sequential_ms_per_call"]) == {"nalar", "dask"}


def test_state_gc_applies_the_retention_rules(tmp_path: Path) -> None:
    import nalar_plugin as nl

    from . import _workflows as w

    state = tmp_path / "state"
    with nl.Runtime(state_dir=str(state)) as rt:
        for i in range(5):
            with rt.session(f"s{i}"):
                w.add(i, 1).result()
        assert len(rt.journal.sessions()) == 5
        busy = _nalar("state", "gc", "--state-dir", str(state), "--max-sessions", "2")
        assert busy.returncode == 2 and "in use by another Runtime" in busy.stderr  # never under a live Runtime
    out = _nalar("state", "gc", "--state-dir", str(state), "--max-sessions", "2")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["sessions_before"], report["sessions_after"], report["sessions_forgotten"]) == (5, 2, 3)
    with nl.Runtime(state_dir=str(state)) as rt:
        assert sorted(rt.journal.sessions()) == ["s3", "s4"]  # the newest are kept


def test_bench_agent_runs_each_system_in_turn(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    out = _nalar("bench", "agent", "--runs", "20", "--concurrency", "5", "--repeat", "1", "--systems",
                 "langgraph,nalar,nalar:gc-freeze=0,langgraph:callback", "--json", str(path), "--no-progress")
    assert out.returncode == 0, out.stderr
    data = json.loads(path.read_text())
    assert data["calls_per_round"] == 60 and data["baseline"] == "langgraph"
    plain, nalar, unfrozen, traced = (data["systems"][s] for s in ("langgraph", "nalar", "nalar:gc-freeze=0",
                                                                    "langgraph:callback"))
    # A start and an end per run for the graph, its three node runs, two model calls and a tool call.
    assert traced["callback_events"] == 14 * 20 and traced["dask_loaded"] == 0
    assert "callback_events" not in plain
    assert plain["dask_loaded"] == 0 and nalar["dask_loaded"] == 1  # the baseline never loaded nalar or Dask
    assert plain["frozen_objects"] == 0 and unfrozen["frozen_objects"] == 0 and nalar["frozen_objects"] > 0
    assert all(row["cpu_per_call_us"] > 0 for row in data["systems"].values())
    assert data["cpu_ratio"]["langgraph"] == 1.0
    assert abs(data["cpu_ratio"]["nalar"] - nalar["cpu_per_call_us"] / plain["cpu_per_call_us"]) < 0.01


def test_bench_agent_names_an_unknown_system() -> None:
    out = _nalar("bench", "agent", "--systems", "langgraph,nope", "--no-progress")
    assert out.returncode == 2
    assert "unknown system(s) ['nope']" in out.stderr
