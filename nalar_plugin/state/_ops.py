"""Managed-state records and the write operations that calls stage on them.

Layout::

    managed:{session}:{name}   msgpack [kind, type tag, payload]; kind is "dict" or "list"

A call does not write these keys while it runs. It stages *operations*
(``set``, ``append``, ...) whose values are already serialised, and the journal
applies them to the then-current records when the call commits. Applying
operations, rather than writing back the call's whole copy, is what lets two
calls of one session append to the same list at the same time without one
commit erasing the other's items.
"""

from __future__ import annotations

from typing import Any, Final

import ormsgpack

from nalar_plugin.errors import StateCorruptedError, StateError
from nalar_plugin.state._encoding import (
    dumps_value,
    join_key,
    loads_value,
    pack,
    unpack,
)

__all__ = [
    "DICT",
    "LIST",
    "MANAGED_PREFIX",
    "Op",
    "apply_op",
    "decode_container",
    "decode_ops",
    "encode_container",
    "encode_op",
    "encode_ops",
    "managed_key",
]

MANAGED_PREFIX: Final = "managed:"
DICT: Final = "dict"
LIST: Final = "list"

# One staged operation: (session, name, kind, op, encoded arguments). Arguments
# are (type tag, payload) pairs, or plain ints for list positions.
Op = tuple[str, str, str, str, list[Any]]

_DICT_OPS: Final = frozenset({"set", "del", "clear"})
_LIST_OPS: Final = frozenset({"append", "extend", "insert", "set", "del", "clear"})


def managed_key(session: str, name: str) -> str:
    """Return the store key of one managed container.

    Args:
        session: The session that owns it.
        name: Its name within the session.

    Returns:
        The key.
    """
    return join_key(MANAGED_PREFIX, session, name)


def empty(kind: str) -> Any:
    """Return a new empty container of ``kind``."""
    return {} if kind == DICT else []


def encode_container(serde: Any, kind: str, value: Any, *, what: str) -> bytes:
    """Frame a container as a managed record.

    Args:
        serde: The store's serde.
        kind: ``"dict"`` or ``"list"``.
        value: The container.
        what: Where it goes, for error messages.

    Returns:
        The record bytes.

    Raises:
        SerializationError: The serde cannot encode a value in it.
    """
    type_, payload = dumps_value(serde, value, what=what)
    return pack([kind, type_, payload])


def decode_container(serde: Any, data: bytes, *, key: str, kind: str | None = None) -> tuple[str, Any]:
    """Read a managed record.

    Args:
        serde: The store's serde.
        data: The record bytes.
        key: Its store key, for error messages.
        kind: The kind the caller expects, or ``None`` for any.

    Returns:
        ``(kind, container)``.

    Raises:
        StateCorruptedError: The record cannot be decoded.
        StateError: It holds the other kind of container.
    """
    stored_kind, type_, payload = unpack(data, key=key, length=3)
    if stored_kind not in (DICT, LIST):
        raise StateCorruptedError(f"managed record at key {key!r} has an unknown kind {stored_kind!r}")
    if kind is not None and stored_kind != kind:
        raise StateError(
            f"managed state at key {key!r} is a managed_{stored_kind}; "
            f"it cannot be opened as a managed_{kind} (use another name)"
        )
    value = loads_value(serde, type_, payload, what=f"managed state at key {key!r}")
    # The serde may return a tuple for a list; containers are always mutable here.
    value = dict(value) if stored_kind == DICT else list(value)
    return stored_kind, value


def encode_op(serde: Any, session: str, name: str, kind: str, op: str, args: tuple[Any, ...]) -> Op:
    """Serialise one operation's values now, so a bad value fails at the write.

    Args:
        serde: The store's serde.
        session: The session of the container.
        name: The container's name.
        kind: ``"dict"`` or ``"list"``.
        op: The operation.
        args: Its arguments; list positions (``int`` or ``slice``) stay plain.

    Returns:
        The staged operation.

    Raises:
        SerializationError: A value cannot be serialised.
    """
    what = f"a write to managed_{kind}({name!r}) of session {session!r}"
    encoded: list[Any] = []
    for i, arg in enumerate(args):
        if kind == LIST and op in ("insert", "set", "del") and i == 0:
            encoded.append(_encode_position(arg))
        else:
            encoded.append(list(dumps_value(serde, arg, what=what)))
    return (session, name, kind, op, encoded)


def _encode_position(pos: Any) -> Any:
    if isinstance(pos, slice):
        return ["slice", pos.start, pos.stop, pos.step]
    return int(pos)


def _decode_position(pos: Any) -> int | slice:
    if isinstance(pos, list):
        return slice(pos[1], pos[2], pos[3])
    return int(pos)


def encode_ops(ops: list[Op]) -> bytes:
    """Frame staged operations for the journal (and the wire)."""
    return pack([list(op) for op in ops])


def decode_ops(data: bytes) -> list[Op]:
    """Undo :func:`encode_ops`.

    Raises:
        StateCorruptedError: The bytes are not a list of operations.
    """
    try:
        raw = ormsgpack.unpackb(data)
    except (ormsgpack.MsgpackDecodeError, ValueError, TypeError) as exc:
        raise StateCorruptedError("staged writes cannot be decoded") from exc
    if not isinstance(raw, list):
        raise StateCorruptedError("staged writes are not a list of operations")
    ops: list[Op] = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 5:
            raise StateCorruptedError("staged writes hold a malformed operation")
        session, name, kind, op, args = item
        allowed = _DICT_OPS if kind == DICT else _LIST_OPS if kind == LIST else frozenset()
        if op not in allowed:
            raise StateCorruptedError(f"staged writes hold an unknown operation {kind}.{op}")
        ops.append((session, name, kind, op, list(args)))
    return ops


def apply_op(serde: Any, container: Any, kind: str, op: str, args: list[Any], *, decoded: bool = False) -> None:
    """Apply one operation to a container in place.

    A position that no longer exists when a commit applies it (another call of
    the session removed items first) is skipped: commits never fail on a
    concurrent writer's change.

    Args:
        serde: The store's serde, to decode encoded values.
        container: The dict or list.
        kind: ``"dict"`` or ``"list"``.
        op: The operation.
        args: Its arguments, encoded (or plain Python values when ``decoded``).
        decoded: The arguments are plain values, not (type tag, payload) pairs.
    """

    def val(i: int) -> Any:
        if decoded:
            return args[i]
        type_, payload = args[i]
        return loads_value(serde, type_, bytes(payload), what="a staged managed-state write")

    if op == "clear":
        container.clear()
    elif kind == DICT:
        if op == "set":
            container[_hashable(val(0))] = val(1)
        elif op == "del":
            container.pop(_hashable(val(0)), None)
    elif op == "append":
        container.append(val(0))
    elif op == "extend":
        container.extend(val(0))
    else:
        pos = args[0] if decoded else _decode_position(args[0])
        try:
            if op == "insert":
                container.insert(pos, val(1))
            elif op == "set":
                container[pos] = list(val(1)) if isinstance(pos, slice) else val(1)
            elif op == "del":
                del container[pos]
        except (IndexError, ValueError):
            pass


def _hashable(key: Any) -> Any:
    # The serde turns tuples into lists; a dict key must stay hashable.
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    return key
