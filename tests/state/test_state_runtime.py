"""The Runtime's store: where it lives, the checkpointer, and bad state directories."""

from __future__ import annotations

import operator
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import dask.config
import pytest
from langgraph.graph import END, START, StateGraph

import nalar_plugin as nl
from nalar_plugin.errors import StateCorruptedError, StateReadOnlyError
from nalar_plugin.state import DiskcacheSaver, Store, managed_list

from . import _stubs as st

ROOT = Path(__file__).resolve().parents[2]


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_state_dir_from_argument_and_config(tmp_path: Path) -> None:
    with nl.Runtime(state_dir=str(tmp_path / "a")) as rt:
        assert rt.store.path == tmp_path / "a"
        assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o700
    with dask.config.set({"nalar.state-dir": str(tmp_path / "b")}), nl.Runtime() as rt:
        assert rt.store.path == tmp_path / "b"
    assert rt.store.closed  # closed with its Runtime


def test_default_state_dir_is_under_the_working_directory(tmp_path: Path) -> None:
    code = """
        import nalar_plugin as nl
        with nl.Runtime() as rt:
            print(rt.store.path)
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == tmp_path / ".nalar" / "state"
    assert stat.S_IMODE(os.stat(tmp_path / ".nalar" / "state").st_mode) == 0o700


class _Count(TypedDict):
    seen: Annotated[list[int], operator.add]


def test_checkpointer_resumes_a_thread_in_a_new_runtime(tmp_path: Path) -> None:
    def graph(rt: nl.Runtime) -> Any:
        def step(state: _Count) -> dict[str, list[int]]:
            return {"seen": [st.counted(str(tmp_path / "runs"), len(state["seen"])).result()]}

        builder = StateGraph(_Count)
        builder.add_node("step", step)
        builder.add_edge(START, "step")
        builder.add_edge("step", END)
        return builder.compile(checkpointer=rt.checkpointer())

    config: Any = {"configurable": {"thread_id": "t-1"}}
    with nl.Runtime(state_dir=str(tmp_path / "state")) as rt:
        saver = rt.checkpointer()
        assert isinstance(saver, DiskcacheSaver) and saver.store is rt.store
        assert graph(rt).invoke({"seen": []}, config) == {"seen": [0]}
    with nl.Runtime(state_dir=str(tmp_path / "state")) as rt:
        assert graph(rt).invoke({"seen": []}, config) == {"seen": [0, 2]}  # the thread continued


def test_a_foreign_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    before = _snapshot(foreign)
    with pytest.raises(StateCorruptedError, match=r"nalar\.state-dir=.*not a nalar state directory"):
        nl.Runtime(state_dir=str(foreign))
    assert nl.active_runtime() is None
    assert _snapshot(foreign) == before


def test_a_corrupted_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Store(state) as store:
        store.set("k", 1)
    (state / "cache.db").write_bytes(b"this is not an SQLite database" * 100)
    for extra in ("cache.db-wal", "cache.db-shm"):
        (state / extra).unlink(missing_ok=True)
    before = _snapshot(state)
    with pytest.raises(StateCorruptedError, match="corrupted"):
        nl.Runtime(state_dir=str(state))
    assert nl.active_runtime() is None
    assert _snapshot(state) == before
    with nl.Runtime(state_dir=str(tmp_path / "fresh")) as rt, rt.session("after-corrupt"):
        assert st.note("ok").result() == 1  # nothing leaked that stops the next Runtime


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    # tmp_path sits under a root-only directory; an unprivileged child needs a traversable parent.
    base = Path(tempfile.mkdtemp(prefix="nalar-rt-ro-"))
    os.chmod(base, 0o755)
    yield base
    for root, dirs, _ in os.walk(base):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(base)


def test_a_read_only_directory_is_refused(shared_tmp: Path) -> None:
    state = shared_tmp / "state"
    with Store(state) as store:
        store.set("k", 1)
    os.chmod(state, 0o755)
    for name in os.listdir(state):
        os.chmod(state / name, 0o644)
    os.chmod(state, 0o555)
    before = _snapshot(state)
    # Root ignores permission bits: the child imports what it needs, then drops
    # to "nobody" (the interpreter's own files may not be readable by nobody).
    code = f"""
        import os
        import distributed, distributed.deploy.local, nalar_plugin as nl
        if os.geteuid() == 0:
            os.setgid(65534)
            os.setuid(65534)
        try:
            nl.Runtime(state_dir={str(state)!r})
        except Exception as exc:
            print(type(exc).__name__, nl.active_runtime() is None)
            print(exc)
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         cwd=shared_tmp, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(shared_tmp)})
    assert out.returncode == 0, out.stderr
    first, message = out.stdout.splitlines()[:2]
    assert first == "StateReadOnlyError True"
    assert "nalar.state-dir" in message and str(state) in message
    assert issubclass(StateReadOnlyError, PermissionError)
    assert _snapshot(state) == before


def test_driver_writes_outside_calls_go_straight_to_the_store(tmp_path: Path) -> None:
    with nl.Runtime(state_dir=str(tmp_path / "state")) as rt, rt.session("direct-1"):
        managed_list("log").append("a")
        assert rt.journal.load_managed("direct-1", "log", "list") == ["a"]
