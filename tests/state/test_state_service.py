"""The state service: one Runtime per directory, commits known in memory, retention."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import nalar_plugin as nl
from nalar_plugin.errors import ConfigError, StateError
from nalar_plugin.state import Retention, StateService
from nalar_plugin.state.service import parse_allowed_types

ROOT = Path(__file__).resolve().parents[2]


def _check(service: StateService, key: str, session: str, scoped: bool = True) -> Any:
    got: list[Any] = []
    done = threading.Event()

    def answer(record: Any, error: BaseException | None) -> None:
        got.append((record, error))
        done.set()

    service.check(key, "h", session, scoped, answer)
    assert done.wait(10)
    record, error = got[0]
    assert error is None
    return record


def _commit(service: StateService, key: str, session: str, value: Any) -> None:
    done = threading.Event()
    service.commit(lambda *_: done.set(), key=key, arg_hash="h", session=session, call_id="c", attempt=0,
                   result=service.serde.dumps_typed(value), ops=None)
    assert done.wait(10)


def test_a_second_service_on_one_directory_is_refused(tmp_path: Path) -> None:
    first = StateService(tmp_path / "state")
    try:
        with pytest.raises(StateError, match="in use by another Runtime"):
            StateService(tmp_path / "state")
    finally:
        first.close()
    StateService(tmp_path / "state").close()  # free again once the first closed


def test_a_second_runtime_in_another_process_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code = textwrap.dedent(f"""
        import sys
        import nalar_plugin as nl
        from nalar_plugin.errors import StateError
        try:
            nl.Runtime(state_dir={str(state)!r})
        except StateError as exc:
            print("refused:", exc)
            sys.exit(0)
        sys.exit(1)
    """)
    with nl.Runtime(state_dir=str(state)):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert "in use by another Runtime" in out.stdout


def test_checks_of_a_known_session_need_no_store_read(tmp_path: Path) -> None:
    service = StateService(tmp_path / "state")
    try:
        assert _check(service, "s/root/f/0", "s") is None  # loads the session's index once
        _commit(service, "s/root/f/0", "s", "v")
        answered_at_once: list[Any] = []
        service.check("s/root/f/1", "h", "s", True, lambda rec, err: answered_at_once.append(rec))
        assert answered_at_once == [None]  # from memory, in the caller's thread
        record = _check(service, "s/root/f/0", "s")
        assert record is not None and record.value(service.serde) == "v"
        service.forget_session("s")
        assert _check(service, "s/root/f/0", "s") is None
    finally:
        service.close()


def test_explicit_keys_are_looked_up_in_the_store(tmp_path: Path) -> None:
    service = StateService(tmp_path / "state")
    try:
        _commit(service, "order-17", "s1", "paid")
        record = _check(service, "order-17", "s2", scoped=False)  # another session, same explicit key
        assert record is not None and record.value(service.serde) == "paid"
    finally:
        service.close()


def test_the_count_rule_forgets_the_oldest_idle_sessions(tmp_path: Path) -> None:
    service = StateService(tmp_path / "state", retention=Retention(max_sessions=3), active=lambda s: s == "s0")
    try:
        for i in range(6):
            _commit(service, f"s{i}/root/f/0", f"s{i}", i)
            time.sleep(0.01)
        report = service.gc()
        assert report.sessions == 3
        left = sorted(service.journal.sessions())
        assert left == ["s0", "s4", "s5"]  # s0 is still active, so it stays
    finally:
        service.close()


def test_the_age_rule_expires_records(tmp_path: Path) -> None:
    service = StateService(tmp_path / "state", retention=Retention(max_age=0.2))
    try:
        _commit(service, "s/root/f/0", "s", 1)
        assert service.journal.records("s")
        time.sleep(0.3)
        assert service.journal.records("s") == []  # expired rows are not read
        assert service.gc().keys >= 2  # and the sweep deletes them
    finally:
        service.close()


def test_the_background_sweep_applies_the_rules(tmp_path: Path) -> None:
    service = StateService(tmp_path / "state", retention=Retention(max_sessions=1), gc_interval=0.05)
    try:
        for i in range(4):
            _commit(service, f"s{i}/root/f/0", f"s{i}", i)
            time.sleep(0.01)
        deadline = time.time() + 10
        while len(service.journal.sessions()) > 1 and time.time() < deadline:
            time.sleep(0.05)
        assert list(service.journal.sessions()) == ["s3"]
    finally:
        service.close()


def test_retention_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="journal-max-sessions"):
        nl.Runtime(journal_max_sessions=0)
    with pytest.raises(ConfigError, match="journal-max-age"):
        nl.Runtime(journal_max_age=-1)


def test_allowed_types_parse() -> None:
    assert parse_allowed_types(["a.b.C", "a.b:D"]) == [("a.b", "C"), ("a.b", "D")]
    assert parse_allowed_types(None) == []
    with pytest.raises(ConfigError, match="module.Class"):
        parse_allowed_types(["NoModule"])
