"""Tests of DiskcacheSaver: LangGraph conformance suite, real graphs, edge cases."""

from __future__ import annotations

import itertools
import operator
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Annotated, Any, TypedDict, cast

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    CheckpointMetadata,
    empty_checkpoint,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from nalar_plugin.errors import ConfigError, SerializationError
from nalar_plugin.state import DiskcacheSaver, Store


async def test_conformance_suite_passes_every_capability(tmp_path: Path) -> None:
    counter = itertools.count()

    @checkpointer_test(name="DiskcacheSaver")
    async def factory() -> AsyncGenerator[BaseCheckpointSaver[str], None]:
        # A fresh directory per capability suite, as the runner expects.
        saver = DiskcacheSaver(tmp_path / f"suite-{next(counter)}")
        try:
            yield saver
        finally:
            saver.close()

    report = await validate(factory)
    assert report.passed_all(), report.to_dict()
    assert report.conformance_level() == "FULL"
    for capability in Capability:
        result = report.results[capability.value]
        assert result.detected, f"{capability.value} not implemented"
        assert result.passed is True, (capability.value, result.failures)
        assert result.tests_failed == 0 and result.tests_skipped == 0
        assert result.tests_passed > 0


# -- a real graph: interrupt, restart, resume ------------------------------------------


class _State(TypedDict, total=False):
    question: str
    answer: str
    log: Annotated[list[str], operator.add]


def _ask(state: _State) -> dict[str, Any]:
    reply = interrupt({"question": state["question"]})
    return {"answer": reply, "log": ["ask"]}


def _finish(state: _State) -> dict[str, Any]:
    return {"answer": state["answer"].upper(), "log": ["finish"]}


def _graph(saver: DiskcacheSaver) -> Any:
    builder = StateGraph(_State)
    builder.add_node("ask", _ask)
    builder.add_node("finish", _finish)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=saver)


def test_interrupt_and_resume_across_saver_instances(state_dir: Path) -> None:
    config = {"configurable": {"thread_id": "conversation:1"}}
    first = DiskcacheSaver(state_dir)
    paused = _graph(first).invoke({"question": "name?", "log": []}, config)
    assert paused["__interrupt__"][0].value == {"question": "name?"}
    first.close()

    # A new process would do exactly this: open the same directory again.
    second = DiskcacheSaver(state_dir)
    graph = _graph(second)
    snapshot = graph.get_state(config)
    assert snapshot.next == ("ask",)
    assert snapshot.tasks[0].interrupts[0].value == {"question": "name?"}
    done = graph.invoke(Command(resume="ada"), config)
    assert done["answer"] == "ADA"
    assert done["log"] == ["ask", "finish"]
    history = list(graph.get_state_history(config))
    assert len(history) >= 4
    assert graph.get_state(config).next == ()
    second.close()


async def test_async_graph_interrupt_and_resume(state_dir: Path) -> None:
    config = {"configurable": {"thread_id": "async-thread"}}
    with Store(state_dir) as store:
        paused = await _graph(DiskcacheSaver(store)).ainvoke(
            {"question": "color?", "log": []}, config
        )
        assert "__interrupt__" in paused
        done = await _graph(DiskcacheSaver(store)).ainvoke(
            Command(resume="red"), config
        )
        assert done["answer"] == "RED"
        assert [
            s async for s in _graph(DiskcacheSaver(store)).aget_state_history(config)
        ]


async def test_sync_methods_work_inside_a_running_loop(store: Store) -> None:
    saver = DiskcacheSaver(store)
    config: RunnableConfig = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    stored = saver.put(config, checkpoint, {"source": "input", "step": -1}, {})
    assert saver.get_tuple(stored) is not None
    assert (await saver.aget_tuple(stored)) is not None
    # A sync graph run from a coroutine uses the sync saver methods.
    result = _graph(saver).invoke(
        {"question": "q", "log": []}, {"configurable": {"thread_id": "inner"}}
    )
    assert "__interrupt__" in result


# -- edge cases ---------------------------------------------------------------------


def _put(
    saver: DiskcacheSaver,
    thread_id: str,
    values: dict[str, Any],
    versions: dict[str, Any],
    new_versions: dict[str, Any],
    parent: RunnableConfig | None = None,
    metadata: dict[str, Any] | None = None,
) -> RunnableConfig:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = versions
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if parent is not None:
        configurable["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    return saver.put(
        {"configurable": configurable},
        checkpoint,
        cast(CheckpointMetadata, metadata or {"source": "loop", "step": 0}),
        new_versions,
    )


def test_unserialisable_channel_writes_nothing(store: Store) -> None:
    saver = DiskcacheSaver(store)
    with pytest.raises(SerializationError, match="channel 'bad'"):
        _put(
            saver,
            "t",
            {"ok": 1, "bad": object()},
            {"ok": 1, "bad": 1},
            {"ok": 1, "bad": 1},
        )
    assert saver.get_tuple({"configurable": {"thread_id": "t"}}) is None
    assert list(store.keys()) == []


def test_thread_ids_with_separators_stay_apart(store: Store) -> None:
    saver = DiskcacheSaver(store)
    _put(saver, "a:b", {"x": "inner"}, {"x": 1}, {"x": 1})
    _put(saver, "a", {"x": "outer"}, {"x": 1}, {"x": 1})
    assert len(list(saver.list({"configurable": {"thread_id": "a"}}))) == 1
    inner = saver.get_tuple({"configurable": {"thread_id": "a:b"}})
    assert inner is not None and inner.checkpoint["channel_values"] == {"x": "inner"}
    saver.delete_thread("a")
    assert saver.get_tuple({"configurable": {"thread_id": "a:b"}}) is not None


def test_prune_keeps_delta_channel_ancestors(store: Store) -> None:
    saver = DiskcacheSaver(store)
    counters = {"counters_since_delta_snapshot": {"d": [2, 2]}}
    c0 = _put(saver, "t", {"d": "old"}, {"d": 1}, {"d": 1})
    c1 = _put(saver, "t", {"d": "seed"}, {"d": 2}, {"d": 2}, parent=c0)
    c2 = _put(saver, "t", {}, {"d": 3}, {"d": 3}, parent=c1, metadata=counters)
    c3 = _put(saver, "t", {}, {"d": 4}, {"d": 4}, parent=c2, metadata=counters)
    saver.prune(["t"], strategy="keep_latest")
    kept = [t.config["configurable"]["checkpoint_id"] for t in saver.list(None)]
    ids = [c["configurable"]["checkpoint_id"] for c in (c3, c2, c1)]
    assert kept == ids
    history = saver.get_delta_channel_history(config=c3, channels=["d"])
    assert history["d"]["seed"] == "seed"
    # The blob only the pruned checkpoint used is gone.
    assert not [k for k in store.keys("ckpt-blob:") if k.endswith(":d:1")]


def test_prune_rejects_unknown_strategy(store: Store) -> None:
    with pytest.raises(ConfigError, match="strategy"):
        DiskcacheSaver(store).prune(["t"], strategy="sometimes")


def test_missing_thread_id_is_a_config_error(store: Store) -> None:
    with pytest.raises(ConfigError, match="thread_id"):
        DiskcacheSaver(store).get_tuple({"configurable": {}})


def test_versions_increase(store: Store) -> None:
    saver = DiskcacheSaver(store)
    first = saver.get_next_version(None, None)
    second = saver.get_next_version(first, None)
    assert first < second
    assert saver.get_next_version(5, None).startswith(f"{6:032}")
