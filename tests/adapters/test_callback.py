"""The callback handler: a StateGraph with a ToolNode, served by adding ``rt.callback()``."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from nalar_plugin import Runtime, hookimpl
from nalar_plugin.errors import CallVetoedError

from ._apps import add, multiply, normalize, react_graph, records

SCRIPT: list[Any] = [
    {"tool_calls": [{"name": "add", "args": {"a": 1, "b": 2}}, {"name": "multiply", "args": {"a": 3, "b": 4}}]},
    "The answers are 3 and 12.",
]
INPUT = {"messages": [("user", "What are 1+2 and 3*4?")]}


def _cfg(thread_id: str, *callbacks: Any, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
    if callbacks:
        cfg["callbacks"] = list(callbacks)
    for key, value in extra.items():
        cfg.setdefault(key, {}).update(value)
    return cfg


def _by_component(rt: Runtime, session: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for node in rt.graph(session).nodes:
        out.setdefault(node["component"], []).append(node)
    return out


def test_served_run_matches_plain_run_and_tools_run_where_they_live(rt: Runtime, model_for: Any,
                                                                    thread_id: str) -> None:
    app = react_graph(model_for(SCRIPT), [add, multiply])
    plain = app.invoke(INPUT, _cfg(thread_id + "-plain"))
    served = app.invoke(INPUT, _cfg(thread_id, rt.callback()))

    assert normalize(served["messages"]) == normalize(plain["messages"])
    assert [r["worker"] for r in records(plain["messages"])] == [None, None]
    assert [r["worker"] for r in records(served["messages"])] == [None, None]  # nothing asked them to travel
    assert {n["executor"] for n in rt.graph(thread_id).nodes if n["component"] in ("add", "multiply")} == {
        "add/0", "multiply/0"}  # yet each was admitted by its instance's local controller
    assert len(rt.graph(thread_id + "-plain")) == 0  # a run without the handler is untouched


def test_calls_appear_in_the_session_graph_with_their_dependencies(rt: Runtime, model_for: Any, thread_id: str) -> None:
    app = react_graph(model_for(SCRIPT), [add, multiply])
    app.invoke(INPUT, _cfg(thread_id, rt.callback()))

    calls = _by_component(rt, thread_id)
    first, second = sorted(calls["SimulatedChatModel"], key=lambda n: n["started"])
    (add_call,), (mul_call,) = calls["add"], calls["multiply"]
    assert {n["status"] for nodes in calls.values() for n in nodes} == {"finished"}
    assert add_call["dependencies"] == [first["call_id"]] and mul_call["dependencies"] == [first["call_id"]]
    assert set(second["dependencies"]) == {add_call["call_id"], mul_call["call_id"]}
    assert first["dependencies"] == []
    # Keyed by the session, the LangGraph task that ran it, and the tool call's id.
    session, task, tool_call = add_call["idempotency_key"].split("/")
    assert (session, tool_call) == (thread_id, "call_0_0") and task.startswith("tools:")
    assert {e["kind"] for e in rt.graph(thread_id).edges} == {"data"}


def test_run_tree_records_nodes_steps_and_sessions(rt: Runtime, model_for: Any, thread_id: str) -> None:
    handler = rt.callback()
    react_graph(model_for(SCRIPT), [add, multiply]).invoke(INPUT, _cfg(thread_id, handler))

    runs = handler.runs(thread_id)
    tools = [r for r in runs if r.kind == "tool"]
    models = [r for r in runs if r.kind == "chat_model"]
    assert sorted(r.name for r in tools) == ["add", "multiply"]
    assert {(r.node, r.step) for r in tools} == {("tools", 2)}
    assert [(r.node, r.step) for r in models] == [("agent", 1), ("agent", 3)]
    assert all(r.session == thread_id and r.status == "finished" and r.call_id for r in tools + models)
    called = {n["call_id"] for n in rt.graph(thread_id).nodes}
    assert {r.call_id for r in tools + models} == called
    by_id = {r.run_id: r for r in runs}
    assert all(by_id[r.parent_run_id].kind == "chain" for r in tools)
    root = [t for t in handler.tree(thread_id) if t["parent_run_id"] is None]
    assert len(root) == 1 and root[0]["children"]


class _Events(BaseCallbackHandler):
    """The app's own callback: counts the events it sees."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def _hit(self, name: str, **kwargs: Any) -> None:
        self.seen[name] += 1

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._hit("chat_model_start")

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._hit("llm_end")

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID, **kwargs: Any) -> None:
        self._hit("tool_start:" + serialized["name"])

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._hit("tool_end:" + output.name)

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._hit("chain_start")


def test_app_callbacks_still_see_their_events(rt: Runtime, model_for: Any, thread_id: str) -> None:
    app = react_graph(model_for(SCRIPT), [add, multiply])
    plain, served = _Events(), _Events()
    app.invoke(INPUT, _cfg(thread_id + "-plain", plain))
    app.invoke(INPUT, _cfg(thread_id, served, rt.callback()))
    assert served.seen == plain.seen
    assert served.seen["tool_end:add"] == 1 and served.seen["llm_end"] == 2


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream", "batch"])
def test_every_entry_point_is_served(rt: Runtime, model_for: Any, thread_id: str, how: str) -> None:
    app = react_graph(model_for(SCRIPT), [add, multiply])
    cb = rt.callback()
    threads = [thread_id] if how != "batch" else [thread_id, thread_id + "-b"]
    if how == "invoke":
        finals = [app.invoke(INPUT, _cfg(thread_id, cb))]
    elif how == "ainvoke":
        finals = [asyncio.run(app.ainvoke(INPUT, _cfg(thread_id, cb)))]
    elif how == "stream":
        chunks = list(app.stream(INPUT, _cfg(thread_id, cb), stream_mode="values"))
        finals = [chunks[-1]]
        assert len(chunks) > 2  # every step streamed out
    elif how == "astream":
        async def collect() -> list[Any]:
            return [c async for c in app.astream(INPUT, _cfg(thread_id, cb), stream_mode="values")]

        chunks = asyncio.run(collect())
        finals = [chunks[-1]]
        assert len(chunks) > 2
    else:
        finals = app.batch([INPUT, INPUT], [_cfg(t, cb) for t in threads])
    for final, session in zip(finals, threads):
        assert normalize(final["messages"])[-1][1] == "The answers are 3 and 12."
        assert all(r["worker"] is None for r in records(final["messages"]))  # run where they live, admitted by nalar
        assert sorted(_by_component(rt, session)) == ["SimulatedChatModel", "add", "multiply"]


def test_priority_deadline_and_session_come_from_the_run_config(rt: Runtime, model_for: Any, thread_id: str) -> None:
    deadline = time.time() + 600
    app = react_graph(model_for(SCRIPT), [add, multiply])
    cfg = _cfg(thread_id, rt.callback(), metadata={"nalar_priority": 7}, configurable={"nalar_deadline": deadline})
    app.invoke(INPUT, cfg)
    nodes = rt.graph(thread_id).nodes
    assert len(nodes) == 4
    assert {(n["priority"], n["deadline"]) for n in nodes} == {(7.0, deadline)}

    other = thread_id + "-session"
    app.invoke(INPUT, _cfg(thread_id + "-ignored", rt.callback(session=other, priority=2.0)))
    assert len(rt.graph(other)) == 4 and len(rt.graph(thread_id + "-ignored")) == 0
    assert {n["priority"] for n in rt.graph(other).nodes} == {2.0}


class _Observer:
    def __init__(self) -> None:
        self.created: list[Any] = []
        self.finished: list[str] = []
        self.runs: list[Any] = []

    @hookimpl
    def nalar_adapter_run(self, run: Any) -> None:
        self.runs.append(run)

    @hookimpl
    def nalar_call_created(self, call: Any) -> None:
        self.created.append(call)

    @hookimpl
    def nalar_call_finished(self, call: Any, status: str) -> None:
        self.finished.append(status)


class _Veto:
    @hookimpl
    def nalar_call_veto(self, call: Any) -> str | None:
        return "multiplication is closed today" if call.context.component == "multiply" else None


class _InPlace:
    @hookimpl
    def nalar_adapter_route(self, kind: str, name: str, run: Any) -> bool | None:
        return False if name == "add" else None


def test_plugins_observe_veto_and_keep_calls_in_place(rt: Runtime, model_for: Any, thread_id: str) -> None:
    app = react_graph(model_for(SCRIPT), [add, multiply])
    observer = _Observer()
    rt.register_plugin(observer)
    try:
        app.invoke(INPUT, _cfg(thread_id, rt.callback()))
        # A tool without staged writes hands its value back while the journal
        # commits it; its finished hook follows the commit.
        deadline = time.monotonic() + 30
        while observer.finished.count("finished") < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        rt.plugins.pm.unregister(observer)
    mine = [c for c in observer.created if c.context.session == thread_id]
    assert sorted(c.context.component for c in mine) == ["SimulatedChatModel", "SimulatedChatModel", "add", "multiply"]
    tool_call = next(c for c in mine if c.context.component == "add")
    assert tool_call.extra["adapter"] == "tool" and tool_call.extra["langgraph_node"] == "tools"
    assert tool_call.extra["langgraph_step"] == 2
    assert observer.finished.count("finished") >= 4
    kinds = Counter(r.kind for r in observer.runs if r.session == thread_id)
    assert kinds["tool"] == 2 and kinds["chat_model"] == 2 and kinds["chain"] > 2

    veto = _Veto()
    rt.register_plugin(veto)
    try:
        with pytest.raises(CallVetoedError, match="multiplication is closed today"):
            app.invoke(INPUT, _cfg(thread_id + "-veto", rt.callback()))
    finally:
        rt.plugins.pm.unregister(veto)

    in_place = _InPlace()
    rt.register_plugin(in_place)
    try:
        final = app.invoke(INPUT, _cfg(thread_id + "-inplace", rt.callback()))
    finally:
        rt.plugins.pm.unregister(in_place)
    add_record, mul_record = records(final["messages"])
    assert add_record["worker"] is None and mul_record["worker"] is None
    assert "add" not in _by_component(rt, thread_id + "-inplace")  # not a nalar call at all
    assert "multiply" in _by_component(rt, thread_id + "-inplace")


def test_calls_nested_in_a_tool_call_are_served_too(rt: Runtime, model_for: Any, server: Any, thread_id: str) -> None:
    from ._apps import consult

    script = [{"name": "consult", "args": {"question": "is it safe?", "engine_url": server.url}}, "The expert agrees."]
    app = react_graph(model_for(script), [consult])
    final = app.invoke({"messages": [("user", "ask")]}, _cfg(thread_id, rt.callback()))
    assert [m.content for m in final["messages"] if m.type == "tool"] == ["expert: is it safe?"]
    nodes = rt.graph(thread_id).nodes
    (tool_call,) = [n for n in nodes if n["component"] == "consult"]
    nested = [n for n in nodes if n["parent"] == tool_call["call_id"]]
    assert [n["component"] for n in nested] == ["SimulatedChatModel"]
    assert {"src": tool_call["call_id"], "dst": nested[0]["call_id"], "kind": "spawn"} in rt.graph(thread_id).edges


def test_a_subgraph_streamed_with_its_namespaces_is_served(rt: Runtime, model_for: Any, thread_id: str) -> None:
    from ._apps import subgraph_app

    # The parent's intro message is the conversation's first AI message.
    app = subgraph_app(model_for(["(the intro)", *SCRIPT]))
    plain = app.invoke(INPUT)

    async def collect() -> list[Any]:
        cfg = _cfg(thread_id, rt.callback())
        return [c async for c in app.astream(INPUT, cfg, subgraphs=True, stream_mode="values")]

    chunks = asyncio.run(collect())
    namespaces = {ns for ns, _ in chunks}
    assert () in namespaces and any(ns and ns[0].startswith("compute:") for ns in namespaces)
    final = [c for ns, c in chunks if ns == ()][-1]
    assert normalize(final["messages"]) == normalize(plain["messages"])
    assert final["messages"][-1].content == "Answer: The answers are 3 and 12."
    assert sorted(n["component"] for n in rt.graph(thread_id).nodes) == [
        "SimulatedChatModel", "SimulatedChatModel", "add", "multiply"]
