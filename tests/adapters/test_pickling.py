"""Calls run where their objects live unless shipping is asked for; what cannot travel stays, with a warning."""

from __future__ import annotations

import os
import pickle
import threading
import warnings
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from nalar_plugin import Runtime
from nalar_plugin.adapters import InProcessWarning, NotSendable
from nalar_plugin.adapters.shipping import resolve, sendable
from nalar_plugin.testing import SimulatedChatModel

from ._apps import add, locked_tool, normalize, react_graph, records

SCRIPT: list[Any] = [{"name": "locked", "args": {"text": "abc"}}, "cba"]


def test_a_tool_runs_where_it_lives_by_default(rt: Runtime, model_for: Any, thread_id: str) -> None:
    tool = locked_tool()  # an unpicklable tool needs no warning: nothing asked it to travel
    app = react_graph(model_for(SCRIPT), [tool])
    cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        final = app.invoke({"messages": [("user", "reverse abc")]}, cfg)
    (record,) = records(final["messages"])
    assert record["pid"] == os.getpid() and record["worker"] is None
    assert normalize(final["messages"])[-2][1] == "cba"
    (call,) = [n for n in rt.graph(thread_id).nodes if n["component"] == "locked"]
    assert call["status"] == "finished" and call["executor"].startswith("locked/")  # still admitted and recorded


def test_a_shipped_tool_that_cannot_travel_runs_in_place_with_one_warning(rt: Runtime, model_for: Any,
                                                                          thread_id: str) -> None:
    tool = locked_tool()
    cfg = {"callbacks": [rt.callback(ship=True)], "configurable": {"thread_id": thread_id}}
    if rt.config["processes"]:
        with pytest.warns(InProcessWarning, match="tool 'locked' cannot be sent to a Dask worker process"):
            final = react_graph(model_for(SCRIPT), [tool]).invoke({"messages": [("user", "reverse abc")]}, cfg)
    else:  # the workers share this process: there is nothing to send, and nothing to say
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            final = react_graph(model_for(SCRIPT), [tool]).invoke({"messages": [("user", "reverse abc")]}, cfg)
    (record,) = records(final["messages"])
    assert record["pid"] == os.getpid()
    again = {"callbacks": [rt.callback(ship=True)], "configurable": {"thread_id": thread_id + "-2"}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per object
        react_graph(model_for(SCRIPT), [tool]).invoke({"messages": [("user", "reverse abc")]}, again)


def test_a_shipped_tool_runs_on_a_worker_process(rt: Runtime, model_for: Any, thread_id: str) -> None:
    script: list[Any] = [{"name": "add", "args": {"a": 2, "b": 3}}, "five"]
    cfg = {"callbacks": [rt.callback(ship=["add"])], "configurable": {"thread_id": thread_id}}
    final = react_graph(model_for(script), [add]).invoke({"messages": [("user", "2+3")]}, cfg)
    (record,) = records(final["messages"])
    if rt.config["processes"]:
        assert record["pid"] != os.getpid() and record["worker"] is not None
    else:  # threads mode: the worker is in this process, so the tool runs where it lives
        assert record["pid"] == os.getpid()
    assert normalize(final["messages"])[-2][1] == "5"


def test_an_unpicklable_model_runs_where_it_lives(rt: Runtime, model_for: Any, thread_id: str) -> None:
    model = model_for(["hello"], metadata={"guard": threading.Lock()})
    app = react_graph(model, [])
    cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id}}
    final = app.invoke({"messages": [("user", "hi")]}, cfg)
    assert final["messages"][-1].content == "hello"
    assert [n["status"] for n in rt.graph(thread_id).nodes] == ["finished"]


def test_a_chat_openai_travels_as_its_constructor_fields() -> None:
    model = ChatOpenAI(model="m", base_url="http://127.0.0.1:9/v1", api_key="k", temperature=0.5)
    sent = sendable(model, "chat model 'm'")
    assert sent is not model
    rebuilt = resolve(pickle.loads(pickle.dumps(sent)))
    assert (rebuilt.model_name, rebuilt.openai_api_base, rebuilt.temperature) == ("m", "http://127.0.0.1:9/v1", 0.5)
    assert rebuilt.openai_api_key.get_secret_value() == "k"


def test_a_lost_user_field_is_not_sendable() -> None:
    model = SimulatedChatModel(engine="http://127.0.0.1:9/v1", metadata={"guard": threading.Lock()})
    with pytest.raises(NotSendable, match="field\\(s\\) \\['metadata'\\] do not pickle"):
        sendable(model, "chat model 'x'")


def test_deploying_a_model_that_cannot_travel_is_refused_with_worker_processes(rt: Runtime) -> None:
    model = SimulatedChatModel(engine="http://127.0.0.1:9/v1", metadata={"guard": threading.Lock()})
    if rt.config["processes"]:
        with pytest.raises(NotSendable, match="metadata"):
            rt.deploy_model(f"guarded-{id(model)}", [model])
    else:
        assert rt.deploy_model(f"guarded-{id(model)}", [model])  # nothing travels in threads mode


def test_a_tool_writing_to_an_in_memory_store_writes_to_the_apps_store(rt: Runtime, model_for: Any,
                                                                       thread_id: str) -> None:
    from langchain.agents import create_agent
    from langgraph.store.memory import InMemoryStore

    from ._apps import remember

    store = InMemoryStore()
    agent = create_agent(model_for([{"name": "remember", "args": {"fact": "blue"}}, "ok"]), [remember], store=store)
    cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id}}
    agent.invoke({"messages": [("user", "remember blue")]}, cfg)
    (item,) = store.search(("facts",))
    assert item.value["fact"] == "blue" and item.value["ran_on"] is None  # where the store lives
