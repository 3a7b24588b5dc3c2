"""A LangGraph checkpointer over the diskcache :class:`~nalar_plugin.state.store.Store`.

Layout (every variable part escaped, see ``_encoding``)::

    ckpt:{thread}:{ns}:{checkpoint_id}            checkpoint (without values),
                                                  metadata, parent id
    ckpt-blob:{thread}:{ns}:{channel}:{version}   one channel value
    ckpt-write:{thread}:{ns}:{checkpoint_id}:{task_id}:{idx}
                                                  one pending write

Channel values are stored once per version, like LangGraph's SQL savers do, so
a checkpoint that updates one channel writes one blob and reads the others from
the versions it names. Checkpoint ids are uuid6 strings, so sorting the keys of
one namespace sorts the checkpoints oldest to newest.

The async methods run the sync ones in a worker thread (``asyncio.to_thread``)
so a lock held by another process never blocks the event loop. The sync
methods never touch an event loop, so calling them from one cannot deadlock.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    SerializerProtocol,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)

from nalar_plugin.errors import ConfigError, StateCorruptedError
from nalar_plugin.state._encoding import (
    dumps_value,
    join_key,
    loads_value,
    pack,
    unescape,
    unpack,
)
from nalar_plugin.state.store import Store

__all__ = ["DiskcacheSaver"]

_CKPT = "ckpt:"
_BLOB = "ckpt-blob:"
_WRITE = "ckpt-write:"
_EMPTY = "empty"  # type tag of a blob for a channel that had no value


def _thread_ns(config: RunnableConfig) -> tuple[str, str]:
    configurable = config.get("configurable") or {}
    try:
        thread_id = configurable["thread_id"]
    except KeyError as exc:
        raise ConfigError(
            'the checkpointer needs config["configurable"]["thread_id"]'
        ) from exc
    return str(thread_id), str(configurable.get("checkpoint_ns") or "")


def _config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


class DiskcacheSaver(BaseCheckpointSaver[str]):
    """LangGraph checkpointer that keeps threads in a nalar state directory.

    Several savers, in one process or many, may share one directory: each
    write is one diskcache transaction.

    Args:
        store: An open :class:`Store`, or the path of a state directory to open
            (the saver then owns and closes it).
        serde: Serialiser for checkpoints, channel values and writes. Defaults
            to the store's serde (a strict, pickle-free ``JsonPlusSerializer``).

    Raises:
        StateError: Opening the directory failed (see :class:`Store`).
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        *,
        serde: SerializerProtocol | None = None,
    ) -> None:
        if isinstance(store, Store):
            self._store = store
            self._owns_store = False
        else:
            self._store = Store(store, serde=serde)
            self._owns_store = True
        super().__init__(serde=serde if serde is not None else self._store.serde)

    @property
    def store(self) -> Store:
        """The underlying store."""
        return self._store

    def close(self) -> None:
        """Close the store if this saver opened it."""
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> DiskcacheSaver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> DiskcacheSaver:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- read ---------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Fetch one checkpoint: the one named by ``checkpoint_id``, or the latest.

        Args:
            config: Names ``thread_id``, optional ``checkpoint_ns`` and
                ``checkpoint_id``.

        Returns:
            The checkpoint tuple, with pending writes in ``writes_sort_key``
            order, or ``None`` when there is none.

        Raises:
            ConfigError: ``thread_id`` is missing.
            StateCorruptedError: A stored record cannot be decoded.
        """
        thread_id, ns = _thread_ns(config)
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            key = join_key(_CKPT, thread_id, ns, checkpoint_id)
        else:
            prefix = join_key(_CKPT, thread_id, ns) + ":"
            key = next(self._store.keys(prefix, reverse=True, limit=1), "")
            if not key:
                return None
            checkpoint_id = unescape(key[len(prefix) :])
        data = self._store.get_bytes(key)
        if data is None:
            return None
        record = self._decode_record(key, data)
        return self._to_tuple(thread_id, ns, checkpoint_id, record)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """List checkpoints, newest first.

        Args:
            config: Restricts to a thread (``thread_id``), a namespace
                (``checkpoint_ns``) and/or one ``checkpoint_id``; ``None``
                lists every thread.
            filter: Metadata keys that must equal these values.
            before: Only checkpoints with an id lower than this one's.
            limit: At most this many.

        Yields:
            Checkpoint tuples.

        Raises:
            StateCorruptedError: A stored record cannot be decoded.
        """
        wanted_id: str | None = None
        prefix = _CKPT
        if config is not None:
            configurable = config.get("configurable") or {}
            if configurable.get("thread_id") is not None:
                parts = [str(configurable["thread_id"])]
                if configurable.get("checkpoint_ns") is not None:
                    parts.append(str(configurable["checkpoint_ns"]))
                prefix = join_key(_CKPT, *parts) + ":"
            wanted_id = configurable.get("checkpoint_id")
        before_id = get_checkpoint_id(before) if before else None
        count = 0
        for key in self._store.keys(prefix, reverse=True):
            if limit is not None and count >= limit:
                return
            thread_id, ns, checkpoint_id = self._parse_ckpt_key(key)
            if wanted_id and checkpoint_id != wanted_id:
                continue
            if before_id and checkpoint_id >= before_id:
                continue
            data = self._store.get_bytes(key)
            if data is None:  # deleted since the key page was read
                continue
            record = self._decode_record(key, data)
            metadata = record[1]
            if filter and not all(
                metadata.get(name) == value for name, value in filter.items()
            ):
                continue
            count += 1
            yield self._to_tuple(thread_id, ns, checkpoint_id, record)

    # -- write --------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint and the channel values that changed.

        Everything is serialised first and then written in one transaction,
        so a value that cannot be serialised leaves the store unchanged.

        Args:
            config: Names the thread, namespace and parent ``checkpoint_id``.
            checkpoint: The checkpoint.
            metadata: Its metadata.
            new_versions: The channels (and versions) written by this step.

        Returns:
            The config of the stored checkpoint.

        Raises:
            SerializationError: A value cannot be serialised.
            StateError: The store failed.
        """
        thread_id, ns = _thread_ns(config)
        parent_id = (config.get("configurable") or {}).get("checkpoint_id")
        stripped: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = stripped.pop("channel_values", {}) or {}
        writes: list[tuple[str, bytes]] = []
        for channel, version in new_versions.items():
            if channel in values:
                typed = dumps_value(
                    self.serde, values[channel], what=f"channel {channel!r}"
                )
            else:
                typed = (_EMPTY, b"")
            writes.append(
                (join_key(_BLOB, thread_id, ns, channel, str(version)), pack(typed))
            )
        ckpt_typed = dumps_value(self.serde, stripped, what="the checkpoint")
        md_typed = dumps_value(
            self.serde,
            get_serializable_checkpoint_metadata(config, metadata),
            what="the checkpoint metadata",
        )
        record = pack([*ckpt_typed, *md_typed, parent_id])
        writes.append((join_key(_CKPT, thread_id, ns, checkpoint["id"]), record))
        with self._store.transact():
            for key, data in writes:
                self._store.set_bytes(key, data)
        return _config(thread_id, ns, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store the writes a task made against a checkpoint.

        A regular write already stored for the same ``(task_id, index)`` is
        kept (replays are idempotent); special writes (errors, interrupts, ...)
        overwrite.

        Args:
            config: Names the checkpoint.
            writes: ``(channel, value)`` pairs.
            task_id: The task.
            task_path: The task's path, used to order writes.

        Raises:
            SerializationError: A value cannot be serialised.
            StateError: The store failed.
        """
        thread_id, ns = _thread_ns(config)
        checkpoint_id = str(config["configurable"]["checkpoint_id"])
        entries: list[tuple[str, bool, bytes]] = []
        for position, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, position)
            key = join_key(_WRITE, thread_id, ns, checkpoint_id, task_id, str(idx))
            typed = dumps_value(self.serde, value, what=f"write to {channel!r}")
            entries.append(
                (key, idx >= 0, pack([task_id, idx, task_path, channel, *typed]))
            )
        with self._store.transact():
            for key, keep_existing, data in entries:
                if keep_existing and self._store.contains(key):
                    continue
                self._store.set_bytes(key, data)

    # -- maintenance ----------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value and write of a thread (all namespaces).

        Args:
            thread_id: The thread.
        """
        with self._store.transact():
            for base in (_CKPT, _BLOB, _WRITE):
                self._store.delete_prefix(join_key(base, str(thread_id)) + ":")

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata ``run_id`` matches.

        Channel values no remaining checkpoint refers to are deleted too.

        Args:
            run_ids: The run ids.
        """
        wanted = {str(run_id) for run_id in run_ids}
        if not wanted:
            return
        with self._store.transact():
            touched: set[tuple[str, str]] = set()
            for key in list(self._store.keys(_CKPT)):
                data = self._store.get_bytes(key)
                if data is None:
                    continue
                run_id = self._decode_record(key, data)[1].get("run_id")
                if run_id is not None and str(run_id) in wanted:
                    thread_id, ns, checkpoint_id = self._parse_ckpt_key(key)
                    self._drop_checkpoint(thread_id, ns, checkpoint_id)
                    touched.add((thread_id, ns))
            for thread_id, ns in touched:
                self._collect_blobs(thread_id, ns)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread's full history (all namespaces, values and writes).

        Args:
            source_thread_id: The thread to copy.
            target_thread_id: The thread to write; existing entries with the
                same keys are overwritten.
        """
        source, target = str(source_thread_id), str(target_thread_id)
        if source == target:
            return
        with self._store.transact():
            for base in (_CKPT, _BLOB, _WRITE):
                source_prefix = join_key(base, source) + ":"
                target_prefix = join_key(base, target) + ":"
                for key in list(self._store.keys(source_prefix)):
                    data = self._store.get_bytes(key)
                    if data is not None:
                        self._store.set_bytes(
                            target_prefix + key[len(source_prefix) :], data
                        )

    def prune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest"
    ) -> None:
        """Prune the history of threads.

        ``"keep_latest"`` keeps the newest checkpoint of each namespace. For
        graphs with ``DeltaChannel`` it also keeps the ancestors back to the
        nearest stored snapshot of every delta channel (named in the metadata
        ``counters_since_delta_snapshot``), so their value can be rebuilt.
        ``"delete"`` removes the threads entirely.

        Args:
            thread_ids: The threads.
            strategy: ``"keep_latest"`` or ``"delete"``.

        Raises:
            ConfigError: Unknown strategy.
        """
        if strategy == "delete":
            for thread_id in thread_ids:
                self.delete_thread(thread_id)
            return
        if strategy != "keep_latest":
            raise ConfigError(
                f"unknown prune strategy {strategy!r}; use 'keep_latest' or 'delete'"
            )
        with self._store.transact():
            for thread_id in thread_ids:
                prefix = join_key(_CKPT, str(thread_id)) + ":"
                by_ns: dict[str, list[str]] = {}
                for key in list(self._store.keys(prefix)):
                    _, ns, checkpoint_id = self._parse_ckpt_key(key)
                    by_ns.setdefault(ns, []).append(checkpoint_id)
                for ns, checkpoint_ids in by_ns.items():
                    keep = self._delta_chain(str(thread_id), ns, max(checkpoint_ids))
                    for checkpoint_id in checkpoint_ids:
                        if checkpoint_id not in keep:
                            self._drop_checkpoint(str(thread_id), ns, checkpoint_id)
                    self._collect_blobs(str(thread_id), ns)

    def get_next_version(self, current: str | None, channel: None = None) -> str:
        """Return a version greater than ``current``.

        Versions are zero-padded counters plus a random fraction (as in
        LangGraph's in-memory saver), so they sort as strings.

        Args:
            current: The current version, or ``None``.
            channel: Unused; kept for the base-class signature.

        Returns:
            The next version.
        """
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(str(current).split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- async twins ------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async :meth:`get_tuple` (runs in a worker thread)."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async :meth:`list` (the page is read in a worker thread)."""
        items = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in items:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async :meth:`put` (runs in a worker thread)."""
        return await asyncio.to_thread(
            self.put, config, checkpoint, metadata, new_versions
        )

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async :meth:`put_writes` (runs in a worker thread)."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async :meth:`delete_thread` (runs in a worker thread)."""
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async :meth:`delete_for_runs` (runs in a worker thread)."""
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async :meth:`copy_thread` (runs in a worker thread)."""
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest"
    ) -> None:
        """Async :meth:`prune` (runs in a worker thread)."""
        await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy))

    # -- internals --------------------------------------------------------------

    @staticmethod
    def _parse_ckpt_key(key: str) -> tuple[str, str, str]:
        parts = key[len(_CKPT) :].split(":")
        if len(parts) != 3:
            raise StateCorruptedError(f"malformed checkpoint key {key!r}")
        thread_id, ns, checkpoint_id = (unescape(p) for p in parts)
        return thread_id, ns, checkpoint_id

    def _decode_record(
        self, key: str, data: bytes
    ) -> tuple[dict[str, Any], dict[str, Any], str | None]:
        ckpt_type, ckpt_payload, md_type, md_payload, parent_id = unpack(
            data, key=key, length=5
        )
        checkpoint = loads_value(
            self.serde, ckpt_type, ckpt_payload, what=f"checkpoint at {key!r}"
        )
        metadata = loads_value(
            self.serde, md_type, md_payload, what=f"metadata at {key!r}"
        )
        if not isinstance(checkpoint, dict) or not isinstance(metadata, dict):
            raise StateCorruptedError(f"checkpoint record at {key!r} is malformed")
        return checkpoint, metadata, parent_id

    def _read_record(
        self, thread_id: str, ns: str, checkpoint_id: str
    ) -> tuple[dict[str, Any], dict[str, Any], str | None] | None:
        key = join_key(_CKPT, thread_id, ns, checkpoint_id)
        data = self._store.get_bytes(key)
        return None if data is None else self._decode_record(key, data)

    def _to_tuple(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        record: tuple[dict[str, Any], dict[str, Any], str | None],
    ) -> CheckpointTuple:
        checkpoint, metadata, parent_id = record
        values = self._load_blobs(thread_id, ns, checkpoint.get("channel_versions", {}))
        return CheckpointTuple(
            config=_config(thread_id, ns, checkpoint_id),
            checkpoint={**checkpoint, "channel_values": values},  # type: ignore[typeddict-item]
            metadata=metadata,  # type: ignore[arg-type]
            parent_config=_config(thread_id, ns, parent_id) if parent_id else None,
            pending_writes=self._load_writes(thread_id, ns, checkpoint_id),
        )

    def _blob(self, thread_id: str, ns: str, channel: str, version: Any) -> list[Any] | None:
        key = join_key(_BLOB, thread_id, ns, channel, str(version))
        data = self._store.get_bytes(key)
        return None if data is None else unpack(data, key=key, length=2)

    def _load_blobs(
        self, thread_id: str, ns: str, versions: ChannelVersions
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for channel, version in versions.items():
            blob = self._blob(thread_id, ns, channel, version)
            if blob is None or blob[0] == _EMPTY:
                continue
            values[channel] = loads_value(
                self.serde, blob[0], blob[1], what=f"channel {channel!r}"
            )
        return values

    def _load_writes(
        self, thread_id: str, ns: str, checkpoint_id: str
    ) -> list[PendingWrite]:
        prefix = join_key(_WRITE, thread_id, ns, checkpoint_id) + ":"
        records: list[list[Any]] = []
        for key in self._store.keys(prefix):
            data = self._store.get_bytes(key)
            if data is not None:
                records.append(unpack(data, key=key, length=6))
        # LangGraph replays a step's writes in this order; get_tuple must match.
        records.sort(key=lambda r: writes_sort_key(r[2], r[0], r[1]))
        return [
            (task_id, channel, loads_value(self.serde, type_, payload, what=f"write to {channel!r}"))
            for task_id, _, _, channel, type_, payload in records
        ]

    def _drop_checkpoint(self, thread_id: str, ns: str, checkpoint_id: str) -> None:
        self._store.delete(join_key(_CKPT, thread_id, ns, checkpoint_id))
        self._store.delete_prefix(join_key(_WRITE, thread_id, ns, checkpoint_id) + ":")

    def _collect_blobs(self, thread_id: str, ns: str) -> None:
        """Delete the channel values no checkpoint of the namespace refers to."""
        referenced: set[tuple[str, str]] = set()
        for key in list(self._store.keys(join_key(_CKPT, thread_id, ns) + ":")):
            data = self._store.get_bytes(key)
            if data is None:
                continue
            checkpoint = self._decode_record(key, data)[0]
            for channel, version in checkpoint.get("channel_versions", {}).items():
                referenced.add((channel, str(version)))
        prefix = join_key(_BLOB, thread_id, ns) + ":"
        for key in list(self._store.keys(prefix)):
            parts = key[len(prefix) :].split(":")
            if len(parts) == 2 and (unescape(parts[0]), unescape(parts[1])) not in referenced:
                self._store.delete(key)

    def _delta_chain(self, thread_id: str, ns: str, latest_id: str) -> set[str]:
        """Ids to keep so the latest checkpoint's delta channels can be rebuilt."""
        keep = {latest_id}
        record = self._read_record(thread_id, ns, latest_id)
        if record is None:
            return keep
        counters = record[1].get("counters_since_delta_snapshot")
        remaining = set(counters) if isinstance(counters, dict) else set()
        current_id: str | None = latest_id
        while remaining and record is not None and current_id is not None:
            keep.add(current_id)
            versions = record[0].get("channel_versions", {})
            for channel in list(remaining):
                version = versions.get(channel)
                if version is None:
                    continue
                blob = self._blob(thread_id, ns, channel, version)
                if blob is not None and blob[0] != _EMPTY:
                    remaining.discard(channel)
            current_id = record[2]
            record = (
                self._read_record(thread_id, ns, current_id) if current_id else None
            )
        return keep
