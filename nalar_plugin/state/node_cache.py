"""A LangGraph node cache (``langgraph.cache.base.BaseCache``) on a Store.

Layout::

    nodecache:/{label}/{label}...:{key}   cached node writes (type tag + payload)

A node compiled with a ``CachePolicy`` runs once per distinct input; later runs,
in this or another process that shares the directory, reuse its writes until
the policy's ``ttl`` (seconds) runs out.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from langgraph.cache.base import BaseCache, FullKey, Namespace, ValueT

from nalar_plugin.state._encoding import (
    dumps_value,
    escape,
    loads_value,
    ns_part,
    pack,
    unpack,
)
from nalar_plugin.state.serde import SerdeProtocol
from nalar_plugin.state.store import Store

__all__ = ["DiskcacheNodeCache"]

_PREFIX = "nodecache:"


def _cache_key(namespace: Namespace, key: str) -> str:
    return f"{_PREFIX}{ns_part(namespace)}:{escape(key)}"


class DiskcacheNodeCache(BaseCache[ValueT]):
    """LangGraph node cache kept in a nalar state directory.

    Args:
        store: An open :class:`Store`, or a directory path to open (then owned
            and closed by this object).
        serde: Serialiser for cached writes; defaults to the store's serde.

    Raises:
        StateError: Opening the directory failed.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        *,
        serde: SerdeProtocol | None = None,
    ) -> None:
        if isinstance(store, Store):
            self._store, self._owns_store = store, False
        else:
            self._store, self._owns_store = Store(store, serde=serde), True
        super().__init__(serde=serde if serde is not None else self._store.serde)

    @property
    def store(self) -> Store:
        """The underlying store."""
        return self._store

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickles as "the same store, the same settings", so the object can be
        # sent to a Dask worker in another process; the Store reopens its
        # directory there. A default serde is rebuilt rather than pickled.
        serde = None if self.serde is self._store.serde else self.serde
        return (functools.partial(DiskcacheNodeCache, serde=serde), (self._store,))

    def close(self) -> None:
        """Close the store if this object opened it."""
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> DiskcacheNodeCache[ValueT]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Read cached values; missing and expired keys are left out.

        Args:
            keys: ``(namespace, key)`` pairs.

        Returns:
            The values found, by the pair given.

        Raises:
            StateCorruptedError: A stored value cannot be decoded.
        """
        found: dict[FullKey, ValueT] = {}
        for namespace, key in keys:
            store_key = _cache_key(namespace, key)
            data = self._store.get_bytes(store_key)
            if data is None:
                continue
            type_, payload = unpack(data, key=store_key, length=2)
            found[(namespace, key)] = loads_value(
                self.serde, type_, payload, what=f"cache entry {store_key!r}"
            )
        return found

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Write values with optional TTLs (seconds), all in one transaction.

        Args:
            pairs: ``(namespace, key) -> (value, ttl)``. A ``ttl`` of ``None``
                never expires; zero or less is not stored (already expired).

        Raises:
            SerializationError: A value cannot be serialised (nothing is written).
        """
        entries: list[tuple[str, bytes, float | None]] = []
        for (namespace, key), (value, ttl) in pairs.items():
            if ttl is not None and ttl <= 0:
                continue
            store_key = _cache_key(namespace, key)
            typed = dumps_value(self.serde, value, what=f"cache entry {store_key!r}")
            entries.append((store_key, pack(typed), float(ttl) if ttl else None))
        if not entries:
            return
        with self._store.transact():
            for store_key, data, expire in entries:
                self._store.set_bytes(store_key, data, expire=expire)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the entries of the given namespaces, or all entries.

        Args:
            namespaces: Exact namespaces to clear; ``None`` clears the whole cache.
        """
        if namespaces is None:
            self._store.delete_prefix(_PREFIX)
            return
        with self._store.transact():
            for namespace in namespaces:
                self._store.delete_prefix(f"{_PREFIX}{ns_part(namespace)}:")

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Async :meth:`get` (runs in a worker thread)."""
        return await asyncio.to_thread(self.get, keys)

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Async :meth:`set` (runs in a worker thread)."""
        await asyncio.to_thread(self.set, pairs)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Async :meth:`clear` (runs in a worker thread)."""
        await asyncio.to_thread(self.clear, namespaces)
