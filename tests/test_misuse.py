"""Bad input and misuse get a clear nalar error, promptly, and nothing is lost."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

import nalar_plugin as nl
from nalar_plugin.errors import CallCancelledError, ConfigError, RuntimeStateError, SerializationError, StateCorruptedError
from nalar_plugin.plugins import POLICY_GROUP, PluginManager
from nalar_plugin.state import Store

from . import _workflows as w

ROOT = Path(__file__).resolve().parents[1]


def test_an_argument_that_cannot_travel_fails_with_a_serialization_error(rt: nl.Runtime) -> None:
    fut = w.echo(threading.Lock())
    if rt.config["processes"]:
        with pytest.raises(SerializationError, match="echo"):
            fut.result(timeout=60)
    else:  # in-process workers take it by reference
        assert isinstance(fut.result(timeout=60), type(threading.Lock()))


def test_an_exception_comes_back_with_its_type_attributes_and_traceback(rt: nl.Runtime) -> None:
    fut = w.refuse(7)
    with pytest.raises(w.Refused) as info:
        fut.result(timeout=60)
    assert (info.value.code, info.value.reason, str(info.value)) == (7, "not today", "7: not today")
    text = "".join(traceback.format_exception(info.value))
    assert "in refuse" in text and "Refused: 7: not today" in text


def test_bad_deploy_counts_are_refused(rt: nl.Runtime) -> None:
    with pytest.raises(ConfigError, match="n must be an integer >= 1"):
        rt.deploy("bad-count", w.Counter, n=-1)
    with pytest.raises(ConfigError, match="n must be an integer >= 1"):
        rt.deploy("bad-count", w.Counter, n=0)


@pytest.mark.parametrize("value", ["high", float("nan"), float("inf"), True])
def test_priorities_and_deadlines_that_are_not_numbers_are_refused_when_given(rt: nl.Runtime, value: Any) -> None:
    with pytest.raises(ConfigError, match="priority"):
        rt.session("s", priority=value)
    with pytest.raises(ConfigError, match="deadline"):
        rt.session("s", deadline=value)
    with pytest.raises(ConfigError, match="priority"):
        w.add.options(priority=value)(1, 2)
    with pytest.raises(ConfigError, match="priority"):
        rt.callback(priority=value)


def test_a_priority_in_the_run_config_that_is_not_a_number_fails_the_call(rt_threads: nl.Runtime) -> None:
    from langchain_core.tools import tool

    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    cfg: Any = {"callbacks": [rt_threads.callback()], "metadata": {"nalar_priority": "tomorrow"}}
    with pytest.raises(ConfigError, match="nalar_priority"):
        ping.invoke({}, cfg)


def test_close_lets_running_calls_commit_and_fails_queued_ones(tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    rt = nl.Runtime(state_dir=str(tmp_path / "state"))
    with rt.session("closing"):
        running = w.one_at_a_time(str(log), 0.5)
        queued = [w.one_at_a_time(str(log), 0.5) for _ in range(3)]  # behind max_concurrency=1
    deadline = time.monotonic() + 10
    while running.status != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    rt.close()  # returns: nothing hangs
    assert running.result() == "done"
    for fut in queued:
        with pytest.raises(RuntimeStateError, match="closed"):
            fut.result()
    assert log.read_text().splitlines() == ["ran"]
    with nl.Runtime(state_dir=str(tmp_path / "state")) as again:
        assert [r.value(again.journal.serde) for r in again.journal_records("closing")] == ["done"]
        with again.session("closing"):  # the finished call was journaled: it replays
            assert w.one_at_a_time(str(log), 0.5).result() == "done"
    assert log.read_text().splitlines() == ["ran"]


def test_cancel_stops_queued_and_running_calls(rt: nl.Runtime, tmp_path: Path) -> None:
    flag = tmp_path / "cancelled"
    running = w.long_wait(str(flag), 30)
    deadline = time.monotonic() + 30
    while running.status != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the body is inside its await
    assert running.cancel() is True
    assert running.cancelled()
    with pytest.raises(CallCancelledError):
        running.result()
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert flag.read_text() == "cancelled"  # the cancellation reached the body
    assert rt.journal_records(running.context.session) == []  # nothing was committed
    done = w.add(1, 2)
    done.result()
    assert done.cancel() is False  # a finished call stays finished


def test_cancelling_the_task_that_awaits_a_call_cancels_the_call(rt: nl.Runtime, tmp_path: Path) -> None:
    flag = tmp_path / "awaiter-cancelled"
    futures: list[nl.Future] = []

    async def main() -> None:
        fut = w.long_wait(str(flag), 30)
        futures.append(fut)
        task = asyncio.ensure_future(fut)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert futures[0].cancelled(), futures[0].exception()
    deadline = time.monotonic() + 30
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert flag.exists()


def test_an_emptied_database_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Store(state) as store:
        store.set("k", 1)
    (state / "cache.db").write_bytes(b"")
    with pytest.raises(StateCorruptedError, match="is empty"):
        nl.Runtime(state_dir=str(state))
    assert (state / "cache.db").stat().st_size == 0  # nothing was changed


def test_damaged_pages_are_refused_when_the_store_opens(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Store(state) as store:
        for i in range(2000):
            store.set(f"k{i}", "x" * 200)
    db = state / "cache.db"
    data = bytearray(db.read_bytes())
    for page in range(3, len(data) // 4096 - 1, 3):  # scribble over every third page past the header
        data[page * 4096 + 100: page * 4096 + 400] = os.urandom(300)
    db.write_bytes(bytes(data))
    with pytest.raises(StateCorruptedError, match="corrupted"):
        Store(state)


def test_a_broken_policy_entry_point_stops_only_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.metadata.entry_points

    def entry_points(**kwargs: Any) -> Any:
        found = list(real(**kwargs))
        if kwargs.get("group") == POLICY_GROUP:
            found.append(importlib.metadata.EntryPoint("broken", "no_such_module_here:Policy", POLICY_GROUP))
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    with nl.Runtime(policy="fcfs", state_dir=str(tmp_path / "state")) as rt:
        assert rt.policy_name == "fcfs"
    with pytest.raises(Exception, match="'broken'.*failed to load"):
        nl.Runtime(policy="broken", state_dir=str(tmp_path / "state2"))
    from nalar_plugin.plugins import policy_entry_points

    listed = {name: error for name, _, error in policy_entry_points()}
    assert "no_such_module_here" in str(listed["broken"]) and listed["fcfs"] is None
    from nalar_plugin.errors import PluginError

    with pytest.raises(PluginError, match="'broken'"):
        PluginManager().policies()  # what needs every policy names the broken one


def test_worker_processes_without_a_main_guard_say_so(tmp_path: Path) -> None:
    script = tmp_path / "no_guard.py"
    script.write_text(textwrap.dedent(f"""
        import nalar_plugin as nl
        rt = nl.Runtime(processes=True, n_workers=1, state_dir={str(tmp_path / "state")!r})
        rt.close()
        print("closed")
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert 'if __name__ == "__main__":' in out.stderr
    assert out.stderr.count("Traceback") <= 4  # the message, not screens of tracebacks
