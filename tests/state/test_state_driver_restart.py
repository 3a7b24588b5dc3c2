"""The driver is SIGKILLed mid-run and restarted with the same state directory and thread ids."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nalar_plugin.state import DiskcacheSaver, Journal, Store

from . import _driver_app as app
from . import _faults as fw

ROOT = Path(__file__).resolve().parents[2]
THREADS = ["thread-a", "thread-b", "thread-c"]


def _driver(state: Path, log: Path, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.state._driver_app", str(state), str(log), str(out), *THREADS],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _kill_after(proc: subprocess.Popen[bytes], log: Path, lines: int) -> None:
    """SIGKILL the driver once ``lines`` tool bodies have started (mid-run)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.exists() and len(fw.read_log(log)) >= lines:
            break
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.02)
    else:
        raise AssertionError("the driver never got going")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err.decode()


def test_a_killed_driver_resumes_without_repeating_committed_effects(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    _finish(_driver(reference / "state", reference / "attempts.log", reference / "out.json"))
    expected = json.loads((reference / "out.json").read_text())
    assert expected == {t: {"thread": t, "results": [i * i + len(t) for i in range(app.STEPS)]} for t in THREADS}

    state, log, out = tmp_path / "state", tmp_path / "attempts.log", tmp_path / "out.json"
    killed = set()
    for lines in (4, 10):  # about one step into each thread, then a few more
        driver = _driver(state, log, out)
        _kill_after(driver, log, lines)
        killed.add(driver.pid)
    assert not out.exists()  # neither run got to the end
    _finish(_driver(state, log, out))
    assert json.loads(out.read_text()) == expected  # equal to a fault-free run

    with Store(state) as store:
        journal = Journal(store)
        for thread in THREADS:  # duplicated committed effects: none
            assert journal.load_managed(thread, "effects", "list") == fw.expected_effects(thread, app.STEPS)
        assert fw.bodies_after_commit(journal, THREADS, log) == []
        assert fw.reruns_not_explained_by(killed, log) == []
        saver = DiskcacheSaver(store)
        for thread in THREADS:
            config: Any = {"configurable": {"thread_id": thread}}
            sources = [c.metadata.get("source") for c in saver.list(config)]
            assert sources.count("input") == 1  # resumed from checkpoints, never restarted
    executions = fw.executions_per_key(log)
    assert set(executions) == {f"{t}/step-{i}" for t in THREADS for i in range(app.STEPS)}
    assert sum(executions.values()) > len(executions)  # the kills cut some bodies short
