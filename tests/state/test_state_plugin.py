"""The scheduler plugin: it serves only the driver's own directory, and gives back allowed_failures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from nalar_plugin.errors import StateError
from nalar_plugin.state import StatePlugin, Store
from nalar_plugin.state.access import HANDLER, parse_allowed_types
from nalar_plugin.state.plugin import _handle, identity_key, release
from nalar_plugin.state.retry import DEFAULT_RETRY


class _Scheduler:
    """The two things the plugin touches on a Dask scheduler."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.allowed_failures = 3
        self.workers: dict[str, Any] = {"tcp://127.0.0.1:1": object()}


def _plugin(path: Path, token: str = "rt-test") -> StatePlugin:
    return StatePlugin(token, str(path), DEFAULT_RETRY.to_dict(), ["my.pkg.Model"])


def test_a_directory_the_scheduler_cannot_see_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="cannot see the Runtime's state directory"):
        asyncio.run(_plugin(tmp_path / "missing").start(_Scheduler()))
    assert not (tmp_path / "missing").exists()  # nothing was created on the scheduler's host


def test_another_directory_at_the_same_path_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "state").close()  # a nalar directory, but not this Runtime's
    with pytest.raises(StateError, match="sees another directory"):
        asyncio.run(_plugin(tmp_path / "state").start(_Scheduler()))


def test_serving_a_runtime_and_releasing_it(tmp_path: Path) -> None:
    with Store(tmp_path / "state") as store:
        store.set_bytes(identity_key("rt-a"), b"")
        store.set_bytes(identity_key("rt-b"), b"")
    scheduler = _Scheduler()

    async def scenario() -> None:
        await _plugin(tmp_path / "state", "rt-a").start(scheduler)
        await _plugin(tmp_path / "state", "rt-b").start(scheduler)
        assert scheduler.handlers[HANDLER] is _handle and scheduler.allowed_failures == 0
        info = await _handle("info", "rt-a")
        assert info["retry"] == DEFAULT_RETRY.to_dict() and info["allowed_types"] == ["my.pkg.Model"]
        mine = "worker:tcp://127.0.0.1:1:e1"
        assert await _handle("begin", "rt-a", key="k", arg_hash="h", owner=mine, info=True) == {
            "state": "run", "record": None, "info": info}
        # A live worker holds the claim: wait. Its worker leaves: take it over.
        other = "worker:tcp://127.0.0.1:2:e2"
        scheduler.workers["tcp://127.0.0.1:2"] = object()
        assert (await _handle("begin", "rt-a", key="k", arg_hash="h", owner=other))["state"] == "wait"
        del scheduler.workers["tcp://127.0.0.1:1"]
        assert (await _handle("begin", "rt-a", key="k", arg_hash="h", owner=other))["state"] == "run"
        assert await _handle("release-claim", "rt-a", key="k", arg_hash="h", owner=other) is None
        assert (await _handle("begin", "rt-a", key="k", arg_hash="h", owner=mine))["state"] == "run"
        assert await _handle("read", "rt-a", session="s", name="n") is None
        with pytest.raises(StateError, match="unknown nalar state request"):
            await _handle("nope", "rt-a")
        await _handle("release", "rt-a")
        assert scheduler.allowed_failures == 0  # rt-b is still served
        with pytest.raises(StateError, match="serves no nalar state for Runtime rt-a"):
            await _handle("info", "rt-a")
        release("rt-b")
        assert scheduler.allowed_failures == 3  # given back when the last Runtime left

    asyncio.run(scenario())


def test_allowed_types_parse() -> None:
    assert parse_allowed_types(["a.b.C", "a.b:D"]) == [("a.b", "C"), ("a.b", "D")]
    assert parse_allowed_types(None) == []
    from nalar_plugin.errors import ConfigError

    with pytest.raises(ConfigError, match="module.Class"):
        parse_allowed_types(["NoModule"])
