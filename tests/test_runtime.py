"""The Runtime: embedded and remote clusters, configuration, nesting, lifecycle."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import dask.config
import pytest

import nalar_plugin as nl
from nalar_plugin.errors import ConfigError, PolicyNotFoundError

from . import _workflows as w

ROOT = Path(__file__).resolve().parents[1]


def _run_py(code: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env=full_env, cwd=cwd, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_runtimes_open_and_close_many_times() -> None:
    for i in range(3):
        with nl.Runtime() as rt:
            assert nl.active_runtime() is rt
            assert w.add(i, 1).result() == i + 1
        assert rt.closed
        assert nl.active_runtime() is None
    rt = nl.Runtime()
    rt.close()
    rt.close()  # closing twice is fine
    assert w.add(1, 1) == 2  # no Runtime: plain Python


def test_embedded_processes_listen_on_loopback_only() -> None:
    with nl.Runtime(processes=True, dashboard=True) as rt:
        addr = rt.client.scheduler.address
        assert addr.startswith("tcp://127.0.0.1:")
        workers = rt.client.scheduler_info(n_workers=-1)["workers"]
        assert workers and all(a.startswith("tcp://127.0.0.1:") for a in workers)
        assert rt.dashboard_link is not None and "127.0.0.1" in rt.dashboard_link
        info = w.whoami().result()
        assert info["pid"] != os.getpid()


def test_embedded_threads_runs_in_process() -> None:
    with nl.Runtime() as rt:
        assert rt.client.scheduler.address.startswith("inproc://")
        assert w.whoami().result()["pid"] == os.getpid()


def test_config_from_kwargs_and_dask_config() -> None:
    with dask.config.set({"nalar.tick-interval": "20ms", "nalar.worker-slots": 64}):
        with nl.Runtime() as rt:
            assert rt.controller.interval == pytest.approx(0.02)
            assert rt.config["worker-slots"] == 64
            nthreads = rt.client.nthreads()
            assert set(nthreads.values()) == {64}
        with nl.Runtime(tick_interval=0.5) as rt:
            assert rt.controller.interval == 0.5  # keyword arguments win


def test_config_from_environment_and_yaml(tmp_path: Path) -> None:
    code = """
        import nalar_plugin as nl
        with nl.Runtime() as rt:
            print(rt.controller.interval, rt.config["worker-slots"])
    """
    assert _run_py(code, {"DASK_NALAR__TICK_INTERVAL": "30ms"}).split() == ["0.03", "1024"]
    (tmp_path / "nalar.yaml").write_text("nalar:\n  worker-slots: 77\n")
    assert _run_py(code, {"DASK_CONFIG": str(tmp_path)}).split() == ["0.1", "77"]


def test_bad_settings_fail_clearly() -> None:
    with pytest.raises(ConfigError, match="unknown nalar setting"):
        nl.Runtime(no_such_setting=1)
    with pytest.raises(ConfigError, match="tick-interval"):
        nl.Runtime(tick_interval=-1)
    with pytest.raises(PolicyNotFoundError, match="installed policies: .*fcfs"):
        nl.Runtime(policy="no-such-policy")
    assert nl.active_runtime() is None


@pytest.mark.parametrize("processes", [False, True])
def test_nested_calls_never_deadlock(processes: bool) -> None:
    # One slot per worker: a call waiting on its nested call gives its slot back.
    with nl.Runtime(processes=processes, n_workers=1, worker_slots=1) as rt:
        assert w.deep(6).result(timeout=120) == 6
        assert w.nested_sum(10).result(timeout=120) == 90
        outer = [w.nested_sum(3) for _ in range(4)]
        assert nl.value(outer, timeout=120) == [6] * 4
        assert rt.closed is False


def test_tls_security_is_passed_through() -> None:
    from distributed.security import Security

    sec = Security.temporary()
    with nl.Runtime(processes=True, n_workers=1, security=sec) as rt:
        assert rt.client.scheduler.address.startswith("tls://127.0.0.1:")
        assert w.add(20, 22).result() == 42


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("cluster")
    sched_file = tmp / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(sched_file)],
        env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        for i in range(2):
            wdir = tmp / f"w{i}"
            wdir.mkdir()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1",
                 "--nthreads", "16", "--nworkers", "1", "--no-dashboard", "--resources", "SLOT=1"],
                env=env, cwd=wdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        import json

        from distributed import Client

        address = json.loads(sched_file.read_text())["address"]
        with Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_join_existing_cluster_by_address(dask_cluster: str) -> None:
    with nl.Runtime(address=dask_cluster) as rt:
        assert rt.cluster is None
        assert len(rt.client.scheduler_info(n_workers=-1)["workers"]) == 2
        with rt.session("remote"):
            a = w.add(1, 2)
            b = w.total([a, w.add(a, 1)])
            assert b.result() == 7
            assert w.whoami().result()["pid"] != os.getpid()
            assert w.nested_sum(5).result() == 20
            assert w.needs_slot().result() == "ran"  # resources that a worker offers
            counter = w.Counter()
            counter.incr()
            assert counter.incr().result() == 2
        assert len(rt.graph("remote")) >= 5
    # A second driver joins the same cluster after the first left.
    with nl.Runtime(address=dask_cluster):
        assert w.add(2, 2).result() == 4


@pytest.mark.parametrize("processes", [False, True])
def test_every_listening_socket_is_on_loopback(processes: bool) -> None:
    import psutil

    with nl.Runtime(processes=processes, dashboard=True) as rt:
        assert w.add(1, 1).result() == 2
        # This process (scheduler, nannies, threads-mode workers) and the worker processes.
        pids = {os.getpid(), *rt.client.run(os.getpid).values()}
        procs = [psutil.Process(pid) for pid in pids]
        listening = [c.laddr for p in procs for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening  # the dashboard at least
        assert {a.ip for a in listening} == {"127.0.0.1"}, listening
        assert rt.dashboard_link is not None
