"""What does not travel to a worker process runs in the caller's process, under the same scheduling."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from nalar_plugin import Runtime
from nalar_plugin.adapters import InProcessWarning, NotSendable
from nalar_plugin.adapters._parcel import resolve, sendable
from nalar_plugin.testing import SimulatedChatModel

from ._apps import locked_tool, normalize, react_graph, records

SCRIPT: list[Any] = [{"name": "locked", "args": {"text": "abc"}}, "cba"]


def test_an_unpicklable_tool_runs_in_process_with_a_warning(rt: Runtime, model_for: Any, thread_id: str) -> None:
    tool = locked_tool()
    app = react_graph(model_for(SCRIPT), [tool])
    cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id}}
    if rt.config["processes"]:
        with pytest.warns(InProcessWarning, match="tool 'locked' cannot be sent to a Dask worker process"):
            final = app.invoke({"messages": [("user", "reverse abc")]}, cfg)
        (record,) = records(final["messages"])
        assert record["pid"] == os.getpid() and record["worker"] is None
    else:  # the workers share this process: the tool travels by reference
        final = app.invoke({"messages": [("user", "reverse abc")]}, cfg)
        (record,) = records(final["messages"])
        assert record["worker"] is not None
    assert normalize(final["messages"])[-2][1] == "cba"
    (call,) = [n for n in rt.graph(thread_id).nodes if n["component"] == "locked"]
    assert call["status"] == "finished" and call["executor"].startswith("locked/")


def test_an_unpicklable_model_runs_in_process_with_a_warning(rt: Runtime, model_for: Any, thread_id: str) -> None:
    model = model_for(["hello"], metadata={"guard": threading.Lock()})
    app = react_graph(model, [])
    cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id}}
    if rt.config["processes"]:
        with pytest.warns(InProcessWarning, match="chat model 'SimulatedChatModel'.*metadata"):
            final = app.invoke({"messages": [("user", "hi")]}, cfg)
    else:
        final = app.invoke({"messages": [("user", "hi")]}, cfg)
    assert final["messages"][-1].content == "hello"
    assert [n["status"] for n in rt.graph(thread_id).nodes] == ["finished"]


def test_a_chat_openai_travels_as_its_constructor_fields() -> None:
    model = ChatOpenAI(model="m", base_url="http://127.0.0.1:9/v1", api_key="k", temperature=0.5)
    sent = sendable(model, "chat model 'm'")
    assert sent is not model
    import pickle

    rebuilt = resolve(pickle.loads(pickle.dumps(sent)))
    assert (rebuilt.model_name, rebuilt.openai_api_base, rebuilt.temperature) == ("m", "http://127.0.0.1:9/v1", 0.5)
    assert rebuilt.openai_api_key.get_secret_value() == "k"


def test_a_lost_user_field_is_not_sendable() -> None:
    model = SimulatedChatModel(engine="http://127.0.0.1:9/v1", metadata={"guard": threading.Lock()})
    with pytest.raises(NotSendable, match="field\\(s\\) \\['metadata'\\] do not pickle"):
        sendable(model, "chat model 'x'")


def test_a_tool_writing_to_an_in_memory_store_writes_to_the_apps_store(rt: Runtime, model_for: Any,
                                                                       thread_id: str) -> None:
    from langchain.agents import create_agent
    from langgraph.store.memory import InMemoryStore

    from ._apps import remember

    store = InMemoryStore()
    agent = create_agent(model_for([{"name": "remember", "args": {"fact": "blue"}}, "ok"]), [remember], store=store)
    cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id}}
    if rt.config["processes"]:
        with pytest.warns(InProcessWarning, match="the graph's store cannot be sent.*DiskcacheStore"):
            agent.invoke({"messages": [("user", "remember blue")]}, cfg)
    else:
        agent.invoke({"messages": [("user", "remember blue")]}, cfg)
    (item,) = store.search(("facts",))
    assert item.value["fact"] == "blue"
    assert (item.value["ran_on"] is None) == bool(rt.config["processes"])  # in process, else on a worker
