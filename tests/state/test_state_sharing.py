"""All components share one directory without collisions, and pickle by store."""

from __future__ import annotations

import pickle
from typing import Any

from langchain_core.outputs import Generation
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint

import nalar_plugin.state as state
from nalar_plugin.state import (
    DiskcacheKVStore,
    DiskcacheLLMCache,
    DiskcacheNodeCache,
    DiskcacheSaver,
    DiskcacheStore,
    Store,
)


def _fill(store: Store) -> dict[str, Any]:
    saver = DiskcacheSaver(store)
    config: RunnableConfig = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"c": 1}
    checkpoint["channel_versions"] = {"c": 1}
    stored = saver.put(config, checkpoint, {"source": "input", "step": -1}, {"c": 1})
    saver.put_writes(stored, [("c", 2)], "task")
    memory = DiskcacheStore(store)
    memory.put(("ns",), "k", {"v": 1})
    node_cache: DiskcacheNodeCache[Any] = DiskcacheNodeCache(store)
    node_cache.set({(("ns",), "k"): ("cached", None)})
    kv = DiskcacheKVStore(store)
    kv.mset([("k", b"bytes")])
    llm_cache = DiskcacheLLMCache(store)
    llm_cache.update("prompt", "llm", [Generation(text="out")])
    store.set("app:own", "plain")
    return {
        "saver": saver,
        "config": stored,
        "memory": memory,
        "node_cache": node_cache,
        "kv": kv,
        "llm_cache": llm_cache,
    }


def test_public_names_are_sorted() -> None:
    assert state.__all__ == sorted(state.__all__)
    assert {"Store", "DiskcacheSaver", "DiskcacheStore"} <= set(state.__all__)


def test_components_use_distinct_prefixes(store: Store) -> None:
    parts = _fill(store)
    prefixes = {key.split(":", 1)[0] for key in store}
    assert prefixes == {
        "app",
        "ckpt",
        "ckpt-blob",
        "ckpt-write",
        "kv",
        "lgstore",
        "llmcache",
        "nodecache",
    }
    parts["node_cache"].clear()
    parts["llm_cache"].clear()
    parts["saver"].delete_thread("t")
    assert parts["memory"].get(("ns",), "k") is not None
    assert parts["kv"].mget(["k"]) == [b"bytes"]
    assert store.get("app:own") == "plain"
    assert {key.split(":", 1)[0] for key in store} == {"app", "kv", "lgstore"}


def test_components_pickle_and_reopen_the_directory(store: Store) -> None:
    parts = _fill(store)
    saver = pickle.loads(pickle.dumps(parts["saver"]))
    memory = pickle.loads(pickle.dumps(parts["memory"]))
    node_cache = pickle.loads(pickle.dumps(parts["node_cache"]))
    kv = pickle.loads(pickle.dumps(parts["kv"]))
    llm_cache = pickle.loads(pickle.dumps(parts["llm_cache"]))
    try:
        restored = saver.get_tuple(parts["config"])
        assert restored is not None
        assert restored.checkpoint["channel_values"] == {"c": 1}
        assert restored.pending_writes == [("task", "c", 2)]
        assert memory.get(("ns",), "k").value == {"v": 1}
        assert node_cache.get([(("ns",), "k")]) == {(("ns",), "k"): "cached"}
        assert kv.mget(["k"]) == [b"bytes"]
        assert llm_cache.lookup("prompt", "llm") == [Generation(text="out")]
        assert saver.store is not store and saver.store.path == store.path
    finally:
        for part in (saver, memory, node_cache, kv, llm_cache):
            part.store.close()
