"""The pluggy contract: hooks, validation, policies by entry point."""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nalar_plugin as nl
from nalar_plugin import hookspecs
from nalar_plugin.errors import CallVetoedError, PluginError

from . import _workflows as w

ROOT = Path(__file__).resolve().parents[1]


def test_every_hook_is_documented() -> None:
    names = [n for n in dir(hookspecs) if n.startswith("nalar_")]
    assert len(names) >= 8
    for n in names:
        doc = inspect.getdoc(getattr(hookspecs, n)) or ""
        assert doc.startswith("Called"), n
        assert "firstresult" in doc or "Observer hook" in doc or "Not firstresult" in doc, n
        assert "Observer hook" in doc or "Decision hook" in doc, n


class Recorder:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.admitted: list[str] = []
        self.finished: list[tuple[str, str]] = []

    @nl.hookimpl
    def nalar_call_created(self, call) -> None:  # only the arguments it needs
        self.created.append(call.context.call_id)

    @nl.hookimpl
    def nalar_call_admitted(self, instance) -> None:
        self.admitted.append(instance)

    @nl.hookimpl
    def nalar_call_finished(self, call, status) -> None:
        self.finished.append((call.context.call_id, status))


class Broken:
    @nl.hookimpl
    def nalar_call_created(self, call) -> None:
        raise RuntimeError("observer bug")


class Veto:
    @nl.hookimpl
    def nalar_call_veto(self, call):
        return "no explosions" if call.context.component == "explode" else None


def test_observer_and_decision_hooks(rt_threads: nl.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    rt_threads.register_plugin(rec)
    rt_threads.register_plugin(Broken())
    rt_threads.register_plugin(Veto())
    with caplog.at_level(logging.ERROR, logger="nalar_plugin.plugins"):
        fut = w.add(1, 1)
        assert fut.result() == 2  # a failing observer is contained
    assert "observer bug" in caplog.text
    deadline = time.time() + 10
    while (fut.call_id, "finished") not in rec.finished and time.time() < deadline:
        time.sleep(0.01)
    assert fut.call_id in rec.created
    assert "add/0" in rec.admitted
    assert (fut.call_id, "finished") in rec.finished
    vetoed = w.explode("x")
    with pytest.raises(CallVetoedError, match="no explosions"):
        vetoed.result()


def test_invalid_plugins_fail_at_registration(rt_threads: nl.Runtime) -> None:
    class UnknownHook:
        @nl.hookimpl
        def nalar_call_creatd(self, call) -> None: ...

    class BadArgs:
        @nl.hookimpl
        def nalar_call_created(self, call, colour) -> None: ...

    with pytest.raises(PluginError, match=r"UnknownHook.*nalar_call_creatd\(call\)"):
        rt_threads.register_plugin(UnknownHook())
    with pytest.raises(PluginError, match=r"BadArgs.*nalar_call_created.*colour"):
        rt_threads.register_plugin(BadArgs())
    assert w.add(2, 2).result() == 4  # the runtime still serves


class Exploding(nl.Policy):
    """A policy that always raises."""

    def decide(self, snapshot):
        raise ValueError("policy bug")


class PolicyPlugin:
    @nl.hookimpl
    def nalar_add_policies(self):
        return {"exploding": Exploding}


def test_failing_policy_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with nl.Runtime(tick_interval=0.01) as rt:
        rt.register_plugin(PolicyPlugin())
        rt.set_policy("exploding")
        with caplog.at_level(logging.ERROR, logger="nalar_plugin.scheduler.global_controller"):
            deadline = time.time() + 10
            while rt.controller.failures < 3 and time.time() < deadline:
                time.sleep(0.01)
            assert w.add(1, 2).result() == 3
        assert rt.controller.failures >= 3
        assert "policy bug" in caplog.text


def test_policy_must_have_decide() -> None:
    from nalar_plugin.plugins import PluginManager

    class NoDecide:
        pass

    class Plugin:
        @nl.hookimpl
        def nalar_add_policies(self):
            return {"broken": NoDecide}

    pm = PluginManager()
    pm.register(Plugin())
    with pytest.raises(PluginError, match="broken"):
        pm.policies()


def test_nalar_policies_lists_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "nalar_plugin.cli", "policies"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert any(line.startswith("fcfs") and "First come, first served" in line for line in out.stdout.splitlines())


def test_example_policy_package_installs_and_is_selected_by_name(tmp_path: Path) -> None:
    target = tmp_path / "site"
    pkg = ROOT / "integrations" / "nalar-policy-example"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(pkg)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    listed = subprocess.run([sys.executable, "-m", "nalar_plugin.cli", "policies"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert "shortest_queue" in listed.stdout, listed.stderr
    code = (
        "import nalar_plugin as nl\n"
        "from tests import _workflows as w\n"
        "with nl.Runtime(policy='shortest_queue') as rt:\n"
        "    assert w.add(1, 2).result() == 3\n"
        "    decisions = rt.controller.tick()\n"
        "    print(type(rt.policy).__name__, type(decisions[0]).__name__)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["ShortestQueuePolicy", "RouteWeights"]
