"""A LangGraph long-term memory store (``langgraph.store.base.BaseStore``) on a Store.

Layout::

    lgstore:/{label}/{label}...:{key}   value (type tag + payload), created_at,
                                        updated_at, ttl in minutes

Search supports ``filter`` (exact values, nested dicts, and the ``$eq``,
``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte`` operators) with ``limit`` and
``offset``, in key order. There is no vector index: ``query`` is ignored, as
LangGraph's in-memory store does without an ``index`` config, and results carry
``score=None``. TTLs (minutes) map to diskcache expiry; reads refresh them when
``refresh_ttl`` is set.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)

from nalar_plugin.errors import ConfigError
from nalar_plugin.state._encoding import (
    dumps_value,
    escape,
    loads_value,
    ns_part,
    pack,
    parse_ns_part,
    unescape,
    unpack,
)
from nalar_plugin.state.serde import SerdeProtocol
from nalar_plugin.state.store import Store

__all__ = ["DiskcacheStore"]

_PREFIX = "lgstore:"
_OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})


def _item_key(namespace: tuple[str, ...], key: str) -> str:
    return f"{_PREFIX}{ns_part(namespace)}:{escape(key)}"


def _parse_item_key(key: str) -> tuple[tuple[str, ...], str] | None:
    ns_text, sep, key_text = key[len(_PREFIX) :].partition(":")
    if not sep:
        return None
    return parse_ns_part(ns_text), unescape(key_text)


def _apply_operator(value: Any, operator: str, operand: Any) -> bool:
    if operator not in _OPERATORS:
        raise ConfigError(
            f"unsupported filter operator {operator!r}; use one of {sorted(_OPERATORS)}"
        )
    if operator == "$eq":
        return bool(value == operand)
    if operator == "$ne":
        return bool(value != operand)
    try:
        if operator == "$gt":
            return bool(value > operand)
        if operator == "$gte":
            return bool(value >= operand)
        if operator == "$lt":
            return bool(value < operand)
        return bool(value <= operand)
    except TypeError:
        # A missing field or a value of another type does not match, as in a
        # JSONB comparison; it is not an error.
        return False


def _matches(value: Any, condition: Any) -> bool:
    """JSONB-like comparison of a stored value against a filter condition."""
    if isinstance(condition, dict):
        if any(isinstance(k, str) and k.startswith("$") for k in condition):
            return all(_apply_operator(value, op, arg) for op, arg in condition.items())
        if not isinstance(value, dict):
            return False
        return all(_matches(value.get(k), v) for k, v in condition.items())
    if isinstance(condition, (list, tuple)):
        return (
            isinstance(value, (list, tuple))
            and len(value) == len(condition)
            and all(_matches(v, c) for v, c in zip(value, condition, strict=True))
        )
    return bool(value == condition)


def _namespace_matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise ConfigError(f"unsupported namespace match type {condition.match_type!r}")
    return all(p == "*" or n == p for n, p in pairs)


class DiskcacheStore(BaseStore):
    """LangGraph ``BaseStore`` (long-term memory) kept in a nalar state directory.

    Args:
        store: An open :class:`Store`, or a directory path to open (then owned
            and closed by this object).
        serde: Serialiser for item values; defaults to the store's serde.
        ttl: Optional LangGraph ``TTLConfig`` (``default_ttl`` in minutes,
            ``refresh_on_read``).

    Raises:
        StateError: Opening the directory failed.
    """

    supports_ttl: bool = True

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        *,
        serde: SerdeProtocol | None = None,
        ttl: TTLConfig | None = None,
    ) -> None:
        if isinstance(store, Store):
            self._store, self._owns_store = store, False
        else:
            self._store, self._owns_store = Store(store, serde=serde), True
        self._serde: SerdeProtocol = serde if serde is not None else self._store.serde
        self.ttl_config = ttl

    @property
    def store(self) -> Store:
        """The underlying store."""
        return self._store

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickles as "the same store, the same settings", so the object can be
        # sent to a Dask worker in another process; the Store reopens its
        # directory there. A default serde is rebuilt rather than pickled.
        serde = None if self._serde is self._store.serde else self._serde
        factory = functools.partial(DiskcacheStore, serde=serde, ttl=self.ttl_config)
        return (factory, (self._store,))

    def close(self) -> None:
        """Close the store if this object opened it."""
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> DiskcacheStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run operations in order; a batch with writes runs as one transaction.

        Args:
            ops: ``GetOp``, ``PutOp``, ``SearchOp`` and ``ListNamespacesOp``.

        Returns:
            One result per operation, in order.

        Raises:
            InvalidNamespaceError: A namespace label is invalid.
            ConfigError: Unknown operation, filter operator or match type.
            SerializationError: A value cannot be serialised.
            StateError: The store failed.
        """
        op_list = list(ops)
        for op in op_list:
            validate_op_namespace(op)
        if any(isinstance(op, PutOp) for op in op_list):
            with self._store.transact():
                return [self._run(op) for op in op_list]
        return [self._run(op) for op in op_list]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async :meth:`batch` (runs in a worker thread)."""
        return await asyncio.to_thread(self.batch, list(ops))

    # -- operations -------------------------------------------------------------

    def _run(self, op: Op) -> Result:
        if isinstance(op, GetOp):
            return self._get(op)
        if isinstance(op, PutOp):
            self._put(op)
            return None
        if isinstance(op, SearchOp):
            return self._search(op)
        if isinstance(op, ListNamespacesOp):
            return self._list_namespaces(op)
        raise ConfigError(f"unknown store operation {type(op).__name__}")

    def _read(
        self, namespace: tuple[str, ...], key: str
    ) -> tuple[Item, float | None] | None:
        store_key = _item_key(namespace, key)
        data = self._store.get_bytes(store_key)
        if data is None:
            return None
        type_, payload, created, updated, ttl = unpack(data, key=store_key, length=5)
        value = loads_value(self._serde, type_, payload, what=f"item {store_key!r}")
        item = Item(
            value=value,
            key=key,
            namespace=namespace,
            created_at=datetime.fromisoformat(created),
            updated_at=datetime.fromisoformat(updated),
        )
        return item, ttl

    def _refresh(self, namespace: tuple[str, ...], key: str, ttl: float | None) -> None:
        if ttl:
            self._store.touch(_item_key(namespace, key), expire=ttl * 60.0)

    def _get(self, op: GetOp) -> Item | None:
        found = self._read(tuple(op.namespace), op.key)
        if found is None:
            return None
        item, ttl = found
        if op.refresh_ttl:
            self._refresh(item.namespace, item.key, ttl)
        return item

    def _put(self, op: PutOp) -> None:
        namespace = tuple(op.namespace)
        store_key = _item_key(namespace, op.key)
        if op.value is None:
            self._store.delete(store_key)
            return
        typed = dumps_value(
            self._serde, dict(op.value), what=f"item {namespace!r}/{op.key!r}"
        )
        now = datetime.now(timezone.utc).isoformat()
        # Only the creation time is carried over, so an old value that no
        # longer decodes can still be overwritten.
        previous = self._store.get_bytes(store_key)
        created = unpack(previous, key=store_key, length=5)[2] if previous else now
        ttl = op.ttl if isinstance(op.ttl, (int, float)) and op.ttl > 0 else None
        record = pack([*typed, created, now, ttl])
        self._store.set_bytes(store_key, record, expire=ttl * 60.0 if ttl else None)

    def _search(self, op: SearchOp) -> list[SearchItem]:
        prefix_ns = tuple(op.namespace_prefix)
        depth = len(prefix_ns)
        # Without a filter the first offset+limit matches are enough.
        stop = None if op.filter else op.offset + op.limit
        matched: list[tuple[Item, float | None]] = []
        for store_key in self._store.keys(_PREFIX + ns_part(prefix_ns)):
            parsed = _parse_item_key(store_key)
            if parsed is None or parsed[0][:depth] != prefix_ns:
                continue
            found = self._read(*parsed)
            if found is None:
                continue
            if op.filter and not all(
                _matches(found[0].value.get(field), condition)
                for field, condition in op.filter.items()
            ):
                continue
            matched.append(found)
            if stop is not None and len(matched) >= stop:
                break
        page = matched[op.offset : op.offset + op.limit]
        results: list[SearchItem] = []
        for item, ttl in page:
            if op.refresh_ttl:
                self._refresh(item.namespace, item.key, ttl)
            results.append(
                SearchItem(
                    namespace=item.namespace,
                    key=item.key,
                    value=item.value,
                    created_at=item.created_at,
                    updated_at=item.updated_at,
                )
            )
        return results

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        namespaces: set[tuple[str, ...]] = set()
        for store_key in self._store.keys(_PREFIX):
            parsed = _parse_item_key(store_key)
            if parsed is None:
                continue
            namespace = parsed[0]
            if op.match_conditions and not all(
                _namespace_matches(c, namespace) for c in op.match_conditions
            ):
                continue
            if op.max_depth is not None:
                namespace = namespace[: op.max_depth]
            namespaces.add(namespace)
        return sorted(namespaces)[op.offset : op.offset + op.limit]
