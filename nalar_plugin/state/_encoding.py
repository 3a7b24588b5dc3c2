"""Key building and record framing shared by the components over :class:`Store`.

Keys are ``:``-separated strings. Every variable part is escaped so that it
never contains ``:``; a key prefix that ends in ``:`` therefore selects exactly
one parent (a thread, a namespace, ...) and never a sibling whose name merely
starts the same way. Escaping keeps ``[0-9a-f-]`` unchanged, so checkpoint ids
(uuid6 strings) sort the same escaped as raw.

Records are msgpack arrays of plain fields (str, bytes, int, float, None). The
framing is ours and independent of the user's ``serde``: values that need the
serde are stored inside a record as their ``(type tag, payload)`` pair, the way
LangGraph's SQL savers keep ``type`` and ``blob`` columns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import ormsgpack

from nalar_plugin.errors import SerializationError, StateCorruptedError

__all__ = [
    "dumps_value",
    "escape",
    "join_key",
    "loads_value",
    "ns_part",
    "pack",
    "parse_ns_part",
    "unescape",
    "unpack",
]

_UNESCAPE = re.compile(r"%(25|3A|2F)")
_UNESCAPE_MAP = {"25": "%", "3A": ":", "2F": "/"}


def escape(part: str) -> str:
    """Escape one key part so it contains no ``:`` and no ``/``.

    Args:
        part: The raw text.

    Returns:
        The escaped text.
    """
    return part.replace("%", "%25").replace(":", "%3A").replace("/", "%2F")


def unescape(part: str) -> str:
    """Undo :func:`escape`.

    Args:
        part: The escaped text.

    Returns:
        The raw text.
    """
    # One pass with a regex: sequential str.replace calls could decode text
    # that an earlier replacement produced.
    return _UNESCAPE.sub(lambda m: _UNESCAPE_MAP[m.group(1)], part)


def join_key(prefix: str, *parts: str) -> str:
    """Build ``prefix`` followed by the escaped parts, ``:``-separated.

    Args:
        prefix: The component prefix, ending in ``:`` (not escaped).
        *parts: The variable parts.

    Returns:
        The key.
    """
    return prefix + ":".join(escape(p) for p in parts)


def ns_part(namespace: Sequence[str]) -> str:
    """Encode a namespace tuple as one key part.

    Each label is written as ``/`` plus the escaped label, so ``()``, ``("",)``
    and ``("a",)`` all encode differently and the result never contains ``:``.

    Args:
        namespace: The labels.

    Returns:
        The encoded part (already escaped; do not escape again).
    """
    return "".join("/" + escape(label) for label in namespace)


def parse_ns_part(part: str) -> tuple[str, ...]:
    """Undo :func:`ns_part`.

    Args:
        part: The encoded part.

    Returns:
        The namespace tuple.
    """
    if not part:
        return ()
    return tuple(unescape(label) for label in part.split("/")[1:])


def pack(fields: Sequence[Any]) -> bytes:
    """Frame plain fields as one msgpack array.

    Args:
        fields: str, bytes, int, float, bool or None values (and lists of them).

    Returns:
        The framed bytes.
    """
    return ormsgpack.packb(list(fields))


def unpack(data: bytes, *, key: str, length: int) -> list[Any]:
    """Read a record made by :func:`pack`.

    Args:
        data: The framed bytes.
        key: The store key the record came from, for error messages.
        length: The number of fields the record must have.

    Returns:
        The fields.

    Raises:
        StateCorruptedError: The bytes are not a record of that length.
    """
    try:
        fields = ormsgpack.unpackb(data)
    except (ormsgpack.MsgpackDecodeError, ValueError, TypeError) as exc:
        raise StateCorruptedError(f"record at key {key!r} cannot be decoded") from exc
    if not isinstance(fields, list) or len(fields) != length:
        raise StateCorruptedError(
            f"record at key {key!r} has an unexpected shape (expected {length} fields)"
        )
    return fields


def dumps_value(serde: Any, value: Any, *, what: str) -> tuple[str, bytes]:
    """Serialise a value with ``serde``, mapping failures to SerializationError.

    Args:
        serde: An object with ``dumps_typed``.
        value: The value.
        what: A description of where the value goes (a key, a channel), for the
            error message.

    Returns:
        The ``(type tag, payload)`` pair.

    Raises:
        SerializationError: The serde cannot encode the value.
    """
    try:
        type_, payload = serde.dumps_typed(value)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialise {what}: value of type "
            f"{type(value).__module__}.{type(value).__qualname__} is not supported "
            f"by {type(serde).__name__} ({exc})"
        ) from exc
    return str(type_), bytes(payload)


def loads_value(serde: Any, type_: str, payload: bytes, *, what: str) -> Any:
    """Deserialise a ``(type tag, payload)`` pair, mapping failures.

    Args:
        serde: An object with ``loads_typed``.
        type_: The type tag.
        payload: The payload.
        what: Where the value came from, for the error message.

    Returns:
        The value.

    Raises:
        StateCorruptedError: The serde cannot decode the payload.
    """
    try:
        return serde.loads_typed((type_, payload))
    except Exception as exc:
        raise StateCorruptedError(
            f"cannot deserialise {what} (type tag {type_!r}) with "
            f"{type(serde).__name__}: {exc}"
        ) from exc
