"""Managed state for nalar-plugin, kept in one diskcache directory.

:class:`Store` is the shared, process-safe key-value store. The other classes
adapt it to the LangGraph and LangChain interfaces; each uses its own key
prefix, so all of them can share one directory::

    Store             -            the store itself
    DiskcacheSaver    ckpt*:       LangGraph checkpointer
    DiskcacheStore    lgstore:     LangGraph long-term memory (BaseStore)
    DiskcacheNodeCache nodecache:  LangGraph node cache (CachePolicy)
    DiskcacheKVStore  kv:          LangChain byte store
    DiskcacheLLMCache llmcache:    LangChain LLM cache
    Journal           journal*:    the call journal: results and a per-session index
    managed_dict/list managed:     session-scoped managed state
    StateService      runtime.lock a Runtime's ownership of the directory (a file, not a key)

Example::

    store = Store("/var/lib/app/state")
    graph = builder.compile(
        checkpointer=DiskcacheSaver(store),
        store=DiskcacheStore(store),
        cache=DiskcacheNodeCache(store),
    )
"""

from __future__ import annotations

from nalar_plugin.state.checkpoint import DiskcacheSaver
from nalar_plugin.state.graph_store import DiskcacheStore
from nalar_plugin.state.journal import GcReport, Journal, JournalRecord, Retention
from nalar_plugin.state.kv import DiskcacheKVStore
from nalar_plugin.state.llm_cache import DiskcacheLLMCache
from nalar_plugin.state.managed import ManagedDict, ManagedList, managed_dict, managed_list
from nalar_plugin.state.node_cache import DiskcacheNodeCache
from nalar_plugin.state.retry import RetryPolicy
from nalar_plugin.state.service import StateService
from nalar_plugin.state.serde import SerdeProtocol, default_serde
from nalar_plugin.state.store import Store

__all__ = [
    "DiskcacheKVStore",
    "DiskcacheLLMCache",
    "DiskcacheNodeCache",
    "DiskcacheSaver",
    "DiskcacheStore",
    "GcReport",
    "Journal",
    "JournalRecord",
    "ManagedDict",
    "ManagedList",
    "Retention",
    "RetryPolicy",
    "SerdeProtocol",
    "StateService",
    "Store",
    "default_serde",
    "managed_dict",
    "managed_list",
]
