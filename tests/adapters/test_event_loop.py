"""Async all the way: a served async app's event loop never waits on nalar, and nothing keeps it alive."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from typing import Any

import distributed
import pytest

from nalar_plugin import Runtime
from nalar_plugin.state.store import Store

from ._apps import ameet, add, normalize, react_graph

SCRIPT: list[Any] = [
    {"tool_calls": [{"name": "add", "args": {"a": 1, "b": 2}}, {"name": "add", "args": {"a": 3, "b": 4}}]},
    "3 and 7.",
]


def test_an_async_node_never_blocks_its_loop_on_the_store_or_dask(rt: Runtime, model_for: Any, thread_id: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    touched: list[tuple[str, int]] = []

    def spy(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            touched.append((name, threading.get_ident()))
            return fn(*args, **kwargs)
        return wrapper

    for name in ("_fetch", "_put", "put_many", "delete", "contains", "keys", "transact"):
        monkeypatch.setattr(Store, name, spy(name, getattr(Store, name)))
    monkeypatch.setattr(distributed.Client, "sync", spy("Client.sync", distributed.Client.sync))
    app = react_graph(model_for(SCRIPT), [add])
    loops: list[int] = []

    async def main() -> Any:
        loops.append(threading.get_ident())
        cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id}}
        return await app.ainvoke({"messages": [("user", "1+2, 3+4?")]}, cfg)

    final = asyncio.run(main())
    assert normalize(final["messages"])[-1][1] == "3 and 7."
    assert {n["component"] for n in rt.graph(thread_id).nodes} == {"SimulatedChatModel", "add"}
    assert any(name == "put_many" for name, _ in touched)  # the tool calls were journaled ...
    assert [name for name, ident in touched if ident == loops[0]] == []  # ... never on the app's loop


def test_the_callback_keeps_no_loop_of_a_finished_run(rt: Runtime, model_for: Any, thread_id: str,
                                                      tmp_path: Any) -> None:
    calls = [{"name": "ameet", "args": {"name": n, "room": str(tmp_path), "group": 2}} for n in "ab"]
    app = react_graph(model_for([{"tool_calls": calls}, "met"]), [ameet])
    handler = rt.callback()
    refs: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> Any:
        refs.append(weakref.ref(asyncio.get_running_loop()))
        return await app.ainvoke({"messages": [("user", "meet")]},
                                 {"callbacks": [handler], "configurable": {"thread_id": thread_id}})

    final = asyncio.run(main())
    assert final["messages"][-1].content == "met"
    gc.collect()
    assert refs[0]() is None  # neither the handler nor the Runtime holds the run's loop
    assert handler.runs(thread_id)  # the run tree is still there to look at
    assert rt.calls.in_flight() == 0
