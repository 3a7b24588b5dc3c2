"""A diskcache ``Disk`` that never pickles and never unpickles."""

from __future__ import annotations

from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, MODE_RAW, UNKNOWN

from nalar_plugin.errors import SerializationError, StateCorruptedError

__all__ = ["SafeDisk"]


class SafeDisk(diskcache.Disk):  # type: ignore[misc]  # diskcache is untyped
    """A diskcache ``Disk`` that only handles ``str`` keys and ``bytes`` values.

    The stock ``Disk`` pickles any other key or value and unpickles rows
    marked as pickled; this one refuses both directions.
    """

    def put(self, key: Any) -> tuple[Any, bool]:
        """Store ``str`` keys as-is (raw); refuse anything else.

        Raises:
            SerializationError: The key is not a ``str``.
        """
        if type(key) is not str:
            raise SerializationError(
                f"state store keys must be str, got {type(key).__name__}"
            )
        return key, True

    def get(self, key: Any, raw: bool) -> Any:
        """Return a raw ``str`` key; refuse pickled keys.

        Raises:
            StateCorruptedError: The row's key was pickled.
        """
        if not raw or not isinstance(key, str):
            raise StateCorruptedError("the state database holds a non-string key")
        return key

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> Any:
        """Store ``bytes`` values (inline or as a file); refuse anything else.

        Raises:
            SerializationError: The value is not ``bytes``.
        """
        if type(value) is not bytes or read:
            raise SerializationError(
                f"state store values must be bytes, got {type(value).__name__}"
            )
        return super().store(value, read, key)

    def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
        """Load a raw or file-backed ``bytes`` value; refuse pickled rows.

        Raises:
            StateCorruptedError: The row is pickled or text.
        """
        if read or mode not in (MODE_RAW, MODE_BINARY):
            raise StateCorruptedError(
                f"refusing to load a state row stored in diskcache mode {mode} "
                "(only raw bytes are written by nalar-plugin)"
            )
        return super().fetch(mode, filename, value, read)
