"""The call journal: each committed call's result, keyed by its idempotency key.

Layout::

    journal:{idempotency key}:{argument hash}                      the record (msgpack)
    journal-session:{session}:{idempotency key}:{argument hash}    empty; an index

A call's staged managed-state writes and its journal record are written in one
store transaction (:meth:`Journal.commit`), so either both exist or neither
does. A call that finds its record does not run again: it returns the recorded
result. Commits of many calls share one transaction (group commit): callers
queue their commits and one writer thread applies everything queued so far at
once, so the hot path never waits on one transaction per call, and
:meth:`Journal.commit_async` lets an event loop wait for its commit without
blocking.

Claims keep two live executions of one call from running its body side by
side. They live in memory (:class:`Claims`): one Runtime owns a state directory
at a time (it holds the directory's lock), every call of that Runtime is made
and committed in its process, so the process that could hold a claim is the
one that checks it, and a claim dies with the process that held it — exactly
when it must be taken over.

The argument hash guards the key. A call whose key is in the journal under
*another* argument hash is a different call that happens to share the key (a
session id reused for new work, a nondeterministic parent that chose other
arguments on its retry): it runs afresh and is journaled beside the first
record. A key therefore never returns a result computed from other arguments,
and a committed (key, arguments) pair never runs twice. Arguments the serde
cannot encode hash to ``"*"``: the key alone identifies the call.

Retention (:class:`Retention`): records may expire after ``max_age`` seconds,
and :meth:`Journal.gc` forgets the oldest idle sessions beyond ``max_sessions``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple

import ormsgpack

from nalar_plugin.errors import SerializationError, StateError
from nalar_plugin.measure import Histogram
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

logger = logging.getLogger(__name__)

__all__ = ["UNGUARDED", "Claims", "GcReport", "Journal", "JournalRecord", "Retention", "arg_hash"]

_PREFIX: Final = "journal:"
_SESSION_PREFIX: Final = "journal-session:"
_RECORD_VERSION: Final = 1
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


@dataclasses.dataclass(frozen=True)
class Retention:
    """How long the journal keeps what it committed.

    Attributes:
        max_age: Seconds a record lives after its commit (``None``: for ever).
        max_sessions: Sessions kept; :meth:`Journal.gc` forgets the oldest idle
            ones beyond this, journal and managed state (``None``: no bound).
    """

    max_age: float | None = None
    max_sessions: int | None = None


class GcReport(NamedTuple):
    """What :meth:`Journal.gc` removed.

    Attributes:
        sessions: Sessions forgotten by the count rule.
        keys: Keys deleted in all (records, index entries, managed state, expired rows).
        forgotten: The names of those sessions.
    """

    sessions: int
    keys: int
    forgotten: tuple[str, ...] = ()


class Claims:
    """Which live execution runs each journaled call now (in memory; see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], Any] = {}
        self._waiting: dict[tuple[str, str], list[Callable[[], None]]] = {}

    def take(self, key: str, arg_hash: str, holder: Any, on_release: Callable[[], None] | None = None) -> Any:
        """Claim the call for ``holder``; return ``None``, or the other live holder that has it.

        When another holder has it, ``on_release`` (if given) is called once that holder
        releases its claim: after its commit is written, or once it gave up. A holder's
        future can be done before that (a result handed over before its commit is
        written, or a body cancelled while it still runs), so a duplicate waits for the
        release, not for the future.
        """
        with self._lock:
            current = self._held.get((key, arg_hash))
            if current is not None and current is not holder:
                if on_release is not None:
                    self._waiting.setdefault((key, arg_hash), []).append(on_release)
                return current
            self._held[(key, arg_hash)] = holder
            return None

    def release(self, key: str, arg_hash: str, holder: Any) -> None:
        """Drop ``holder``'s claim (it committed or gave up); another holder's stays."""
        with self._lock:
            if self._held.get((key, arg_hash)) is not holder:
                return
            del self._held[(key, arg_hash)]
            waiting = self._waiting.pop((key, arg_hash), ())
        for fn in waiting:
            try:
                fn()
            except Exception:  # one waiter's failure must not keep the others waiting
                logger.exception("a call waiting for the claim of %s failed", key)

    def waiting(self) -> int:
        """Calls waiting for another execution's claim."""
        with self._lock:
            return sum(len(w) for w in self._waiting.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)


def _record_key(key: str, hash_: str) -> str:
    return join_key(_PREFIX, key, hash_)


def _index_key(session: str, key: str, hash_: str) -> str:
    return join_key(_SESSION_PREFIX, session, key, hash_)


class Journal:
    """The journal and the managed state of every session, in one :class:`Store`.

    Args:
        store: The open store; the journal does not close it.
        retention: How long records live (default: for ever).
    """

    def __init__(self, store: Store, retention: Retention | None = None) -> None:
        self._store = store
        self.retention = retention or Retention()
        # SQLite makes writers of one process wait for each other by sleeping
        # and polling; a lock hands the write transaction over at once instead,
        # and commits of concurrent calls share transactions.
        self._write_lock = threading.Lock()
        self._group = GroupWriter(store, self._write_lock)
        self.claims = Claims()

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

    @property
    def commit_seconds(self) -> Histogram:
        """Seconds each group-commit transaction took (one observation per shared transaction)."""
        return self._group.commit_seconds

    @property
    def commit_counts(self) -> tuple[int, int]:
        """``(transactions, units of work committed in them)`` so far."""
        return self._group.batches, self._group.units

    def close(self) -> None:
        """Wait for queued commits to be written; later commits fail."""
        self._group.close()

    def run_async(self, work: Callable[[], Any], done: Callable[[Any, BaseException | None], None]) -> None:
        """Run ``work`` (reads and checks) on the writer thread, in its next transaction; then ``done``."""
        self._group.submit(work, done)

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
        """Apply a call's staged writes and record its result, atomically; wait for it.

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

    def commit_async(self, done: Callable[[Any, BaseException | None], None], *, lead: bool = False,
                     **request: Any) -> None:
        """Queue :meth:`commit` and return at once; ``done(outcome, error)`` runs once it is written.

        ``outcome`` is what :meth:`commit` returns; ``error`` is the exception
        it would raise (then nothing of the call was written). With ``lead``
        the caller (never an event loop) may write it itself, see
        :meth:`GroupWriter.submit`.
        """
        ops = request.pop("ops", None)
        try:
            staged = decode_ops(ops) if ops else []
        except Exception as exc:
            done(None, exc)
            return
        self._group.submit(lambda: self._commit(staged=staged, **request), done, lead=lead)

    def _commit(self, key: str | None, arg_hash: str, session: str, call_id: str, attempt: int,
                result: tuple[str, bytes] | None, staged: list[Any]) -> tuple[JournalRecord | None, bool]:
        if key is not None:
            existing = self.lookup(key, arg_hash)
            if existing is not None:
                return existing, False
        self._apply(staged)
        if key is None:
            return None, True
        type_, payload = result if result is not None else ("null", b"")
        record = JournalRecord(key, arg_hash, session, call_id, attempt, time.time(), type_, payload)
        self._store.put_many([
            (_record_key(key, arg_hash), pack([_RECORD_VERSION, session, call_id, attempt, record.committed_at,
                                               type_, payload])),
            (_index_key(session, key, arg_hash), b""),
        ], expire=self.retention.max_age)
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
        with self._writing():
            return self._forget(session)

    def _forget(self, session: str) -> int:
        deleted = 0
        for key, hash_ in list(self._index(session)):
            deleted += self._store.delete(_record_key(key, hash_))
            deleted += self._store.delete(_index_key(session, key, hash_))
        deleted += self._store.delete_prefix(join_key(MANAGED_PREFIX, session) + ":")
        return deleted

    def sessions(self) -> dict[str, float]:
        """Every session with records: its latest commit time."""
        latest: dict[str, float] = {}
        base = _SESSION_PREFIX
        for k in self._store.keys(base):
            session, key, hash_ = k[len(base):].split(":")
            rec = self.lookup(unescape(key), unescape(hash_))
            if rec is not None:
                s = unescape(session)
                latest[s] = max(latest.get(s, 0.0), rec.committed_at)
        return latest

    def gc(self, *, active: Callable[[str], bool] = lambda s: False) -> GcReport:
        """Apply the retention rules now: drop expired rows, then the oldest idle sessions beyond the count.

        Args:
            active: Whether a session still has calls in flight; those are kept.

        Returns:
            What was removed.
        """
        removed = 0
        with self._write_lock:
            removed += self._store.expire()
        limit = self.retention.max_sessions
        if limit is None:
            return GcReport(0, removed)
        by_age = sorted(self.sessions().items(), key=lambda kv: kv[1])
        excess = len(by_age) - limit
        forgotten: list[str] = []
        for session, _ in by_age:
            if len(forgotten) >= excess:
                break
            if active(session):
                continue
            with self._writing():
                removed += self._forget(session)
            forgotten.append(session)
        return GcReport(len(forgotten), removed, tuple(forgotten))

    def _index(self, session: str) -> Iterator[tuple[str, str]]:
        base = join_key(_SESSION_PREFIX, session) + ":"
        for k in self._store.keys(base):
            key, hash_ = k[len(base):].split(":")
            yield unescape(key), unescape(hash_)

    # -- managed state ---------------------------------------------------------
    def read_managed(self, session: str, name: str) -> bytes | None:
        """Return the record bytes of one managed container, if it exists."""
        return self._store.get_bytes(managed_key(session, name))

    read = read_managed  # the access a running call's managed-state scope reads through

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
    Other objects hash by their serialised form. Everything is first brought to
    plain data, then hashed as its canonical msgpack form (plain data, the
    common case, goes straight to msgpack, in C).

    Args:
        serde: The store's serde, for objects that are not plain data.
        args: Positional arguments.
        kwargs: Keyword arguments.

    Returns:
        A hex digest, or :data:`UNGUARDED` when the serde cannot encode an argument.
    """
    data = [args, kwargs]
    try:
        packed = ormsgpack.packb(data, option=_PLAIN)
    except (TypeError, ValueError, ormsgpack.MsgpackEncodeError):
        try:
            packed = ormsgpack.packb(_plain(serde, data, 0), option=_PLAIN)
        except (SerializationError, TypeError, ValueError, RecursionError, ormsgpack.MsgpackEncodeError):
            return UNGUARDED
    return hashlib.sha256(b"P" + packed).hexdigest()


_PLAIN: Final = (
    ormsgpack.OPT_SORT_KEYS | ormsgpack.OPT_PASSTHROUGH_DATACLASS | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_ENUM | ormsgpack.OPT_PASSTHROUGH_UUID | ormsgpack.OPT_PASSTHROUGH_SUBCLASS
    | ormsgpack.OPT_PASSTHROUGH_BIG_INT
)


def _plain(serde: Any, obj: Any, depth: int) -> Any:
    """``obj`` as plain data with the equalities of :func:`arg_hash`."""
    if depth > 200:
        raise RecursionError("arguments nested too deep to hash")
    kind = type(obj)
    if obj is None or kind in (bool, str, float, bytes):
        return obj
    if kind is int:
        return obj if -(2**63) <= obj < 2**64 else ["__int__", str(obj)]
    if isinstance(obj, (list, tuple)) and kind in (list, tuple):
        return [_plain(serde, x, depth + 1) for x in obj]
    if kind is dict:
        if all(type(k) is str for k in obj):
            return {k: _plain(serde, v, depth + 1) for k, v in obj.items()}
        items = sorted((_digest(serde, k, depth), _plain(serde, v, depth + 1)) for k, v in obj.items())
        return ["__map__", [list(i) for i in items]]
    if kind in (set, frozenset):
        return ["__set__", sorted(_digest(serde, x, depth) for x in obj)]
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(serde, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, depth + 1)
    if callable(getattr(obj, "model_dump", None)) and not isinstance(obj, type):
        return _plain(serde, obj.model_dump(), depth + 1)
    try:
        type_, payload = serde.dumps_typed(obj)
    except Exception as exc:
        raise SerializationError(str(exc)) from exc
    return ["__obj__", str(type_), bytes(payload)]


def _digest(serde: Any, obj: Any, depth: int) -> bytes:
    return hashlib.sha256(ormsgpack.packb(_plain(serde, obj, depth + 1), option=_PLAIN)).digest()
