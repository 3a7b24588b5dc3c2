"""The diskcache-backed key-value store that all state components share.

One :class:`Store` is one directory. It holds a marker file that names the
format and its version, and a diskcache ``Cache`` (one SQLite database plus
files for large values). diskcache is safe across threads and processes;
:meth:`Store.transact` locks the database for a read-modify-write.

Nothing here ever unpickles. Keys must be ``str`` (diskcache pickles other key
types, and two equal tuples can pickle to different bytes and miss each other).
Values are written as ``bytes`` only, and the diskcache ``Disk`` in use refuses
to load a pickled row, so a tampered database cannot run code on load.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import diskcache

from nalar_plugin.errors import (
    ConfigError,
    SerializationError,
    StateCorruptedError,
    StateError,
)
from nalar_plugin.state._directory import (
    FORMAT_VERSION,
    MARKER_NAME,
    prepare_directory,
    storage_errors,
)
from nalar_plugin.state._disk import SafeDisk
from nalar_plugin.state._encoding import dumps_value, loads_value
from nalar_plugin.state.serde import SerdeProtocol, default_serde

__all__ = ["FORMAT_VERSION", "MARKER_NAME", "Store"]

_DEFAULT_TIMEOUT: Final = 60.0
_PAGE_SIZE: Final = 512

# Stored blobs start with a tag byte so a typed value and raw bytes cannot be
# confused when read back through the wrong method.
_TAG_BYTES: Final = 0
_TAG_TYPED: Final = 1

_MISSING: Final = object()

# diskcache's row layout for a raw str key and an inline bytes value (mode 1 = raw).
_UPSERT: Final = (
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, filename, value)"
    " VALUES (?, 1, ?, ?, ?, 0, NULL, 0, 1, NULL, ?)"
    " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time, expire_time = excluded.expire_time,"
    " access_time = excluded.access_time, access_count = 0, size = 0, mode = 1, filename = NULL,"
    " value = excluded.value"
)


def _prefix_upper_bound(prefix: str) -> str | None:
    """Return the smallest string greater than every string starting with prefix.

    Args:
        prefix: The prefix.

    Returns:
        The bound, or ``None`` when there is none (empty prefix, or only
        U+10FFFF characters).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1])
        if code < 0x10FFFF:
            code += 1
            if 0xD800 <= code <= 0xDFFF:
                # Surrogates cannot be stored; the next storable code point
                # keeps the bound correct.
                code = 0xE000
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def _check_key(key: object, *, what: str = "key") -> str:
    if not isinstance(key, str):
        raise SerializationError(
            f"state store {what}s must be str, got {type(key).__name__}: {key!r}"
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SerializationError(
            f"state store {what} {key!r} is not valid Unicode text"
        ) from exc
    return key


class Store:
    """A string-keyed store in a directory, shared by threads and processes.

    Args:
        path: The state directory. It is created (mode ``0700``) if missing.
        serde: How values given to :meth:`set` are serialised. Defaults to
            :func:`~nalar_plugin.state.serde.default_serde`, which never
            pickles.
        timeout: Seconds to wait for the database lock before failing.

    Raises:
        ConfigError: ``timeout`` is not positive or ``path`` is not a path.
        StateCorruptedError: The directory holds files but no nalar marker, the
            marker is unreadable or from a newer format, or the database is
            corrupted.
        StateReadOnlyError: The directory cannot be created or written.
        StateError: Any other failure to open the database.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        serde: SerdeProtocol | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
    ) -> None:
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"timeout must be a positive number, got {timeout!r}")
        try:
            self._path = Path(os.fspath(path)).expanduser().absolute()
        except TypeError as exc:
            raise ConfigError(
                f"path must be a str or os.PathLike, got {path!r}"
            ) from exc
        self._custom_serde = serde
        self._serde: SerdeProtocol = serde if serde is not None else default_serde()
        self._timeout = float(timeout)
        self._closed = False
        prepare_directory(self._path)
        database = self._path / "cache.db"
        if database.exists() and database.stat().st_size == 0:
            self._closed = True
            raise StateCorruptedError(
                f"the state database {database} is empty although {self._path} is a nalar state "
                "directory: its data is gone (a truncated file?). Restore it from a backup, or move "
                "the directory away to start afresh; nothing was changed"
            )
        try:
            with self._guard("open the state database"):
                self._cache = diskcache.Cache(
                    str(self._path),
                    timeout=self._timeout,
                    disk=SafeDisk,
                    # The default policy evicts entries once the directory
                    # passes 1 GiB; state must never disappear silently.
                    eviction_policy="none",
                    statistics=False,
                    tag_index=False,
                )
            self._check_integrity()
        except BaseException:
            self._closed = True
            with contextlib.suppress(Exception):
                self._cache.close()
            raise

    def _check_integrity(self) -> None:
        """Refuse a database whose pages are damaged (``PRAGMA quick_check``), before any write."""
        with self._guard("check the state database"):
            rows = self._cache._sql("PRAGMA quick_check(5)").fetchall()
        problems = [str(r[0]) for r in rows if r and r[0] != "ok"]
        if problems:
            raise StateCorruptedError(
                f"the state database in {self._path} is corrupted ({'; '.join(problems)}); restore it "
                "from a backup or move the directory away; nothing was written"
            )

    # -- properties ---------------------------------------------------------

    @property
    def path(self) -> Path:
        """The state directory."""
        return self._path

    @property
    def serde(self) -> SerdeProtocol:
        """The serialiser used by :meth:`get` and :meth:`set`."""
        return self._serde

    @property
    def timeout(self) -> float:
        """Seconds to wait for the database lock."""
        return self._timeout

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- typed values -------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """Read and deserialise a value.

        Args:
            key: The key.
            default: Returned when the key is missing or expired.

        Returns:
            The value, or ``default``.

        Raises:
            SerializationError: ``key`` is not a str.
            StateCorruptedError: The stored bytes cannot be decoded.
            StateError: The database failed.
        """
        blob = self._fetch(key)
        if blob is None:
            return default
        if blob[:1] == bytes([_TAG_BYTES]):
            # Raw bytes written by set_bytes() read back as a bytes value.
            return blob[1:]
        if len(blob) < 2 or blob[0] != _TAG_TYPED:
            raise StateCorruptedError(f"value at key {key!r} has an unknown format")
        type_len = blob[1]
        type_ = blob[2 : 2 + type_len].decode("utf-8", errors="replace")
        return loads_value(
            self._serde, type_, blob[2 + type_len :], what=f"key {key!r}"
        )

    def set(self, key: str, value: Any, *, expire: float | None = None) -> None:
        """Serialise and write a value.

        The value is serialised before anything is written, so a value that
        cannot be serialised leaves the store unchanged.

        Args:
            key: The key.
            value: The value.
            expire: Seconds until the entry expires; ``None`` keeps it forever.

        Raises:
            SerializationError: ``key`` is not a str, or the serde cannot
                serialise ``value`` (the message names the key and the type).
            StateError: The database failed.
        """
        _check_key(key)
        type_, payload = dumps_value(self._serde, value, what=f"key {key!r}")
        type_bytes = type_.encode("utf-8")
        if len(type_bytes) > 255:
            raise SerializationError(
                f"cannot serialise key {key!r}: type tag {type_!r} is too long"
            )
        self._put(
            key, bytes([_TAG_TYPED, len(type_bytes)]) + type_bytes + payload, expire
        )

    # -- raw bytes ----------------------------------------------------------

    def get_bytes(self, key: str) -> bytes | None:
        """Read raw bytes written by :meth:`set_bytes`.

        Args:
            key: The key.

        Returns:
            The bytes, or ``None`` when the key is missing or expired.

        Raises:
            StateCorruptedError: The key holds a typed value, not raw bytes.
            StateError: The database failed.
        """
        blob = self._fetch(key)
        if blob is None:
            return None
        if blob[:1] != bytes([_TAG_BYTES]):
            raise StateCorruptedError(
                f"key {key!r} holds a typed value; read it with get(), not get_bytes()"
            )
        return blob[1:]

    def set_bytes(self, key: str, data: bytes, *, expire: float | None = None) -> None:
        """Write raw bytes, bypassing the serde.

        Components that frame their own records (the checkpointer, the caches)
        use this so their layout does not depend on the user's serde.

        Args:
            key: The key.
            data: The bytes.
            expire: Seconds until the entry expires; ``None`` keeps it forever.

        Raises:
            SerializationError: ``key`` is not a str or ``data`` is not bytes.
            StateError: The database failed.
        """
        _check_key(key)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SerializationError(
                f"cannot write key {key!r}: set_bytes() needs bytes, "
                f"got {type(data).__name__}"
            )
        self._put(key, bytes([_TAG_BYTES]) + bytes(data), expire)

    def put_many(self, items: list[tuple[str, bytes]], *, expire: float | None = None) -> None:
        """Write raw bytes under several keys in one statement (the journal's group commit).

        Same effect as :meth:`set_bytes` for each item. Meant for keys that are
        new or hold small values: a large value already stored as a file under
        one of the keys would be left behind as an orphan file.

        Raises:
            SerializationError: A key is not a str or a value is not bytes.
            StateError: The database failed.
        """
        self._check_open()
        if expire is not None and (not isinstance(expire, (int, float)) or expire <= 0):
            raise ConfigError(f"expire must be a positive number of seconds, got {expire!r}")
        now = time.time()
        expire_time = None if expire is None else now + expire
        limit = self._cache.disk_min_file_size
        rows = []
        for key, data in items:
            _check_key(key)
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise SerializationError(f"cannot write key {key!r}: put_many() needs bytes, got {type(data).__name__}")
            blob = bytes([_TAG_BYTES]) + bytes(data)
            if len(blob) >= limit:
                self._put(key, blob, expire)
                continue
            rows.append((key, now, expire_time, now, sqlite3.Binary(blob)))
        if not rows:
            return
        with self.transact(), self._guard("write keys"):
            self._cache._con.executemany(_UPSERT, rows)

    # -- keys ---------------------------------------------------------------

    def delete(self, key: str) -> bool:
        """Delete a key.

        Args:
            key: The key.

        Returns:
            Whether the key existed.

        Raises:
            StateError: The database failed.
        """
        _check_key(key)
        self._check_open()
        with self._guard(f"delete key {key!r}"):
            return bool(self._cache.delete(key))

    def contains(self, key: str) -> bool:
        """Whether a key exists and has not expired.

        Args:
            key: The key.

        Returns:
            ``True`` if present.

        Raises:
            StateError: The database failed.
        """
        _check_key(key)
        self._check_open()
        with self._guard(f"look up key {key!r}"):
            return key in self._cache

    def __contains__(self, key: object) -> bool:
        return self.contains(key)  # type: ignore[arg-type]

    def touch(self, key: str, *, expire: float | None) -> bool:
        """Change the expiry of an existing key.

        Args:
            key: The key.
            expire: Seconds from now until it expires; ``None`` for never.

        Returns:
            Whether the key existed.

        Raises:
            StateError: The database failed.
        """
        _check_key(key)
        self._check_open()
        with self._guard(f"touch key {key!r}"):
            return bool(self._cache.touch(key, expire=expire))

    def keys(
        self, prefix: str = "", *, reverse: bool = False, limit: int | None = None
    ) -> Iterator[str]:
        """Iterate over the live keys that start with ``prefix``, in sorted order.

        Keys are read a page at a time, so writes made while iterating do not
        break the iteration (they may or may not be seen).

        Args:
            prefix: Only keys starting with this.
            reverse: Iterate from the largest key down.
            limit: Stop after this many keys.

        Yields:
            The keys.

        Raises:
            StateError: The database failed.
        """
        _check_key(prefix, what="prefix")
        self._check_open()
        upper = _prefix_upper_bound(prefix)
        emitted = 0
        cursor: str | None = None
        while True:
            page = self._key_page(prefix, upper, cursor, reverse)
            for key in page:
                yield key
                emitted += 1
                if limit is not None and emitted >= limit:
                    return
            if len(page) < _PAGE_SIZE:
                return
            cursor = page[-1]

    def __iter__(self) -> Iterator[str]:
        """Iterate over all live keys in sorted order (same as :meth:`keys`)."""
        return self.keys()

    def expire(self) -> int:
        """Delete every expired entry now (diskcache only skips them on read).

        Returns:
            The number of entries deleted.

        Raises:
            StateError: The database failed.
        """
        self._check_open()
        with self._guard("remove expired entries"):
            return int(self._cache.expire())

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key that starts with ``prefix``, atomically.

        Args:
            prefix: The prefix; ``""`` deletes everything.

        Returns:
            The number of keys deleted.

        Raises:
            StateError: The database failed.
        """
        with self.transact():
            doomed = list(self.keys(prefix))
            with self._guard(f"delete keys under {prefix!r}"):
                for key in doomed:
                    self._cache.delete(key)
        return len(doomed)

    # -- transactions and lifecycle -------------------------------------------

    @contextlib.contextmanager
    def transact(self) -> Iterator[Store]:
        """Lock the store for an atomic read-modify-write.

        Other writers, in this or any other process, wait until the block ends
        (up to ``timeout`` seconds). Reads and writes made inside the block are
        committed together, or rolled back if the block raises. Transactions
        nest within one thread and cannot be shared between threads: do not
        await the async methods of the components inside one (they run in a
        worker thread, which would wait for this lock until ``timeout``).

        Yields:
            This store.

        Raises:
            StateError: The lock could not be taken in time, or the commit failed.
        """
        self._check_open()
        manager = self._cache.transact(retry=False)
        with self._guard("begin a transaction"):
            manager.__enter__()
        try:
            yield self
        except BaseException as exc:
            # Only errors from the rollback itself are mapped; the caller's own
            # exception is re-raised untouched.
            with self._guard("roll back a transaction"):
                suppressed = manager.__exit__(type(exc), exc, exc.__traceback__)
            if not suppressed:
                raise
        else:
            with self._guard("commit a transaction"):
                manager.__exit__(None, None, None)

    def close(self) -> None:
        """Close the database connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._cache.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickles by path: the receiving process (e.g. a Dask worker) reopens
        # the same directory. The default serde is rebuilt there rather than
        # pickled (it holds closures); a custom one must be picklable.
        return (_reopen, (str(self._path), self._custom_serde, self._timeout))

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Store({str(self._path)!r}, {state})"

    # -- internals ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"the state store at {self._path} is closed")

    def _fetch(self, key: str) -> bytes | None:
        _check_key(key)
        self._check_open()
        with self._guard(f"read key {key!r}"):
            blob = self._cache.get(key, default=_MISSING)
        if blob is _MISSING:
            return None
        if not isinstance(blob, bytes):
            raise StateCorruptedError(f"value at key {key!r} is not stored as bytes")
        return blob

    def _put(self, key: str, blob: bytes, expire: float | None) -> None:
        self._check_open()
        if expire is not None and (not isinstance(expire, (int, float)) or expire <= 0):
            raise ConfigError(
                f"expire must be a positive number of seconds, got {expire!r}"
            )
        with self._guard(f"write key {key!r}"):
            self._cache.set(key, blob, expire=expire)

    def _key_page(
        self, prefix: str, upper: str | None, cursor: str | None, reverse: bool
    ) -> list[str]:
        # diskcache has no prefix scan; its unique (key, raw) index makes this
        # range query cheap. Expired rows are skipped like diskcache's get().
        # typeof() skips rows with bytes keys written by other diskcache users;
        # they sort after all text and would otherwise end a page early.
        clauses = [
            "raw = 1",
            "typeof(key) = 'text'",
            "key >= ?",
            "(expire_time IS NULL OR expire_time > ?)",
        ]
        params: list[Any] = [prefix, time.time()]
        if upper is not None:
            clauses.append("key < ?")
            params.append(upper)
        if cursor is not None:
            clauses.append("key < ?" if reverse else "key > ?")
            params.append(cursor)
        order = "DESC" if reverse else "ASC"
        query = (
            f"SELECT key FROM Cache WHERE {' AND '.join(clauses)} "
            f"ORDER BY key {order} LIMIT {_PAGE_SIZE}"
        )
        with self._guard(f"list keys under {prefix!r}"):
            rows = self._cache._sql(query, params).fetchall()
        return [row[0] for row in rows]

    def _guard(self, action: str) -> contextlib.AbstractContextManager[None]:
        """Map diskcache, SQLite and OS errors to the nalar error classes."""
        return storage_errors(action, self._path, self._timeout)


def _reopen(path: str, serde: SerdeProtocol | None, timeout: float) -> Store:
    """Rebuild a pickled :class:`Store` by opening its directory again."""
    return Store(path, serde=serde, timeout=timeout)
