"""Every example runs, in threads and in processes mode, and does what it says.

Each example returns its final state without nalar and with it; the two must
match, the tools must have run on Dask workers, and the calls must be in the
session's graph with their dependencies.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ._apps import normalize

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> ModuleType:
    # Imported as a module (not run as __main__), so worker processes import
    # its tools by name; worker processes started later inherit sys.path.
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def _deps(result: dict[str, Any]) -> dict[str, list[list[str]]]:
    graph = result["graph"]
    names = {n["call_id"]: n["component"] for n in graph.nodes}
    out: dict[str, list[list[str]]] = {}
    for n in sorted(graph.nodes, key=lambda n: n["started"]):
        out.setdefault(n["component"], []).append(sorted(names[d] for d in n["dependencies"]))
    assert {n["status"] for n in graph.nodes} == {"finished"}
    assert graph.session == result["session"]
    return out


def _tool_workers(messages: list[Any]) -> list[Any]:
    return [m.artifact["worker"] for m in messages if m.type == "tool"]


@pytest.fixture(params=["threads", "processes"])
def mode(request: pytest.FixtureRequest) -> bool:
    return request.param == "processes"


def test_agent_middleware(mode: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _load("agent_middleware").main(processes=mode, state_dir=str(tmp_path))
    assert normalize(result["final"]["messages"]) == normalize(result["plain"]["messages"])
    # Tools run where they live, served or not; nalar admitted and recorded them (the graph below).
    assert not any(_tool_workers(result["final"]["messages"])) and not any(_tool_workers(result["plain"]["messages"]))
    assert _deps(result) == {
        "SimulatedChatModel": [[], ["get_time", "get_weather"]],
        "get_time": [["SimulatedChatModel"]], "get_weather": [["SimulatedChatModel"]],
    }
    assert "answer: In Paris it is sunny, and it is noon." in capsys.readouterr().out


def test_tool_node_callback(mode: bool, tmp_path: Path) -> None:
    result = _load("tool_node_callback").main(processes=mode, state_dir=str(tmp_path))
    assert normalize(result["final"]["messages"]) == normalize(result["plain"]["messages"])
    assert len(_tool_workers(result["final"]["messages"])) == 3 and not any(_tool_workers(result["final"]["messages"]))
    assert _deps(result) == {
        "SimulatedChatModel": [[], ["add", "multiply"], ["add"]],
        "add": [["SimulatedChatModel"], ["SimulatedChatModel"]], "multiply": [["SimulatedChatModel"]],
    }


def test_map_reduce(mode: bool, tmp_path: Path) -> None:
    result = _load("map_reduce").main(processes=mode, state_dir=str(tmp_path))
    final, plain = result["final"], result["plain"]
    assert (final["summary"], sorted(final["notes"])) == (plain["summary"], sorted(plain["notes"]))
    spans = final["where"]
    assert len(spans) == 3 and not any(s["worker"] for s in spans)  # parallelism: test_middleware
    assert _deps(result) == {"research": [[], [], []], "SimulatedChatModel": [["research", "research", "research"]]}


def test_subgraph(mode: bool, tmp_path: Path) -> None:
    result = _load("subgraph").main(processes=mode, state_dir=str(tmp_path))
    assert normalize(result["final"]["messages"]) == normalize(result["plain"]["messages"])
    assert not any(_tool_workers(result["final"]["messages"]))
    assert _deps(result) == {
        "SimulatedChatModel": [[], ["SimulatedChatModel"], ["stock"]], "stock": [["SimulatedChatModel"]],
    }


def test_futures_workflow(mode: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nalar_plugin.context

    # The example first runs its stubs as plain Python, which they are only while
    # no Runtime is open: hide the Runtimes other tests of this package keep open.
    monkeypatch.setattr(nalar_plugin.context, "_RUNTIMES", [])
    result = _load("futures_workflow").main(processes=mode, state_dir=str(tmp_path))
    assert result["final"] == result["plain"] == "A note on futures. A note on controllers. A note on sessions."
    assert _deps(result) == {"search": [[], [], []], "write": [["search"], ["search"], ["search"]],
                             "review": [["write", "write", "write"]]}
    assert len(result["workers"]) == 3 and all(result["workers"])


def test_an_example_runs_as_a_script(tmp_path: Path) -> None:
    import subprocess

    # Run from a scratch directory: the Runtime keeps its state under the working directory.
    done = subprocess.run([sys.executable, str(EXAMPLES / "tool_node_callback.py")], capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "answer: 2+3 plus 4*5 is 25." in done.stdout
