"""A LangGraph checkpointer over the diskcache :class:`~nalar_plugin.state.store.Store`.

Channel values are stored once per version, like LangGraph's SQL savers do, so
a checkpoint that updates one channel writes one blob and reads the others from
the versions it names (layout in ``_checkpoint_records``). Checkpoint ids are
uuid6 strings, so sorting the keys of one namespace sorts the checkpoints
oldest to newest.

The async methods run the sync ones in a worker thread (``asyncio.to_thread``)
so a lock held by another process never blocks the event loop. The sync
methods never touch an event loop, so calling them from one cannot deadlock.
"""

from __future__ import annotations

import asyncio
import functools
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
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from nalar_plugin.errors import ConfigError
from nalar_plugin.state._checkpoint_records import (
    BLOB,
    CKPT,
    EMPTY,
    WRITE,
    collect_blobs,
    decode_record,
    delta_chain,
    drop_checkpoint,
    make_config,
    parse_ckpt_key,
    thread_ns,
    to_tuple,
)
from nalar_plugin.state._encoding import dumps_value, join_key, pack, unescape
from nalar_plugin.state.store import Store

__all__ = ["DiskcacheSaver"]

# nalar's own generator: the app's seeded or patched `random` is never drawn from.
_RNG = random.Random()


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

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickles as "the same store, the same settings", so the object can be
        # sent to a Dask worker in another process; the Store reopens its
        # directory there. A default serde is rebuilt rather than pickled.
        serde = None if self.serde is self._store.serde else self.serde
        return (functools.partial(DiskcacheSaver, serde=serde), (self._store,))

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
        thread_id, ns = thread_ns(config)
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            key = join_key(CKPT, thread_id, ns, checkpoint_id)
        else:
            prefix = join_key(CKPT, thread_id, ns) + ":"
            key = next(self._store.keys(prefix, reverse=True, limit=1), "")
            if not key:
                return None
            checkpoint_id = unescape(key[len(prefix) :])
        data = self._store.get_bytes(key)
        if data is None:
            return None
        record = decode_record(self.serde, key, data)
        return to_tuple(self._store, self.serde, thread_id, ns, checkpoint_id, record)

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
        prefix = CKPT
        if config is not None:
            configurable = config.get("configurable") or {}
            if configurable.get("thread_id") is not None:
                parts = [str(configurable["thread_id"])]
                if configurable.get("checkpoint_ns") is not None:
                    parts.append(str(configurable["checkpoint_ns"]))
                prefix = join_key(CKPT, *parts) + ":"
            wanted_id = configurable.get("checkpoint_id")
        before_id = get_checkpoint_id(before) if before else None
        count = 0
        for key in self._store.keys(prefix, reverse=True):
            if limit is not None and count >= limit:
                return
            thread_id, ns, checkpoint_id = parse_ckpt_key(key)
            if wanted_id and checkpoint_id != wanted_id:
                continue
            if before_id and checkpoint_id >= before_id:
                continue
            data = self._store.get_bytes(key)
            if data is None:  # deleted since the key page was read
                continue
            record = decode_record(self.serde, key, data)
            metadata = record[1]
            if filter and not all(
                metadata.get(name) == value for name, value in filter.items()
            ):
                continue
            count += 1
            yield to_tuple(
                self._store, self.serde, thread_id, ns, checkpoint_id, record
            )

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
        thread_id, ns = thread_ns(config)
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
                typed = (EMPTY, b"")
            writes.append(
                (join_key(BLOB, thread_id, ns, channel, str(version)), pack(typed))
            )
        ckpt_typed = dumps_value(self.serde, stripped, what="the checkpoint")
        md_typed = dumps_value(
            self.serde,
            get_serializable_checkpoint_metadata(config, metadata),
            what="the checkpoint metadata",
        )
        record = pack([*ckpt_typed, *md_typed, parent_id])
        writes.append((join_key(CKPT, thread_id, ns, checkpoint["id"]), record))
        with self._store.transact():
            for key, data in writes:
                self._store.set_bytes(key, data)
        return make_config(thread_id, ns, checkpoint["id"])

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
        thread_id, ns = thread_ns(config)
        checkpoint_id = str(config["configurable"]["checkpoint_id"])
        entries: list[tuple[str, bool, bytes]] = []
        for position, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, position)
            key = join_key(WRITE, thread_id, ns, checkpoint_id, task_id, str(idx))
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
            for base in (CKPT, BLOB, WRITE):
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
            for key in list(self._store.keys(CKPT)):
                data = self._store.get_bytes(key)
                if data is None:
                    continue
                run_id = decode_record(self.serde, key, data)[1].get("run_id")
                if run_id is not None and str(run_id) in wanted:
                    thread_id, ns, checkpoint_id = parse_ckpt_key(key)
                    drop_checkpoint(self._store, thread_id, ns, checkpoint_id)
                    touched.add((thread_id, ns))
            for thread_id, ns in touched:
                collect_blobs(self._store, self.serde, thread_id, ns)

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
            for base in (CKPT, BLOB, WRITE):
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
                prefix = join_key(CKPT, str(thread_id)) + ":"
                by_ns: dict[str, list[str]] = {}
                for key in list(self._store.keys(prefix)):
                    _, ns, checkpoint_id = parse_ckpt_key(key)
                    by_ns.setdefault(ns, []).append(checkpoint_id)
                for ns, checkpoint_ids in by_ns.items():
                    keep = delta_chain(
                        self._store, self.serde, str(thread_id), ns, max(checkpoint_ids)
                    )
                    for checkpoint_id in checkpoint_ids:
                        if checkpoint_id not in keep:
                            drop_checkpoint(
                                self._store, str(thread_id), ns, checkpoint_id
                            )
                    collect_blobs(self._store, self.serde, str(thread_id), ns)

    def get_next_version(
        self, current: str | int | float | None, channel: None = None
    ) -> str:
        """Return a version greater than ``current``.

        Versions are zero-padded counters plus a random fraction (as in
        LangGraph's in-memory saver), so they sort as strings. Numeric versions
        (from a thread written by a saver with integer versions) are accepted.

        Args:
            current: The current version, or ``None``.
            channel: Unused; kept for the base-class signature.

        Returns:
            The next version.
        """
        if current is None:
            current_v = 0
        elif isinstance(current, (int, float)):
            current_v = int(current)
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{_RNG.random():016}"

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
