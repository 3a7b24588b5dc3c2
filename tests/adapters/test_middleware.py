"""The create_agent middleware and the ToolNode hooks; parallel tool calls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langgraph.prebuilt import ToolNode

from nalar_plugin import Runtime

from ._apps import (
    add,
    ameet,
    map_reduce_graph,
    meet,
    multiply,
    normalize,
    react_graph,
    records,
)

SCRIPT: list[Any] = [
    {"tool_calls": [{"name": "add", "args": {"a": 2, "b": 5}}, {"name": "multiply", "args": {"a": 6, "b": 7}}]},
    "7 and 42.",
]
INPUT = {"messages": [("user", "What are 2+5 and 6*7?")]}


def _components(rt: Runtime, session: str) -> list[str]:
    return sorted(n["component"] for n in rt.graph(session).nodes)


def _overlap(recs: list[dict[str, Any]]) -> bool:
    """True when every interval overlaps every other one (they all ran at once)."""
    return max(r["start"] for r in recs) < min(r["end"] for r in recs)


def test_create_agent_with_the_middleware(rt: Runtime, model_for: Any, thread_id: str) -> None:
    model = model_for(SCRIPT)
    plain = create_agent(model, [add, multiply]).invoke(INPUT, {"configurable": {"thread_id": thread_id + "-plain"}})
    agent = create_agent(model, [add, multiply], middleware=[rt.middleware()])
    served = agent.invoke(INPUT, {"configurable": {"thread_id": thread_id}})

    assert normalize(served["messages"]) == normalize(plain["messages"])
    assert all(r["worker"] is None for r in records(served["messages"]))  # run where they live, admitted by nalar
    assert _components(rt, thread_id) == ["SimulatedChatModel", "SimulatedChatModel", "add", "multiply"]
    tools = [n for n in rt.graph(thread_id).nodes if n["component"] in ("add", "multiply")]
    model_ids = {n["call_id"] for n in rt.graph(thread_id).nodes if n["component"] == "SimulatedChatModel"}
    assert all(len(t["dependencies"]) == 1 and t["dependencies"][0] in model_ids for t in tools)


def test_create_agent_with_the_middleware_async(rt: Runtime, model_for: Any, thread_id: str) -> None:
    agent = create_agent(model_for(SCRIPT), [add, multiply], middleware=[rt.middleware(priority=3.0)])
    served = asyncio.run(agent.ainvoke(INPUT, {"configurable": {"thread_id": thread_id}}))
    assert normalize(served["messages"])[-1][1] == "7 and 42."
    assert all(r["worker"] is None for r in records(served["messages"]))  # run where they live, admitted by nalar
    assert {n["priority"] for n in rt.graph(thread_id).nodes} == {3.0}


def test_parallel_tool_calls_of_one_message_run_at_once(rt: Runtime, model_for: Any, thread_id: str,
                                                                    tmp_path: Path) -> None:
    calls = [{"name": "meet", "args": {"name": n, "room": str(tmp_path), "group": 3}} for n in "abc"]
    agent = create_agent(model_for([{"tool_calls": calls}, "done"]), [meet], middleware=[rt.middleware()])
    final = agent.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": thread_id}})
    recs = records(final["messages"])
    assert len(recs) == 3 and all(r["worker"] is None for r in recs)  # where they live
    assert _overlap(recs)


def test_send_fan_out_runs_at_once(rt: Runtime, model_for: Any, thread_id: str, tmp_path: Path) -> None:
    app = map_reduce_graph(model_for(["summary"]), str(tmp_path))
    cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id, "group": 3}}
    final = app.invoke({"topics": ["x", "y", "z"]}, cfg)
    assert sorted(final["notes"]) == ["x", "y", "z"] and final["summary"] == "summary"
    assert all(r["worker"] is None for r in final["where"]) and _overlap(final["where"])
    calls = {n["call_id"]: n for n in rt.graph(thread_id).nodes}
    meets = [c for c in calls.values() if c["component"] == "meet"]
    (summary,) = [c for c in calls.values() if c["component"] == "SimulatedChatModel"]
    assert len(meets) == 3 and sorted(summary["dependencies"]) == sorted(c["call_id"] for c in meets)


def test_tool_node_hooks_route_only_the_tools(rt: Runtime, model_for: Any, thread_id: str) -> None:
    node = ToolNode([add, multiply], wrap_tool_call=rt.wrap_tool_call, awrap_tool_call=rt.awrap_tool_call)
    app = react_graph(model_for(SCRIPT), [add, multiply], tool_node=node)
    final = app.invoke(INPUT, {"configurable": {"thread_id": thread_id}})
    assert all(r["worker"] is None for r in records(final["messages"]))  # run where they live, admitted by nalar
    assert _components(rt, thread_id) == ["add", "multiply"]

    final = asyncio.run(app.ainvoke(INPUT, {"configurable": {"thread_id": thread_id + "-a"}}))
    assert normalize(final["messages"])[-1][1] == "7 and 42."
    assert _components(rt, thread_id + "-a") == ["add", "multiply"]


def test_async_tools_of_one_message_run_at_once(rt: Runtime, model_for: Any, thread_id: str,
                                                            tmp_path: Path) -> None:
    calls = [{"name": "ameet", "args": {"name": n, "room": str(tmp_path), "group": 3}} for n in "xyz"]
    node = ToolNode([ameet], awrap_tool_call=rt.awrap_tool_call)
    app = react_graph(model_for([{"tool_calls": calls}, "done"]), [ameet], tool_node=node)
    final = asyncio.run(app.ainvoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": thread_id}}))
    recs = records(final["messages"])
    assert len(recs) == 3 and all(r["worker"] is None for r in recs)  # where they live
    assert _overlap(recs)
