"""A LangChain byte store (``langchain_core.stores.BaseStore[str, bytes]``) on a Store.

Layout::

    kv:{namespace}:{key}   the bytes, as given

Several byte stores can share one directory under different ``namespace``
names (e.g. one for an embeddings cache, one for documents).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Any

from langchain_core.stores import BaseStore

from nalar_plugin.errors import SerializationError
from nalar_plugin.state._encoding import escape
from nalar_plugin.state.store import Store

__all__ = ["DiskcacheKVStore"]

_PREFIX = "kv:"


class DiskcacheKVStore(BaseStore[str, bytes]):
    """LangChain key-value byte store kept in a nalar state directory.

    Args:
        store: An open :class:`Store`, or a directory path to open (then owned
            and closed by this object).
        namespace: Keeps this byte store's keys apart from others in the same
            directory.

    Raises:
        StateError: Opening the directory failed.
    """

    def __init__(
        self, store: Store | str | os.PathLike[str], *, namespace: str = "default"
    ) -> None:
        if isinstance(store, Store):
            self._store, self._owns_store = store, False
        else:
            self._store, self._owns_store = Store(store), True
        # The namespace is escaped (no ":" inside), the user's key is appended
        # verbatim, so a user prefix maps to a store prefix one to one.
        self._namespace = namespace
        self._base = f"{_PREFIX}{escape(namespace)}:"

    @property
    def store(self) -> Store:
        """The underlying store."""
        return self._store

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickles as "the same store, the same settings", so the object can be
        # sent to a Dask worker in another process; the Store reopens its
        # directory there. A default serde is rebuilt rather than pickled.
        factory = functools.partial(DiskcacheKVStore, namespace=self._namespace)
        return (factory, (self._store,))

    def close(self) -> None:
        """Close the store if this object opened it."""
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> DiskcacheKVStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _key(self, key: str) -> str:
        if not isinstance(key, str):
            raise SerializationError(
                f"byte store keys must be str, got {type(key).__name__}: {key!r}"
            )
        return self._base + key

    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """Read values.

        Args:
            keys: The keys.

        Returns:
            The values, ``None`` for missing keys, in key order.
        """
        return [self._store.get_bytes(self._key(key)) for key in keys]

    def mset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        """Write values in one transaction.

        Args:
            key_value_pairs: ``(key, bytes)`` pairs.

        Raises:
            SerializationError: A key is not str or a value is not bytes
                (nothing is written).
        """
        entries: list[tuple[str, bytes]] = []
        for key, value in key_value_pairs:
            if not isinstance(value, bytes):
                raise SerializationError(
                    f"byte store value for key {key!r} must be bytes, "
                    f"got {type(value).__name__}"
                )
            entries.append((self._key(key), value))
        with self._store.transact():
            for store_key, value in entries:
                self._store.set_bytes(store_key, value)

    def mdelete(self, keys: Sequence[str]) -> None:
        """Delete keys; missing keys are ignored.

        Args:
            keys: The keys.
        """
        store_keys = [self._key(key) for key in keys]
        with self._store.transact():
            for store_key in store_keys:
                self._store.delete(store_key)

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        """Iterate over keys in sorted order.

        Args:
            prefix: Only keys starting with this.

        Yields:
            The keys.
        """
        base_length = len(self._base)
        for store_key in self._store.keys(self._base + (prefix or "")):
            yield store_key[base_length:]

    async def amget(self, keys: Sequence[str]) -> list[bytes | None]:
        """Async :meth:`mget` (runs in a worker thread)."""
        return await asyncio.to_thread(self.mget, keys)

    async def amset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        """Async :meth:`mset` (runs in a worker thread)."""
        await asyncio.to_thread(self.mset, key_value_pairs)

    async def amdelete(self, keys: Sequence[str]) -> None:
        """Async :meth:`mdelete` (runs in a worker thread)."""
        await asyncio.to_thread(self.mdelete, keys)

    async def ayield_keys(self, *, prefix: str | None = None) -> AsyncIterator[str]:
        """Async :meth:`yield_keys` (the keys are read in a worker thread)."""
        keys = await asyncio.to_thread(lambda: list(self.yield_keys(prefix=prefix)))
        for key in keys:
            yield key
