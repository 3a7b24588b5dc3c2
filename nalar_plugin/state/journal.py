"""The call journal: each committed call's result, keyed by its idempotency key.

Layout::

    journal:{idempotency key}:{argument hash}          the record (msgpack)
    journal-session:{session}:{idempotency key}:{argument hash}   empty; an index
    journal-claim:{idempotency key}:{argument hash}    who runs the call now (msgpack)

A call's staged managed-state writes and its journal record are written in one
store transaction (:meth:`Journal.commit`), so either both exist or neither
does. A call that finds its record does not run again: it returns the recorded
result.

Before its body runs, an execution *claims* the call (:meth:`Journal.begin`).
A second execution of the same call that finds a claim whose holder is alive
waits for that holder to commit (and then returns its result) or to give up,
instead of running the body beside it. That happens when a retry races an
execution that was thought lost (its parent's worker died, not its own), and
when one keyed call is made twice at once. A claim whose holder died (its
worker left the cluster, its driver process ended) is taken over.

The argument hash guards the key. A call whose key is in the journal under
*another* argument hash is a different call that happens to share the key (a
session id reused for new work, a nondeterministic parent that chose other
arguments on its retry): it runs afresh and is journaled beside the first
record. A key therefore never returns a result computed from other arguments,
and a committed (key, arguments) pair never runs twice. Arguments the serde
cannot encode hash to ``"*"``: the key alone identifies the call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple

from nalar_plugin.errors import SerializationError, StateError
from nalar_plugin.state._encoding import join_key, loads_value, pack, unescape, unpack
from nalar_plugin.state._group import GroupWriter
from nalar_plugin.state._ops import (
    MANAGED_PREFIX,
    apply_op,
    decode_container,
    decode_ops,
    empty,
    encode_container,
    managed_key,
)
from nalar_plugin.state.store import Store

__all__ = ["DONE", "RUN", "UNGUARDED", "WAIT", "Journal", "JournalRecord", "arg_hash"]

_PREFIX: Final = "journal:"
_SESSION_PREFIX: Final = "journal-session:"
_CLAIM_PREFIX: Final = "journal-claim:"
_RECORD_VERSION: Final = 1
# A claim outlives any sane call; the expiry only sweeps claims of dead processes.
_CLAIM_TTL: Final = 7 * 86400.0
DONE: Final = "done"
""":meth:`Journal.begin`: the call committed; return its record's result."""
RUN: Final = "run"
""":meth:`Journal.begin`: the caller holds the claim; run the body."""
WAIT: Final = "wait"
""":meth:`Journal.begin`: a live execution holds the claim; ask again later."""
UNGUARDED: Final = "*"
"""The argument hash of a call whose arguments the serde cannot encode."""


class JournalRecord(NamedTuple):
    """One committed call.

    Attributes:
        key: The call's idempotency key.
        arg_hash: The hash of its arguments (``"*"`` when unguarded).
        session: The session it belonged to.
        call_id: The call id of the attempt that committed.
        attempt: That attempt's number (0 for the first execution).
        committed_at: ``time.time()`` of the commit.
        result_type: The serde's type tag of the result.
        result: The serialised result.
    """

    key: str
    arg_hash: str
    session: str
    call_id: str
    attempt: int
    committed_at: float
    result_type: str
    result: bytes

    def value(self, serde: Any) -> Any:
        """Decode the recorded result with ``serde``."""
        return loads_value(serde, self.result_type, self.result, what=f"the journaled result of {self.key!r}")

    def to_wire(self) -> list[Any]:
        """Plain fields, for a Dask rpc reply."""
        return list(self)

    @classmethod
    def from_wire(cls, fields: list[Any]) -> JournalRecord:
        """Undo :meth:`to_wire`."""
        return cls(*fields)


def _record_key(key: str, hash_: str) -> str:
    return join_key(_PREFIX, key, hash_)


def _index_key(session: str, key: str, hash_: str) -> str:
    return join_key(_SESSION_PREFIX, session, key, hash_)


def _claim_key(key: str, hash_: str) -> str:
    return join_key(_CLAIM_PREFIX, key, hash_)


class Journal:
    """The journal and the managed state of every session, in one :class:`Store`.

    Args:
        store: The open store; the journal does not close it.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        # SQLite makes writers of one process wait for each other by sleeping
        # and polling; a lock hands the write transaction over at once instead,
        # and claims and commits of concurrent calls share transactions.
        self._write_lock = threading.Lock()
        self._group = GroupWriter(store, self._write_lock)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        with self._write_lock, self._store.transact():
            yield

    @property
    def store(self) -> Store:
        """The underlying store."""
        return self._store

    @property
    def serde(self) -> Any:
        """The store's serde, used for results and managed values."""
        return self._store.serde

    # -- the journal ---------------------------------------------------------
    def lookup(self, key: str, arg_hash: str) -> JournalRecord | None:
        """Return the record of the call ``(key, arg_hash)``, if it committed.

        Raises:
            StateCorruptedError: The record cannot be decoded.
            StateError: The store failed.
        """
        rk = _record_key(key, arg_hash)
        data = self._store.get_bytes(rk)
        if data is None:
            return None
        version, session, call_id, attempt, committed_at, type_, payload = unpack(data, key=rk, length=7)
        del version  # one version so far; a newer one is refused by the directory marker
        return JournalRecord(key, arg_hash, session, call_id, int(attempt), float(committed_at), type_, bytes(payload))

    def begin(self, key: str, arg_hash: str, owner: str, alive: Callable[[str], bool]) -> tuple[str, JournalRecord | None]:
        """Look the call up and, if it has not committed, claim it for ``owner``.

        Args:
            key: The idempotency key.
            arg_hash: The argument hash.
            owner: Who asks (unique per execution; see the access classes).
            alive: Whether the holder of an existing claim still runs.

        Returns:
            ``(DONE, record)``, ``(RUN, None)`` or ``(WAIT, None)``.

        Raises:
            StateError: The store failed.
        """
        return self._group.run(lambda: self._begin(key, arg_hash, owner, alive))

    def _begin(self, key: str, arg_hash: str, owner: str, alive: Callable[[str], bool]) -> tuple[str, JournalRecord | None]:
        found = self.lookup(key, arg_hash)
        if found is not None:
            return DONE, found
        ck = _claim_key(key, arg_hash)
        held = self._store.get_bytes(ck)
        if held is not None:
            holder = str(unpack(held, key=ck, length=2)[0])
            if holder != owner and alive(holder):
                return WAIT, None
        self._store.set_bytes(ck, pack([owner, time.time()]), expire=_CLAIM_TTL)
        return RUN, None

    def release(self, key: str, arg_hash: str, owner: str) -> None:
        """Drop ``owner``'s claim on a call that will not commit (its body raised)."""
        self._group.run(lambda: self._release(key, arg_hash, owner))

    def _release(self, key: str, arg_hash: str, owner: str) -> None:
        ck = _claim_key(key, arg_hash)
        held = self._store.get_bytes(ck)
        if held is not None and unpack(held, key=ck, length=2)[0] == owner:
            self._store.delete(ck)

    def commit(
        self,
        *,
        key: str | None,
        arg_hash: str,
        session: str,
        call_id: str,
        attempt: int,
        result: tuple[str, bytes] | None,
        ops: bytes | None,
    ) -> tuple[JournalRecord | None, bool]:
        """Apply a call's staged writes and record its result, atomically.

        If another execution of the same call committed first, nothing is
        written and that execution's record is returned: the caller must then
        return the recorded result, not its own.

        Args:
            key: The idempotency key; ``None`` applies ``ops`` with no record
                (an idempotent call).
            arg_hash: The argument hash (see :func:`arg_hash`).
            session: The call's session.
            call_id: The committing call's id.
            attempt: The committing attempt's number.
            result: The serialised result ``(type tag, payload)``.
            ops: The staged writes (``_ops.encode_ops``), or ``None``.

        Returns:
            ``(record, committed)``: the record that holds the call's result
            (``None`` when ``key`` is ``None``), and whether this commit wrote it.

        Raises:
            StateError: The store failed; nothing was written.
        """
        staged = decode_ops(ops) if ops else []
        return self._group.run(lambda: self._commit(key, arg_hash, session, call_id, attempt, result, staged))

    def _commit(self, key: str | None, arg_hash: str, session: str, call_id: str, attempt: int,
                result: tuple[str, bytes] | None, staged: list[Any]) -> tuple[JournalRecord | None, bool]:
        if key is not None:
            existing = self.lookup(key, arg_hash)
            if existing is not None:
                return existing, False
        self._apply(staged)
        if key is None:
            return None, True
        self._store.delete(_claim_key(key, arg_hash))
        type_, payload = result if result is not None else ("null", b"")
        record = JournalRecord(key, arg_hash, session, call_id, attempt, time.time(), type_, payload)
        self._store.set_bytes(
            _record_key(key, arg_hash),
            pack([_RECORD_VERSION, session, call_id, attempt, record.committed_at, type_, payload]),
        )
        self._store.set_bytes(_index_key(session, key, arg_hash), b"")
        return record, True

    def records(self, session: str) -> list[JournalRecord]:
        """Every committed call of ``session``, oldest commit first."""
        found = []
        for key, hash_ in self._index(session):
            rec = self.lookup(key, hash_)
            if rec is not None:
                found.append(rec)
        return sorted(found, key=lambda r: r.committed_at)

    def forget_session(self, session: str) -> int:
        """Delete the journal records and the managed state of ``session``.

        A call of a forgotten session runs again when it is made again. Records
        of explicit keys are indexed by the session of the call that committed
        them and are forgotten with it.

        Returns:
            The number of keys deleted.
        """
        deleted = 0
        with self._writing():
            for key, hash_ in list(self._index(session)):
                deleted += self._store.delete(_record_key(key, hash_))
                deleted += self._store.delete(_index_key(session, key, hash_))
            deleted += self._store.delete_prefix(join_key(MANAGED_PREFIX, session) + ":")
        return deleted

    def _index(self, session: str) -> Iterator[tuple[str, str]]:
        base = join_key(_SESSION_PREFIX, session) + ":"
        for k in self._store.keys(base):
            key, hash_ = k[len(base):].split(":")
            yield unescape(key), unescape(hash_)

    # -- managed state ---------------------------------------------------------
    def read_managed(self, session: str, name: str) -> bytes | None:
        """Return the record bytes of one managed container, if it exists."""
        return self._store.get_bytes(managed_key(session, name))

    def load_managed(self, session: str, name: str, kind: str) -> Any:
        """Return one managed container (empty if it does not exist).

        Raises:
            StateError: It exists as the other kind.
        """
        key = managed_key(session, name)
        data = self._store.get_bytes(key)
        if data is None:
            return empty(kind)
        return decode_container(self.serde, data, key=key, kind=kind)[1]

    def apply(self, ops: bytes) -> None:
        """Apply staged writes at once, in one transaction (writes made outside any call)."""
        staged = decode_ops(ops)
        with self._writing():
            self._apply(staged)

    def managed_names(self, session: str) -> list[str]:
        """The names of ``session``'s managed containers."""
        base = join_key(MANAGED_PREFIX, session) + ":"
        return [unescape(k[len(base):]) for k in self._store.keys(base)]

    def _apply(self, staged: list[Any]) -> None:
        """Apply operations to the current records; the caller holds the transaction."""
        touched: dict[str, tuple[str, Any]] = {}
        for session, name, kind, op, args in staged:
            key = managed_key(session, name)
            if key not in touched:
                data = self._store.get_bytes(key)
                value = empty(kind) if data is None else decode_container(self.serde, data, key=key, kind=kind)[1]
                touched[key] = (kind, value)
            elif touched[key][0] != kind:
                raise StateError(
                    f"managed state {name!r} of session {session!r} was written as a "
                    f"managed_{touched[key][0]} and a managed_{kind} in one call"
                )
            apply_op(self.serde, touched[key][1], kind, op, args)
        # Encode everything before writing anything: a failure leaves no write behind.
        encoded = {
            key: encode_container(self.serde, kind, value, what=f"managed state at key {key!r}")
            for key, (kind, value) in touched.items()
        }
        for key, data in encoded.items():
            self._store.set_bytes(key, data)


# -- argument hashing -------------------------------------------------------------
def arg_hash(serde: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Return a hash of a call's arguments that is equal in every process.

    Dicts hash without regard to insertion order, sets without regard to
    iteration order, tuples like lists (the serde returns tuples as lists),
    and dataclasses and pydantic models like the dict of their fields (what a
    replayed value of a class outside the serde's allowlist comes back as).
    Other objects hash by their serialised form.

    Args:
        serde: The store's serde, for objects that are not plain data.
        args: Positional arguments.
        kwargs: Keyword arguments.

    Returns:
        A hex digest, or :data:`UNGUARDED` when the serde cannot encode an argument.
    """
    h = hashlib.sha256()
    try:
        _canon(serde, [list(args), dict(kwargs)], h)
    except (SerializationError, TypeError, ValueError, RecursionError):
        return UNGUARDED
    return h.hexdigest()


def _canon(serde: Any, obj: Any, h: Any) -> None:
    if obj is None or isinstance(obj, bool):
        h.update(b"N" if obj is None else (b"T" if obj else b"F"))
    elif isinstance(obj, int):
        s = str(obj).encode()
        h.update(b"I" + struct.pack(">I", len(s)) + s)
    elif isinstance(obj, float):
        h.update(b"D" + (b"nan" if math.isnan(obj) else float.hex(obj).encode()) + b";")
    elif isinstance(obj, str):
        s = obj.encode("utf-8", "surrogatepass")
        h.update(b"S" + struct.pack(">Q", len(s)) + s)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        b = bytes(obj)
        h.update(b"B" + struct.pack(">Q", len(b)) + b)
    elif isinstance(obj, (list, tuple)):
        h.update(b"L" + struct.pack(">Q", len(obj)))
        for x in obj:
            _canon(serde, x, h)
    elif isinstance(obj, dict):
        items = sorted(((_digest(serde, k), v) for k, v in obj.items()), key=lambda kv: kv[0])
        h.update(b"M" + struct.pack(">Q", len(items)))
        for kd, v in items:
            h.update(kd)
            _canon(serde, v, h)
    elif isinstance(obj, (set, frozenset)):
        digests = sorted(_digest(serde, x) for x in obj)
        h.update(b"E" + struct.pack(">Q", len(digests)) + b"".join(digests))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _canon(serde, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, h)
    elif callable(getattr(obj, "model_dump", None)) and not isinstance(obj, type):
        _canon(serde, obj.model_dump(), h)
    else:
        try:
            type_, payload = serde.dumps_typed(obj)
        except Exception as exc:
            raise SerializationError(str(exc)) from exc
        h.update(b"O" + str(type_).encode() + b";" + struct.pack(">Q", len(payload)) + bytes(payload))


def _digest(serde: Any, obj: Any) -> bytes:
    sub = hashlib.sha256()
    _canon(serde, obj, sub)
    return sub.digest()
