"""LangChain standard test suites for the byte store and the LLM cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_tests.integration_tests import (
    AsyncCacheTestSuite,
    BaseStoreAsyncTests,
    BaseStoreSyncTests,
    SyncCacheTestSuite,
)

from nalar_plugin.errors import ConfigError, SerializationError
from nalar_plugin.state import DiskcacheKVStore, DiskcacheLLMCache, Store


class TestDiskcacheKVStoreSync(BaseStoreSyncTests[bytes]):
    @pytest.fixture
    def kv_store(self, tmp_path: Path) -> Iterator[DiskcacheKVStore]:
        with DiskcacheKVStore(tmp_path / "kv") as kv:
            yield kv

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"


class TestDiskcacheKVStoreAsync(BaseStoreAsyncTests[bytes]):
    @pytest.fixture
    def kv_store(self, tmp_path: Path) -> Iterator[DiskcacheKVStore]:
        with DiskcacheKVStore(tmp_path / "kv") as kv:
            yield kv

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"


class TestDiskcacheLLMCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, tmp_path: Path) -> Iterator[DiskcacheLLMCache]:
        with DiskcacheLLMCache(tmp_path / "llm") as llm_cache:
            yield llm_cache


class TestDiskcacheLLMCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    def cache(self, tmp_path: Path) -> Iterator[DiskcacheLLMCache]:
        with DiskcacheLLMCache(tmp_path / "llm") as llm_cache:
            yield llm_cache


def test_kv_namespaces_share_a_directory(store: Store) -> None:
    first = DiskcacheKVStore(store, namespace="embeddings")
    second = DiskcacheKVStore(store, namespace="docs")
    first.mset([("k", b"1"), ("k:2", b"2")])
    second.mset([("k", b"other")])
    assert first.mget(["k"]) == [b"1"]
    assert second.mget(["k"]) == [b"other"]
    assert list(first.yield_keys(prefix="k")) == ["k", "k:2"]
    assert list(second.yield_keys()) == ["k"]


def test_kv_rejects_non_bytes_and_writes_nothing(store: Store) -> None:
    kv = DiskcacheKVStore(store)
    with pytest.raises(SerializationError, match="must be bytes"):
        kv.mset([("a", b"ok"), ("b", "text")])  # type: ignore[list-item]
    assert kv.mget(["a", "b"]) == [None, None]


def test_llm_cache_chat_generations_and_clear_scope(store: Store) -> None:
    cache = DiskcacheLLMCache(store)
    generations = [
        ChatGeneration(
            message=AIMessage(
                content="hi", tool_calls=[{"name": "f", "args": {"x": 1}, "id": "c1"}]
            ),
            generation_info={"finish_reason": "stop"},
        )
    ]
    cache.update("prompt", "model-a", generations)
    cache.update("prompt", "model-b", [Generation(text="other")])
    assert cache.lookup("prompt", "model-a") == generations
    assert cache.lookup("prompt", "model-b") == [Generation(text="other")]
    store.set("unrelated", 1)
    cache.clear()
    assert cache.lookup("prompt", "model-a") is None
    assert store.get("unrelated") == 1


def test_llm_cache_ttl_must_be_positive(store: Store) -> None:
    with pytest.raises(ConfigError):
        DiskcacheLLMCache(store, ttl=0)
