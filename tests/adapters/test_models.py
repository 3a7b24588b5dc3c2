"""Model calls routed to component instances: session affinity and migration."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel, ConfigDict

from nalar_plugin import Runtime
from nalar_plugin.adapters.requests import _model_attr
from nalar_plugin.testing import EngineServer, SimulatedChatModel, SimulatedEngine

from ._apps import add, react_graph
from .conftest import FAST

SCRIPT: list[Any] = [{"name": "add", "args": {"a": 1, "b": 1}}, "two", "again two"]


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[Any]]:
    """Two engines, each also behind its own server (for worker processes)."""
    engines = [SimulatedEngine(f"replica-{i}", FAST) for i in range(2)]
    servers = [EngineServer(e).start() for e in engines]
    yield list(zip(engines, servers))
    for s in servers:
        s.close()


def _models(rt: Runtime, replicas: list[Any]) -> list[SimulatedChatModel]:
    return [
        SimulatedChatModel(engine=server.url if rt.config["processes"] else engine, script=SCRIPT)
        for engine, server in replicas
    ]


def _served_by(rt: Runtime, session: str, component: str) -> list[str]:
    nodes = sorted((n for n in rt.graph(session).nodes if n["component"] == component), key=lambda n: n["started"])
    return [n["executor"].split("@")[0] for n in nodes]


def test_sessions_keep_their_instance(rt: Runtime, replicas: list[Any]) -> None:
    name = f"llm-{uuid.uuid4().hex[:6]}"
    models = _models(rt, replicas)
    instances = rt.deploy_model(name, models, capacity=4)
    assert len(instances) == 2
    app = react_graph(models[0], [add])
    threads = [f"aff-{uuid.uuid4().hex[:6]}" for _ in range(6)]
    cb = rt.callback()
    finals = app.batch([{"messages": [("user", "1+1?")]}] * len(threads),
                       [{"callbacks": [cb], "configurable": {"thread_id": t}} for t in threads])
    used = set()
    for thread, final in zip(threads, finals):
        served = _served_by(rt, thread, name)
        assert len(served) == 2 and len(set(served)) == 1  # both model calls on one instance
        engines = {m.response_metadata["model_name"] for m in final["messages"] if m.type == "ai"}
        assert engines == {f"replica-{instances.index(served[0])}"}
        used.add(served[0])
    assert used == set(instances)


def test_a_migrated_session_moves_to_the_other_instance(rt: Runtime, replicas: list[Any]) -> None:
    name = f"llm-{uuid.uuid4().hex[:6]}"
    models = _models(rt, replicas)
    first, second = rt.deploy_model(name, models)
    app = react_graph(models[1], [add], checkpointer=InMemorySaver())
    thread = f"mig-{uuid.uuid4().hex[:6]}"
    cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread}}
    app.invoke({"messages": [("user", "1+1?")]}, cfg)
    (src,) = set(_served_by(rt, thread, name))
    dst = second if src == first else first

    rt.plane.migrate(thread, src, dst)  # what the global controller does for a migrate decision
    final = app.invoke({"messages": [("user", "and again?")]}, cfg)
    assert _served_by(rt, thread, name) == [src, src, dst]
    assert final["messages"][-1].response_metadata["model_name"] == f"replica-{[first, second].index(dst)}"


def test_chat_models_deployed_with_plain_deploy_are_routed_too(rt: Runtime, replicas: list[Any]) -> None:
    name = f"llm-{uuid.uuid4().hex[:6]}"
    models = _models(rt, replicas)
    first, second = rt.deploy(name, models, stateful=True)
    thread = f"raw-{uuid.uuid4().hex[:6]}"
    final = react_graph(models[0], [add]).invoke(
        {"messages": [("user", "1+1?")]}, {"callbacks": [rt.callback()], "configurable": {"thread_id": thread}})
    served = _served_by(rt, thread, name)
    assert len(served) == 2 and len(set(served)) == 1
    assert final["messages"][-1].response_metadata["model_name"] == f"replica-{[first, second].index(served[0])}"
    # A direct component call still reaches the model's own methods.
    assert rt.call(name, "invoke", "hello").result().tool_calls[0]["name"] == "add"


def test_directives_are_made_once_for_every_run_and_follow_a_later_deploy(rt_threads: Runtime,
                                                                          replicas: list[Any]) -> None:
    # Each run brings its own handler (rt.callback() per invoke): the directives of a
    # component are still made once, from what they are made of, not once per handler.
    name = f"llm-{uuid.uuid4().hex[:6]}"
    service = rt_threads.adapters
    one, two = rt_threads.callback().nalar_switch, rt_threads.callback().nalar_switch
    plain = service.directives(one, "model", name, {})
    assert service.directives(two, "model", name, {}) is plain and plain.idempotent
    tuned = rt_threads.callback(directives={name: {"idempotent": False}}).nalar_switch
    assert not service.directives(tuned, "model", name, {}).idempotent  # other options, other directives
    rt_threads.deploy_model(name, [SimulatedChatModel(engine=replicas[0][0], script=SCRIPT)], capacity=3)
    deployed = service.directives(one, "model", name, {})
    assert deployed is not plain and deployed.max_concurrency == 3  # the component's, once it is deployed


def test_a_model_is_named_as_getattr_would_name_it() -> None:
    class Fielded(BaseModel):
        model_name: str = "fielded"

    class Extra(BaseModel):
        model_config = ConfigDict(extra="allow")

    class Prop(BaseModel):
        @property
        def model(self) -> str:
            return "from-a-property"

    class Plain:
        model = "plain"

    objects = [Fielded(), Extra(model="extra-name"), Extra(), Prop(), Plain(), object()]
    for obj in objects:
        for attr in ("model_name", "model"):
            assert _model_attr(obj, attr) == getattr(obj, attr, None), (obj, attr)
