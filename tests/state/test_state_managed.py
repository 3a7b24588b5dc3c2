"""managed_dict and managed_list: bound to the session of the call, committed with its result."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import nalar_plugin as nl
from nalar_plugin.errors import RuntimeStateError, SerializationError, StateError
from nalar_plugin.state import ManagedDict, ManagedList, managed_dict, managed_list

from . import _stubs as st


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nl.Runtime]:
    with nl.Runtime(tick_interval=0.05, state_dir=str(tmp_path_factory.mktemp("managed") / "state")) as runtime:
        yield runtime


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_plain_python_without_a_runtime() -> None:
    assert nl.active_runtime() is None
    d, lst = managed_dict("cfg", session="plain-1"), managed_list("log", session="plain-1")
    d["a"] = 1
    d.update(b=2)
    lst.append("x")
    lst.extend(["y", "z"])
    lst[0] = "X"
    del lst[1]
    assert d == {"a": 1, "b": 2} and isinstance(d, ManagedDict)
    assert lst == ["X", "z"] and isinstance(lst, ManagedList)
    assert managed_list("log", session="plain-1").copy() == ["X", "z"]  # same session, same list
    assert managed_list("log", session="plain-2").copy() == []
    assert st.note("n", fail=False) >= 1  # a stub runs as plain Python
    with pytest.raises(StateError, match="non-empty str"):
        managed_dict("")


def test_writes_commit_with_the_result(rt: nl.Runtime) -> None:
    with rt.session("commit-1"):
        assert st.note("a").result() == 1
        assert st.note("b").result() == 2  # the second call hydrates the first's commit
        assert managed_list("notes").copy() == ["a", "b"]
        assert dict(managed_dict("seen")) == {"a": True, "b": True}
    assert managed_list("notes", session="commit-2").copy() == []  # another session sees nothing


def test_a_failed_call_leaves_no_writes(rt: nl.Runtime) -> None:
    with rt.session("fail-1"):
        st.note("kept").result()
        with pytest.raises(RuntimeError, match="boom"):
            st.note("dropped", fail=True).result()
        assert managed_list("notes").copy() == ["kept"]
        assert "dropped" not in managed_dict("seen")


def test_concurrent_appends_of_one_session_all_land(rt: nl.Runtime) -> None:
    with rt.session("concurrent-1"):
        futures = [st.note(i) for i in range(30)]
        # Each call saw what was committed when it first read, plus its own append.
        assert all(1 <= n <= 30 for n in nl.value(futures))
        assert sorted(managed_list("notes").copy()) == list(range(30))
        assert len(managed_dict("seen")) == 30


def test_async_bodies_and_nested_calls(rt: nl.Runtime) -> None:
    with rt.session("async-1"):
        assert st.anote("x").result() == ["x"]
        assert st.nested_notes(3).result() == ["x", "nested-0", "nested-1", "nested-2"]


def test_explicit_key_runs_once(rt: nl.Runtime, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with rt.session("key-1"):
        first = st.counted.options(idempotency_key="order-17/charge")(str(runs), 5)
        again = st.counted.options(idempotency_key="order-17/charge")(str(runs), 5)
        assert first.result() == again.result() == 10
        assert _lines(runs) == ["5"]
        assert managed_list("effects").copy() == [5]
        # Other arguments under the same key are another call: it runs, and both stay.
        assert st.counted.options(idempotency_key="order-17/charge")(str(runs), 6).result() == 12
        assert _lines(runs) == ["5", "6"]
    assert [r.key for r in rt.journal_records("key-1")] == ["order-17/charge"] * 2


def test_a_resumed_session_replays_committed_calls(tmp_path: Path) -> None:
    state, runs, free = tmp_path / "state", tmp_path / "runs", tmp_path / "free"

    def workflow() -> list[int]:
        with nl.Runtime(state_dir=str(state)) as runtime, runtime.session("resume-1"):
            out = [st.counted(str(runs), x).result() for x in (1, 2, 3)]
            out.append(st.counted_freely(str(free), 4).result())
            return out

    assert workflow() == [2, 4, 6, 8]
    assert workflow() == [2, 4, 6, 8]  # a new driver, same state directory and session
    assert _lines(runs) == ["1", "2", "3"]  # journaled: each body ran once
    assert _lines(free) == ["4", "4"]  # idempotent=True: runs every time
    with nl.Runtime(state_dir=str(state)) as runtime:
        assert managed_list("effects", session="resume-1").copy() == [1, 2, 3]
        assert runtime.forget_session("resume-1") > 0
        assert managed_list("effects", session="resume-1").copy() == []
    assert workflow() == [2, 4, 6, 8]
    assert _lines(runs) == ["1", "2", "3"] * 2  # forgotten: it ran again


def test_the_driver_reads_and_writes_a_session(rt: nl.Runtime) -> None:
    with pytest.raises(RuntimeStateError, match="needs a session"):
        managed_list("notes").copy()
    with rt.session("driver-1"):
        notes = managed_list("notes")
        notes.append("from-driver")
        assert st.note("from-call").result() == 2
        notes.insert(0, "first")
        assert notes == ["first", "from-driver", "from-call"]
        assert notes.pop() == "from-call"
        cfg = managed_dict("cfg")
        cfg["k"] = {"nested": [1, 2]}
        assert cfg.setdefault("k", None) == {"nested": [1, 2]}
        del cfg["k"]
        assert len(cfg) == 0 and repr(notes).startswith("managed_list('notes'")


def test_a_value_that_cannot_be_serialised_fails_clearly(rt: nl.Runtime) -> None:
    with rt.session("bad-1"):
        with pytest.raises(SerializationError, match=r"managed_dict\('d'\) of session 'bad-1'"):
            st.bad_write().result()
        with pytest.raises(SerializationError, match="idempotent=True") as info:
            st.bad_result().result()
        assert "nothing of this call was written" in str(info.value)
        assert managed_list("notes").copy() == []  # the staged append was dropped
        with pytest.raises(StateError, match="managed_list"):
            st.mixed_kinds().result()
        assert managed_list("x").copy() == []


@pytest.fixture(scope="module")
def rt_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nl.Runtime]:
    state = tmp_path_factory.mktemp("managed-processes") / "state"
    with nl.Runtime(processes=True, n_workers=2, tick_interval=0.05, state_dir=str(state)) as runtime:
        yield runtime


def test_worker_processes_hydrate_and_commit_through_the_scheduler(rt_processes: nl.Runtime) -> None:
    with rt_processes.session("proc-1"):
        info = st.where().result()
        assert info["pid"] != os.getpid()
        assert st.note("a").result() == 2  # hydrated in a worker process: [pid, "a"]
        assert st.nested_notes(2).result() == [info["pid"], "a", "nested-0", "nested-1"]
        assert st.anote("z").result()[-1] == "z"
        with pytest.raises(RuntimeError, match="boom"):
            st.note("dropped", fail=True).result()
        futures = [st.note(i) for i in range(10)]
        nl.value(futures)
        assert managed_list("notes").copy()[:5] == [info["pid"], "a", "nested-0", "nested-1", "z"]
        assert sorted(managed_list("notes").copy()[5:]) == list(range(10))
        with pytest.raises(SerializationError, match="idempotent=True"):
            st.bad_result().result()


def test_a_duplicate_waits_for_the_running_call_without_taking_its_slot(tmp_path: Path) -> None:
    # One slot: the first call secedes while its nested calls run; the duplicate
    # must not sit on the freed slot while it waits for the first to commit.
    with nl.Runtime(n_workers=1, worker_slots=1, state_dir=str(tmp_path / "state")) as rt, rt.session("dup-1"):
        parent = st.nested_notes.options(idempotency_key="dup-parent")
        first, second = parent(2), parent(2)
        assert first.result(timeout=60) == second.result(timeout=60) == ["nested-0", "nested-1"]
        assert managed_list("notes").copy() == ["nested-0", "nested-1"]  # the body ran once


def test_a_duplicate_of_a_call_cancelled_while_it_runs_runs_once_the_body_has_ended(rt: nl.Runtime,
                                                                                    tmp_path: Path) -> None:
    # The cancelled call's future is done at once, but its claim is held until its body
    # really ends: the duplicate waits for that, and then runs itself (nothing committed).
    # The key is the session's own, so the journal answers from memory, at once.
    log = tmp_path / "started"
    with rt.session("dup-cancel"):
        call = st.alog.options(idempotency_key="dup-cancel/alog")
        first = call(str(log), 2.0)
        deadline = time.monotonic() + 60
        while len(_lines(log)) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _lines(log) == ["started"]
        second = call(str(log), 2.0)  # the same call: same key, same arguments
        assert first.cancel()
        assert second.result(timeout=60) == "done"
        assert first.cancelled()
        assert _lines(log) == ["started", "started"]  # the duplicate ran its own body
        assert len(rt.journal.claims) == 0 and rt.journal.claims.waiting() == 0
