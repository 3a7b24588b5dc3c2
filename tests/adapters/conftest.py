"""Runtimes and simulated engines for the adapter tests.

One Runtime per mode for the whole package (starting worker processes is the
slow part), each with its own state directory so journaled results of earlier
test runs never replay. In processes mode the models reach their engine over
HTTP (an in-process engine does not travel to other processes).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nalar_plugin import Runtime
from nalar_plugin.testing import (
    EngineConfig,
    EngineServer,
    SimulatedChatModel,
    SimulatedEngine,
)

FAST = EngineConfig(time_scale=0.001)


@pytest.fixture(scope="package")
def engine() -> SimulatedEngine:
    """One fast simulated engine for every adapter test."""
    return SimulatedEngine("adapters", FAST)


@pytest.fixture(scope="package")
def server(engine: SimulatedEngine) -> Iterator[EngineServer]:
    """The engine behind an OpenAI-compatible server on 127.0.0.1."""
    with EngineServer(engine) as srv:
        yield srv


@pytest.fixture(scope="package", params=["threads", "processes"])
def rt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A Runtime on an embedded LocalCluster, in threads and in processes mode."""
    state = tmp_path_factory.mktemp(f"state-{request.param}")
    with Runtime(processes=request.param == "processes", tick_interval=0.05, state_dir=str(state)) as runtime:
        yield runtime


@pytest.fixture(scope="package")
def rt_threads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A threads-mode Runtime."""
    with Runtime(tick_interval=0.05, state_dir=str(tmp_path_factory.mktemp("state-threads-only"))) as runtime:
        yield runtime


@pytest.fixture
def model_for(rt: Runtime, engine: SimulatedEngine, server: EngineServer) -> Callable[..., SimulatedChatModel]:
    """Make a scripted model that works on ``rt``'s workers."""

    def make(script: Any, **fields: Any) -> SimulatedChatModel:
        target: Any = server.url if rt.config["processes"] else engine
        return SimulatedChatModel(engine=target, script=script, **fields)

    return make


@pytest.fixture
def thread_id() -> str:
    """A fresh LangGraph thread id (a fresh nalar session)."""
    return f"t-{uuid.uuid4().hex[:10]}"
