"""Tests of DiskcacheStore (LangGraph long-term memory) and DiskcacheNodeCache."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TypedDict, cast

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from langgraph.types import CachePolicy

from nalar_plugin.errors import ConfigError
from nalar_plugin.state import DiskcacheNodeCache, DiskcacheStore, Store

# -- DiskcacheStore -----------------------------------------------------------------


@pytest.fixture
def memory(store: Store) -> DiskcacheStore:
    return DiskcacheStore(store)


def test_put_get_update_delete(memory: DiskcacheStore) -> None:
    memory.put(("users", "u1"), "profile", {"name": "ada", "age": 36})
    item = memory.get(("users", "u1"), "profile")
    assert item is not None
    assert item.value == {"name": "ada", "age": 36}
    assert item.namespace == ("users", "u1") and item.key == "profile"
    time.sleep(0.01)
    memory.put(("users", "u1"), "profile", {"name": "ada", "age": 37})
    updated = memory.get(("users", "u1"), "profile")
    assert updated is not None and updated.value["age"] == 37
    assert updated.created_at == item.created_at
    assert updated.updated_at > item.updated_at
    memory.delete(("users", "u1"), "profile")
    assert memory.get(("users", "u1"), "profile") is None
    assert memory.get(("users", "nobody"), "profile") is None


def test_search_with_filters_limit_offset(memory: DiskcacheStore) -> None:
    for i in range(6):
        memory.put(
            ("docs", "team" if i % 2 else "solo"),
            f"d{i}",
            {"n": i, "kind": "even" if i % 2 == 0 else "odd", "meta": {"lang": "en"}},
        )
    memory.put(("docsx",), "other", {"n": 100})  # shares the text prefix "docs"
    assert len(memory.search(("docs",), limit=100)) == 6
    assert {i.key for i in memory.search(("docs", "team"))} == {"d1", "d3", "d5"}
    odd = memory.search(("docs",), filter={"kind": "odd"})
    assert sorted(i.value["n"] for i in odd) == [1, 3, 5]
    big = memory.search(("docs",), filter={"n": {"$gte": 3}, "meta": {"lang": "en"}})
    assert sorted(i.value["n"] for i in big) == [3, 4, 5]
    assert (
        memory.search(("docs",), filter={"n": {"$ne": 0, "$lt": 2}})[0].value["n"] == 1
    )
    assert memory.search(("docs",), filter={"missing": {"$gt": 1}}) == []
    page = memory.search(("docs",), limit=2, offset=1)
    assert len(page) == 2
    all_keys = [i.key for i in memory.search(("docs",), limit=100)]
    assert [i.key for i in page] == all_keys[1:3]
    # No vector index: query is ignored, scores are None.
    hits = memory.search(("docs",), query="anything", filter={"kind": "even"})
    assert len(hits) == 3 and all(h.score is None for h in hits)
    with pytest.raises(ConfigError, match="operator"):
        memory.search(("docs",), filter={"n": {"$regex": "x"}})


def test_list_namespaces(memory: DiskcacheStore) -> None:
    memory.put(("a", "b", "c"), "k", {"v": 1})
    memory.put(("a", "b", "d"), "k", {"v": 1})
    memory.put(("a", "x"), "k", {"v": 1})
    memory.put(("z", "b", "c"), "k", {"v": 1})
    assert memory.list_namespaces() == [
        ("a", "b", "c"),
        ("a", "b", "d"),
        ("a", "x"),
        ("z", "b", "c"),
    ]
    assert memory.list_namespaces(prefix=("a",), max_depth=2) == [
        ("a", "b"),
        ("a", "x"),
    ]
    assert memory.list_namespaces(suffix=("c",)) == [("a", "b", "c"), ("z", "b", "c")]
    assert memory.list_namespaces(prefix=("*", "b")) == [
        ("a", "b", "c"),
        ("a", "b", "d"),
        ("z", "b", "c"),
    ]
    assert memory.list_namespaces(limit=1, offset=1) == [("a", "b", "d")]


def test_batch_and_abatch(memory: DiskcacheStore) -> None:
    results = memory.batch(
        [
            PutOp(("n",), "k1", {"v": 1}),
            PutOp(("n",), "k2", {"v": 2}),
            GetOp(("n",), "k1"),
            SearchOp(("n",), filter={"v": 2}),
            ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("n",)),)),
            PutOp(("n",), "k1", None),
            GetOp(("n",), "k1"),
        ]
    )
    assert results[0] is None and results[1] is None
    got, found = results[2], results[3]
    assert isinstance(got, Item) and got.value == {"v": 1}
    assert isinstance(found, list) and [cast(Item, i).key for i in found] == ["k2"]
    assert results[4] == [("n",)]
    assert results[6] is None


async def test_async_methods(memory: DiskcacheStore) -> None:
    await memory.aput(("async",), "k", {"v": "x"})
    item = await memory.aget(("async",), "k")
    assert item is not None and item.value == {"v": "x"}
    assert [i.key for i in await memory.asearch(("async",))] == ["k"]
    assert await memory.alist_namespaces() == [("async",)]
    await memory.adelete(("async",), "k")
    assert await memory.aget(("async",), "k") is None


def test_invalid_namespaces_are_rejected(memory: DiskcacheStore) -> None:
    with pytest.raises(InvalidNamespaceError):
        memory.put(("has.dot",), "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        memory.batch([GetOp(("a.b",), "k")])


def test_keys_and_labels_with_separators(memory: DiskcacheStore) -> None:
    memory.put(("a:b", "c/d"), "key:with/colons%", {"v": 1})
    memory.put(("a",), "k", {"v": 2})
    item = memory.get(("a:b", "c/d"), "key:with/colons%")
    assert item is not None and item.value == {"v": 1}
    assert [i.key for i in memory.search(("a",))] == ["k"]
    assert memory.list_namespaces() == [("a",), ("a:b", "c/d")]


def test_ttl_expires_items(memory: DiskcacheStore) -> None:
    memory.put(("ttl",), "short", {"v": 1}, ttl=0.005)  # minutes: 0.3 s
    memory.put(("ttl",), "forever", {"v": 2})
    assert memory.get(("ttl",), "short") is not None
    time.sleep(0.4)
    assert memory.get(("ttl",), "short") is None
    assert [i.key for i in memory.search(("ttl",))] == ["forever"]


def test_persists_across_instances(state_dir: Path) -> None:
    with DiskcacheStore(state_dir) as first:
        first.put(("prefs",), "u1", {"theme": "dark"})
    with DiskcacheStore(state_dir) as second:
        item = second.get(("prefs",), "u1")
        assert item is not None and item.value == {"theme": "dark"}


class _MemoryState(TypedDict, total=False):
    user: str
    fact: str
    recalled: str


def _remember(state: _MemoryState, *, store: BaseStore) -> dict[str, Any]:
    if state.get("fact"):
        store.put(("memories", state["user"]), "fact", {"text": state["fact"]})
    item = store.get(("memories", state["user"]), "fact")
    return {"recalled": item.value["text"] if item else ""}


def test_graph_uses_store(store: Store) -> None:
    builder = StateGraph(_MemoryState)
    builder.add_node("remember", _remember)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    graph = builder.compile(store=DiskcacheStore(store))
    assert graph.invoke({"user": "u1", "fact": "likes tea"})["recalled"] == "likes tea"
    # Another run (no checkpointer, no shared thread) reads the memory back,
    # here through a second handle on the directory.
    with DiskcacheStore(store.path) as other:
        fresh = builder.compile(store=other)
        assert fresh.invoke({"user": "u1"})["recalled"] == "likes tea"
        assert fresh.invoke({"user": "u2"})["recalled"] == ""


# -- DiskcacheNodeCache ---------------------------------------------------------------


def test_node_cache_get_set_clear(store: Store) -> None:
    cache: DiskcacheNodeCache[Any] = DiskcacheNodeCache(store)
    a, b = (("ns", "a"), "k1"), (("ns", "b"), "k1")
    cache.set({a: ({"out": [1, 2]}, None), b: ("bee", None)})
    assert cache.get([a, b, (("ns", "c"), "k1")]) == {a: {"out": [1, 2]}, b: "bee"}
    cache.clear([("ns", "a")])
    assert cache.get([a, b]) == {b: "bee"}
    cache.clear()
    assert cache.get([a, b]) == {}
    store.set("unrelated", 1)
    cache.clear()
    assert store.get("unrelated") == 1


def test_node_cache_ttl(store: Store) -> None:
    cache: DiskcacheNodeCache[Any] = DiskcacheNodeCache(store)
    key = (("ns",), "k")
    cache.set({key: ("v", 1)})
    assert cache.get([key]) == {key: "v"}
    time.sleep(1.1)
    assert cache.get([key]) == {}


async def test_node_cache_async(store: Store) -> None:
    cache: DiskcacheNodeCache[Any] = DiskcacheNodeCache(store)
    key = (("ns",), "k")
    await cache.aset({key: ([1], None)})
    assert await cache.aget([key]) == {key: [1]}
    await cache.aclear()
    assert await cache.aget([key]) == {}


class _CacheState(TypedDict, total=False):
    x: int
    y: int


def _cached_graph(cache: DiskcacheNodeCache[Any], calls: list[int]) -> Any:
    def double(state: _CacheState) -> dict[str, Any]:
        calls.append(state["x"])
        return {"y": state["x"] * 2}

    builder = StateGraph(_CacheState)
    builder.add_node("double", double, cache_policy=CachePolicy())
    builder.add_edge(START, "double")
    builder.add_edge("double", END)
    return builder.compile(cache=cache)


def test_graph_node_runs_once_per_input(state_dir: Path) -> None:
    calls: list[int] = []
    with Store(state_dir) as store:
        graph = _cached_graph(DiskcacheNodeCache(store), calls)
        assert graph.invoke({"x": 2}) == {"x": 2, "y": 4}
        assert graph.invoke({"x": 2}) == {"x": 2, "y": 4}
        assert calls == [2]
        assert graph.invoke({"x": 3})["y"] == 6
        assert calls == [2, 3]
    # The cache outlives the process-local objects: reopen the directory.
    with Store(state_dir) as reopened:
        again = _cached_graph(DiskcacheNodeCache(reopened), calls)
        assert again.invoke({"x": 2})["y"] == 4
        assert calls == [2, 3]
        again.clear_cache()
        again.invoke({"x": 2})
        assert calls == [2, 3, 2]


async def test_async_graph_node_cache(store: Store) -> None:
    calls: list[int] = []
    graph = _cached_graph(DiskcacheNodeCache(store), calls)
    assert (await graph.ainvoke({"x": 5}))["y"] == 10
    assert (await graph.ainvoke({"x": 5}))["y"] == 10
    assert calls == [5]
