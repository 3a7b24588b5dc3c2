"""Interrupts, human in the loop and resumed runs: finished tools do not run again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import ToolNode
from langgraph.types import Command

from nalar_plugin import Runtime
from nalar_plugin.state import DiskcacheSaver, Store

from ._apps import approve, count, flaky, react_graph


def _executions(log: Path) -> list[str]:
    return sorted(log.read_text().split()) if log.exists() else []


def test_human_in_the_loop_resume_runs_each_tool_once(rt: Runtime, model_for: Any, thread_id: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    calls = [{"name": "count", "args": {"key": k, "log": str(log)}} for k in ("a", "b")]
    agent = create_agent(
        model_for([{"tool_calls": calls}, "both counted"]), [count],
        middleware=[HumanInTheLoopMiddleware(interrupt_on={"count": True}), rt.middleware()],
        checkpointer=InMemorySaver(),
    )
    cfg = {"configurable": {"thread_id": thread_id}}
    first = agent.invoke({"messages": [("user", "count a and b")]}, cfg)
    assert "__interrupt__" in first and _executions(log) == []

    resumed = agent.invoke(Command(resume={"decisions": [{"type": "approve"}, {"type": "approve"}]}), cfg)
    assert resumed["messages"][-1].content == "both counted"
    assert _executions(log) == ["a", "b"]
    tools = [n for n in rt.graph(thread_id).nodes if n["component"] == "count"]
    assert len(tools) == 2 and {n["status"] for n in tools} == {"finished"}


@pytest.mark.parametrize("journaled", [True, False], ids=["journaled", "idempotent"])
def test_a_resumed_tool_node_does_not_run_finished_tools_again(rt: Runtime, model_for: Any, thread_id: str,
                                                                tmp_path: Path, journaled: bool) -> None:
    log, flag = tmp_path / "log", tmp_path / "fail-once"
    flag.touch()
    calls = [{"name": "count", "args": {"key": "a", "log": str(log)}},
             {"name": "flaky", "args": {"key": "b", "log": str(log), "fail_flag": str(flag)}}]
    saver = DiskcacheSaver(Store(str(tmp_path / "checkpoints")))
    tools = [count, flaky]
    app = react_graph(model_for([{"tool_calls": calls}, "done"]), tools,
                      tool_node=ToolNode(tools, handle_tool_errors=False), checkpointer=saver)
    # A tool declared idempotent is not journaled: it may run again, and does.
    handler = rt.callback() if journaled else rt.callback(directives={"count": {"idempotent": True}})
    cfg = {"callbacks": [handler], "configurable": {"thread_id": thread_id}}
    with pytest.raises(RuntimeError, match="b failed once"):
        app.invoke({"messages": [("user", "count")]}, cfg)
    assert _executions(log) == ["a", "b"]

    final = app.invoke(None, cfg)  # resume from the checkpoint: LangGraph runs the tool node again
    assert final["messages"][-1].content == "done"
    if journaled:
        assert _executions(log) == ["a", "b", "b"]  # "a" finished before: the journal answers for it
    else:
        assert _executions(log) == ["a", "a", "b", "b"]


def test_interrupt_inside_a_tool_body(rt: Runtime, model_for: Any, thread_id: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    calls = [{"name": "count", "args": {"key": "a", "log": str(log)}}, {"name": "approve", "args": {"action": "ship"}}]
    tools = [count, approve]
    app = react_graph(model_for([{"tool_calls": calls}, "shipped"]), tools, checkpointer=InMemorySaver())
    cfg = {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id}}
    first = app.invoke({"messages": [("user", "ship it")]}, cfg)
    assert first["__interrupt__"][0].value == {"action": "ship"}
    final = app.invoke(Command(resume="approved"), cfg)
    assert final["messages"][-1].content == "shipped"
    assert sorted(m.content for m in final["messages"] if m.type == "tool") == ["counted a", "ship: approved"]
    assert _executions(log) == ["a"]  # the tool node ran twice, the finished tool once


def test_a_tool_result_the_journal_cannot_store_reaches_the_app_with_a_warning(rt: Runtime, model_for: Any,
                                                                                 thread_id: str) -> None:
    from nalar_plugin.errors import UnjournaledWarning

    from ._apps import opaque

    app = react_graph(model_for([{"name": "opaque", "args": {"text": "x"}}, "ok"]), [opaque])
    with pytest.warns(UnjournaledWarning, match="idempotent=True"):
        final = app.invoke({"messages": [("user", "go")]},
                           {"callbacks": [rt.callback()], "configurable": {"thread_id": thread_id}})
    (message,) = [m for m in final["messages"] if m.type == "tool"]
    assert message.artifact.text == "x"  # what the app gets without nalar
    assert rt.journal_records(thread_id) == []  # not recorded: a resumed run runs it again
    handler = rt.callback(directives={"opaque": {"idempotent": True}})
    final = app.invoke({"messages": [("user", "go")]}, {"callbacks": [handler], "configurable": {"thread_id": thread_id + "-i"}})
    (message,) = [m for m in final["messages"] if m.type == "tool"]
    assert message.artifact.text == "x"
