"""Faults with real processes: ``dask worker`` processes SIGKILLed in the middle of sessions.

The cluster is a ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1,
started without nannies, so a killed worker stays dead and the test starts its
replacement. Workers run in their own working directories and never learn the
state directory: an audit hook preloaded into each of them records any attempt
to touch it, and the state reaches them through their link to the driver only.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nalar_plugin as nl
from nalar_plugin.errors import WorkerLostError
from nalar_plugin.state import managed_list

from . import _faults as fw
from . import _stubs as st

ROOT = Path(__file__).resolve().parents[2]


def _wait(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Cluster:
    """A scheduler and ``dask worker`` processes that a test may kill and replace."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state_root = tmp / "forbidden-state"  # only the driver and the scheduler use it
        self.canary = tmp / "canary-file"
        self.audit_log = tmp / "audit.log"
        self.sched_file = tmp / "scheduler.json"
        self.env = {
            **os.environ, "PYTHONPATH": str(ROOT), "NALAR_TEST_FORBIDDEN": str(self.state_root),
            "NALAR_TEST_CANARY": str(self.canary), "NALAR_TEST_AUDIT_LOG": str(self.audit_log),
        }
        self.workers: list[subprocess.Popen[bytes]] = []
        self._n = 0
        (tmp / "scheduler").mkdir()
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(self.sched_file)],
            env=self.env, cwd=tmp / "scheduler", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait("the scheduler file", self.sched_file.exists)
        self.address: str = _wait("the scheduler address", self._address)

    def _address(self) -> str | None:
        try:
            return json.loads(self.sched_file.read_text())["address"]
        except (ValueError, KeyError):
            return None

    def start_worker(self) -> subprocess.Popen[bytes]:
        self._n += 1
        cwd = self.tmp / f"worker-{self._n}"
        cwd.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", "--scheduler-file", str(self.sched_file), "--host", "127.0.0.1",
             "--nthreads", "16", "--no-nanny", "--no-dashboard", "--name", f"worker-{self._n}",
             "--preload", "tests.state._audit"],
            env=self.env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.workers.append(proc)
        return proc

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.workers if p.poll() is None]

    def kill(self, pid: int) -> None:
        """SIGKILL the worker with ``pid`` and start its replacement."""
        proc = next(p for p in self.workers if p.pid == pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        self.start_worker()

    def wait_for_workers(self, client: Any, n: int) -> None:
        client.wait_for_workers(n, timeout=90)

    def close(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("fault-cluster"))
    try:
        for _ in range(3):
            c.start_worker()
        from distributed import Client

        with Client(c.address, timeout="30s") as client:
            c.wait_for_workers(client, 3)
        yield c
    finally:
        c.close()


def test_sessions_complete_exactly_once_while_workers_are_killed(cluster: Cluster, tmp_path: Path) -> None:
    state = cluster.state_root / "kills"
    log = tmp_path / "attempts.log"
    tags, n, pause = [f"kill-{i}" for i in range(6)], 8, 0.15
    rng = random.Random(5)
    before = None
    with nl.Runtime(address=cluster.address, state_dir=str(state), tick_interval=0.05) as rt:
        futures: dict[str, nl.Future] = {}
        for tag in tags:
            with rt.session(tag):
                futures[tag] = fw.pipeline(str(log), tag, n, pause)
        killed: set[int] = set()
        while len(killed) < 3:
            # Kill a worker that is running a body right now, a few steps into the run.
            rows = _wait("calls to run", lambda: (fw.read_log(log) if log.exists() else []) and
                         len(fw.read_log(log)) >= 8 + 10 * len(killed) and fw.read_log(log))
            assert not all(f.done() for f in futures.values()), "the run ended before the faults"
            live = {p.pid for p in cluster.live()}
            victim = next((pid for *_, pid in reversed(rows) if pid in live), rng.choice(sorted(live)))
            cluster.kill(victim)
            killed.add(victim)
        results = {tag: f.result(timeout=120) for tag, f in futures.items()}
        assert results == {tag: fw.expected(tag, n) for tag in tags}  # equal to a fault-free run
        for tag in tags:  # duplicated (and lost) committed effects: none
            assert managed_list("effects", session=tag).copy() == fw.expected_effects(tag, n), tag
        assert fw.bodies_after_commit(rt.journal, tags, log) == []
        assert fw.reruns_not_explained_by(killed, log) == []
        executions = fw.executions_per_key(log)
        retried = [f.context.attempt for f in futures.values() if f.context.attempt > 0]
        nested_retries = [r for r in fw.read_log(log) if r[1] > 0]
        assert retried or nested_retries, "no call was retried: the faults missed every call"
        assert max(executions.values()) > 1  # some bodies really ran again: their process died
        before = len(fw.read_log(log))
    assert before is not None
    # A new driver runs the same sessions again: every call replays, no body runs.
    with nl.Runtime(address=cluster.address, state_dir=str(state), tick_interval=0.05) as rt:
        again = {}
        for tag in tags:
            with rt.session(tag):
                again[tag] = fw.pipeline(str(log), tag, n, pause)
        assert {t: f.result(timeout=60) for t, f in again.items()} == results
    assert len(fw.read_log(log)) == before


class _RetryHook:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    @nl.hookimpl
    def nalar_should_retry(self, call: Any, error: BaseException, attempt: int) -> bool | None:
        self.seen.append((call.context.session, type(error).__name__, attempt))
        return False if call.context.session.startswith("no-retry") else None


def test_the_retry_hook_and_the_attempt_counter(cluster: Cluster, tmp_path: Path) -> None:
    with nl.Runtime(address=cluster.address, state_dir=str(cluster.state_root / "hook"), tick_interval=0.05) as rt:
        hook = _RetryHook()
        rt.register_plugin(hook)
        cluster.wait_for_workers(rt.client, 3)
        for session, retried in (("retry-1", True), ("no-retry-1", False)):
            pids = tmp_path / f"{session}.pids"
            with rt.session(session):
                fut = st.slow_pid(str(pids), 1.0)
            first = _wait("the call to start", lambda p=pids: p.exists() and p.read_text().split())
            victim = int(first[0])
            cluster.kill(victim)
            if retried:
                assert fut.result(timeout=60) != victim  # ran again, on another worker
                assert fut.context.attempt == 1
                assert pids.read_text().split()[-1] == "1"  # the body saw attempt 1
            else:
                with pytest.raises(WorkerLostError):
                    fut.result(timeout=60)
                assert fut.context.attempt == 0
        assert hook.seen == [("retry-1", "WorkerLostError", 0), ("no-retry-1", "WorkerLostError", 0)]


def test_workers_reach_state_through_their_driver_only(cluster: Cluster) -> None:
    state = cluster.state_root / "remote"
    with nl.Runtime(address=cluster.address, state_dir=str(state), tick_interval=0.05) as rt:
        cluster.wait_for_workers(rt.client, 3)
        with rt.session("remote-1"):
            info = fw.touch(str(cluster.canary)).result()
            assert st.note("a").result() == 1
            assert st.nested_notes(2).result() == ["a", "nested-0", "nested-1"]
            assert st.anote("z").result() == ["a", "nested-0", "nested-1", "z"]
        assert len(rt.journal_records("remote-1")) == 5
    assert info["pid"] != os.getpid() and Path(info["cwd"]) != Path.cwd()
    assert not str(state).startswith(info["cwd"])
    audit = cluster.audit_log.read_text().splitlines()
    assert any(line.startswith("canary\t") for line in audit)  # the hook runs in the workers
    assert [line for line in audit if line.startswith("forbidden\t")] == []
