"""``nalar demo``: the research app side by side, and the futures workflow behind ``--futures``."""

from __future__ import annotations

import pytest

from nalar_plugin.cli import main
from nalar_plugin.demo import run_research_demo


def test_quick_demo_prints_the_comparison() -> None:
    lines: list[str] = []
    data = run_research_demo(quick=True, progress=False, print_fn=lines.append)
    text = "\n".join(lines)
    assert "langgraph" in text and "nalar/langgraph" in text
    assert "same requests for both systems: True; same answers: True" in text
    assert all(run["failed"] == 0 for runs in data["runs"].values() for run in runs)


def test_futures_flag_runs_the_futures_workflow(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--futures"]) == 0
    out = capsys.readouterr().out
    assert "8 futures in session 'demo'" in out and "same answer as plain Python: True" in out
