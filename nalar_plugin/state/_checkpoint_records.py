"""Key layout and record codecs of :class:`~nalar_plugin.state.DiskcacheSaver`.

Layout (every variable part escaped, see ``_encoding``)::

    ckpt:{thread}:{ns}:{checkpoint_id}            checkpoint (without values),
                                                  metadata, parent id
    ckpt-blob:{thread}:{ns}:{channel}:{version}   one channel value
    ckpt-write:{thread}:{ns}:{checkpoint_id}:{task_id}:{idx}
                                                  one pending write

The functions take the serde as an argument rather than holding it: a saver
cloned by ``with_allowlist`` carries a different serde over the same store.
"""

from __future__ import annotations

from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from nalar_plugin.errors import ConfigError, StateCorruptedError
from nalar_plugin.state._encoding import join_key, loads_value, unescape, unpack
from nalar_plugin.state.store import Store

__all__ = [
    "BLOB",
    "CKPT",
    "EMPTY",
    "WRITE",
    "Record",
    "collect_blobs",
    "decode_record",
    "delta_chain",
    "drop_checkpoint",
    "make_config",
    "parse_ckpt_key",
    "read_record",
    "thread_ns",
    "to_tuple",
]

CKPT = "ckpt:"
BLOB = "ckpt-blob:"
WRITE = "ckpt-write:"
EMPTY = "empty"  # type tag of a blob for a channel that had no value

Record = tuple[dict[str, Any], dict[str, Any], "str | None"]
"""A decoded checkpoint record: checkpoint without values, metadata, parent id."""


def thread_ns(config: RunnableConfig) -> tuple[str, str]:
    """Read the thread id and namespace from a config.

    Args:
        config: A LangGraph config.

    Returns:
        ``(thread_id, checkpoint_ns)`` as strings.

    Raises:
        ConfigError: ``thread_id`` is missing.
    """
    configurable = config.get("configurable") or {}
    try:
        thread_id = configurable["thread_id"]
    except KeyError as exc:
        raise ConfigError(
            'the checkpointer needs config["configurable"]["thread_id"]'
        ) from exc
    return str(thread_id), str(configurable.get("checkpoint_ns") or "")


def make_config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    """Build the config that names one checkpoint.

    Args:
        thread_id: The thread.
        ns: The checkpoint namespace.
        checkpoint_id: The checkpoint.

    Returns:
        The config.
    """
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def parse_ckpt_key(key: str) -> tuple[str, str, str]:
    """Split a checkpoint key into thread id, namespace and checkpoint id.

    Args:
        key: A key starting with :data:`CKPT`.

    Returns:
        The three parts, unescaped.

    Raises:
        StateCorruptedError: The key does not have three parts.
    """
    parts = key[len(CKPT) :].split(":")
    if len(parts) != 3:
        raise StateCorruptedError(f"malformed checkpoint key {key!r}")
    return unescape(parts[0]), unescape(parts[1]), unescape(parts[2])


def decode_record(serde: SerializerProtocol, key: str, data: bytes) -> Record:
    """Decode a checkpoint record.

    Args:
        serde: The saver's serde.
        key: The key it was read from.
        data: The stored bytes.

    Returns:
        The record.

    Raises:
        StateCorruptedError: The record cannot be decoded.
    """
    ckpt_type, ckpt_payload, md_type, md_payload, parent_id = unpack(
        data, key=key, length=5
    )
    checkpoint = loads_value(serde, ckpt_type, ckpt_payload, what=f"checkpoint {key!r}")
    metadata = loads_value(serde, md_type, md_payload, what=f"metadata {key!r}")
    if not isinstance(checkpoint, dict) or not isinstance(metadata, dict):
        raise StateCorruptedError(f"checkpoint record at {key!r} is malformed")
    return checkpoint, metadata, parent_id


def read_record(
    store: Store, serde: SerializerProtocol, thread_id: str, ns: str, checkpoint_id: str
) -> Record | None:
    """Read and decode one checkpoint record.

    Args:
        store: The store.
        serde: The saver's serde.
        thread_id: The thread.
        ns: The namespace.
        checkpoint_id: The checkpoint.

    Returns:
        The record, or ``None`` if it does not exist.
    """
    key = join_key(CKPT, thread_id, ns, checkpoint_id)
    data = store.get_bytes(key)
    return None if data is None else decode_record(serde, key, data)


def _read_blob(
    store: Store, thread_id: str, ns: str, channel: str, version: Any
) -> list[Any] | None:
    key = join_key(BLOB, thread_id, ns, channel, str(version))
    data = store.get_bytes(key)
    return None if data is None else unpack(data, key=key, length=2)


def _load_blobs(
    store: Store,
    serde: SerializerProtocol,
    thread_id: str,
    ns: str,
    versions: ChannelVersions,
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for channel, version in versions.items():
        blob = _read_blob(store, thread_id, ns, channel, version)
        if blob is None or blob[0] == EMPTY:
            continue
        values[channel] = loads_value(
            serde, blob[0], blob[1], what=f"channel {channel!r}"
        )
    return values


def _load_writes(
    store: Store, serde: SerializerProtocol, thread_id: str, ns: str, checkpoint_id: str
) -> list[PendingWrite]:
    prefix = join_key(WRITE, thread_id, ns, checkpoint_id) + ":"
    records: list[list[Any]] = []
    for key in store.keys(prefix):
        data = store.get_bytes(key)
        if data is not None:
            records.append(unpack(data, key=key, length=6))
    # LangGraph replays a step's writes in this order; get_tuple must match.
    records.sort(key=lambda r: writes_sort_key(r[2], r[0], r[1]))
    return [
        (
            task_id,
            channel,
            loads_value(serde, type_, payload, what=f"write {channel!r}"),
        )
        for task_id, _, _, channel, type_, payload in records
    ]


def to_tuple(
    store: Store,
    serde: SerializerProtocol,
    thread_id: str,
    ns: str,
    checkpoint_id: str,
    record: Record,
) -> CheckpointTuple:
    """Assemble a checkpoint tuple: values from blobs, writes in replay order.

    Args:
        store: The store.
        serde: The saver's serde.
        thread_id: The thread.
        ns: The namespace.
        checkpoint_id: The checkpoint.
        record: Its decoded record.

    Returns:
        The checkpoint tuple.
    """
    stored, metadata, parent_id = record
    versions = stored.get("channel_versions", {})
    checkpoint: dict[str, Any] = {
        **stored,
        "channel_values": _load_blobs(store, serde, thread_id, ns, versions),
    }
    return CheckpointTuple(
        config=make_config(thread_id, ns, checkpoint_id),
        checkpoint=cast(Checkpoint, checkpoint),
        metadata=cast(CheckpointMetadata, metadata),
        parent_config=make_config(thread_id, ns, parent_id) if parent_id else None,
        pending_writes=_load_writes(store, serde, thread_id, ns, checkpoint_id),
    )


def drop_checkpoint(store: Store, thread_id: str, ns: str, checkpoint_id: str) -> None:
    """Delete one checkpoint and its pending writes (not its blobs).

    Args:
        store: The store.
        thread_id: The thread.
        ns: The namespace.
        checkpoint_id: The checkpoint.
    """
    store.delete(join_key(CKPT, thread_id, ns, checkpoint_id))
    store.delete_prefix(join_key(WRITE, thread_id, ns, checkpoint_id) + ":")


def collect_blobs(
    store: Store, serde: SerializerProtocol, thread_id: str, ns: str
) -> None:
    """Delete the channel values no checkpoint of a namespace refers to.

    Args:
        store: The store.
        serde: The saver's serde.
        thread_id: The thread.
        ns: The namespace.
    """
    referenced: set[tuple[str, str]] = set()
    for key in list(store.keys(join_key(CKPT, thread_id, ns) + ":")):
        data = store.get_bytes(key)
        if data is None:
            continue
        checkpoint = decode_record(serde, key, data)[0]
        for channel, version in checkpoint.get("channel_versions", {}).items():
            referenced.add((channel, str(version)))
    prefix = join_key(BLOB, thread_id, ns) + ":"
    for key in list(store.keys(prefix)):
        parts = key[len(prefix) :].split(":")
        if (
            len(parts) == 2
            and (unescape(parts[0]), unescape(parts[1])) not in referenced
        ):
            store.delete(key)


def delta_chain(
    store: Store, serde: SerializerProtocol, thread_id: str, ns: str, latest_id: str
) -> set[str]:
    """Checkpoint ids to keep so the latest one's delta channels can be rebuilt.

    A ``DeltaChannel`` stores no value at most steps; its value is rebuilt from
    the nearest ancestor that stored one plus the writes since. The metadata
    key ``counters_since_delta_snapshot`` names the delta channels.

    Args:
        store: The store.
        serde: The saver's serde.
        thread_id: The thread.
        ns: The namespace.
        latest_id: The checkpoint being kept.

    Returns:
        ``latest_id`` plus every ancestor up to the nearest stored value of
        each delta channel.
    """
    keep = {latest_id}
    record = read_record(store, serde, thread_id, ns, latest_id)
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
            blob = _read_blob(store, thread_id, ns, channel, version)
            if blob is not None and blob[0] != EMPTY:
                remaining.discard(channel)
        current_id = record[2]
        record = (
            read_record(store, serde, thread_id, ns, current_id) if current_id else None
        )
    return keep
