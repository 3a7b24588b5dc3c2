"""The state service of a Runtime: its store, its journal, the directory lock, retention.

One Runtime owns a state directory at a time: it holds ``runtime.lock`` in the
directory (an exclusive ``flock``, released by the kernel if the process dies),
and a second Runtime on the same directory, in this process or another, is
refused with a :class:`~nalar_plugin.errors.StateError` naming the holder.
That ownership is what lets claims live in memory (see
:mod:`nalar_plugin.state.journal`) and lets this service answer "has this call
committed?" from memory for the sessions it has seen: the first journaled call
of a session reads the session's index once, on the journal's writer thread;
later calls of the session never read the disk before they run. No store
operation of the call path runs on the caller's thread, so an event loop that
makes calls is never blocked by the store.

Retention (settings under ``nalar.journal``): ``max-age`` expires records that
many seconds after their commit; ``max-sessions`` keeps that many sessions and
forgets the oldest idle ones beyond it (journal and managed state); a
background sweep applies both every ``gc-interval``. ``nalar state gc`` applies
them once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from nalar_plugin.context import id_mark, made_since
from nalar_plugin.errors import ConfigError, StateError
from nalar_plugin.state._encoding import join_key, unescape
from nalar_plugin.state.journal import GcReport, Journal, JournalRecord, Retention
from nalar_plugin.state.serde import default_serde
from nalar_plugin.state.store import Store

__all__ = ["LOCK_NAME", "StateService", "parse_allowed_types"]

logger = logging.getLogger(__name__)

LOCK_NAME: Final = "runtime.lock"
_SESSION_PREFIX: Final = "journal-session:"
_KNOWN_SESSIONS: Final = 4096  # sessions whose committed calls are known in memory
_ALL_SESSIONS: Final = 200_000  # up to this many, every session with records is known by name


def parse_allowed_types(names: Any) -> list[tuple[str, ...]]:
    """Turn ``["pkg.mod.Class", "pkg.mod:Class"]`` into the serde's ``(module, name)`` pairs.

    Raises:
        ConfigError: A name has no module part.
    """
    if not names:
        return []
    if isinstance(names, str):
        names = [names]
    pairs: list[tuple[str, ...]] = []
    for n in names:
        text = str(n)
        module, sep, cls = text.rpartition(":") if ":" in text else text.rpartition(".")
        if not sep or not module or not cls:
            raise ConfigError(f"nalar.state-allowed-types: {text!r} is not 'module.Class'")
        pairs.append((module, cls))
    return pairs


def _lock_directory(path: Path) -> Any:
    lock_path = path / LOCK_NAME
    try:
        fh = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held until close()
    except OSError as exc:
        raise StateError(f"cannot open the lock file {lock_path}: {exc}") from exc
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
            raise StateError(
                f"the state directory {path} is in use by another Runtime (process {holder}); "
                "one Runtime owns a state directory at a time: close the other one, or give this "
                "Runtime its own state_dir="
            ) from exc
        raise StateError(f"cannot lock the state directory {path}: {exc}") from exc
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


class StateService:
    """A Runtime's store, journal and retention.

    Args:
        path: The state directory.
        allowed_types: Extra classes the serde may rebuild (``nalar.state-allowed-types``).
        retention: Retention rules of the journal.
        gc_interval: Seconds between background sweeps (``None``: no sweep).
        active: Whether a session still has calls in flight (kept by the sweep).

    Raises:
        StateError: The directory is corrupted, foreign, read-only or locked by another Runtime.
    """

    def __init__(self, path: str | os.PathLike[str], *, allowed_types: Any = (), retention: Retention | None = None,
                 gc_interval: float | None = None, active: Callable[[str], bool] = lambda s: False) -> None:
        self.allowed_types = [str(t) for t in (allowed_types or [])]
        serde = default_serde(allowed_types=parse_allowed_types(self.allowed_types))
        self.store = Store(path, serde=serde)
        try:
            self._lock_file = _lock_directory(self.store.path)
        except BaseException:
            self.store.close()
            raise
        self.journal = Journal(self.store, retention)
        self._active = active
        self._known: OrderedDict[str, set[tuple[str, str]]] = OrderedDict()
        self._opened_at = id_mark()  # sessions made after this have no records yet
        self._known_lock = threading.Lock()
        self._with_records = self._sessions_with_records()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.sweeps = 0  # background sweeps finished so far
        self.closed = False
        if gc_interval and (self.journal.retention.max_age or self.journal.retention.max_sessions):
            self._sweeper = threading.Thread(target=self._sweep, args=(gc_interval,), name="nalar-journal-gc",
                                             daemon=True)
            self._sweeper.start()

    @property
    def serde(self) -> Any:
        """The store's serde."""
        return self.store.serde

    # -- the call path ---------------------------------------------------------
    def check(self, key: str, arg_hash: str, session: str, scoped: bool,
              done: Callable[[JournalRecord | None, BaseException | None], None]) -> None:
        """Find whether ``(key, arg_hash)`` committed; ``done(record, error)``, maybe at once.

        ``scoped`` says the key belongs to ``session`` (a key derived from the
        session): then the session's index answers, from memory once loaded; a
        session this process made after the service opened starts known and empty. Other keys are
        looked up directly, on the writer thread.
        """
        if scoped:
            with self._known_lock:
                known = self._known.get(session)
                if known is None and (made_since(session, self._opened_at) or (
                        self._with_records is not None and session not in self._with_records)):
                    known = self._remember(session, set())
                if known is not None:
                    self._known.move_to_end(session)
                    if (key, arg_hash) not in known:
                        hit = False
                    else:
                        hit = True
                else:
                    hit = None
            if hit is False:
                done(None, None)
                return
        self.journal.run_async(lambda: self._lookup(key, arg_hash, session, scoped), done)

    def _lookup(self, key: str, arg_hash: str, session: str, scoped: bool) -> JournalRecord | None:
        if scoped:
            self._load(session)
        return self.journal.lookup(key, arg_hash)

    def _sessions_with_records(self) -> set[str] | None:
        """Every session the journal holds records of, or ``None`` when there are too many to keep."""
        found: set[str] = set()
        for k in self.store.keys(_SESSION_PREFIX):
            found.add(unescape(k[len(_SESSION_PREFIX):].split(":", 1)[0]))
            if len(found) > _ALL_SESSIONS:
                return None
        return found

    def _load(self, session: str) -> None:
        with self._known_lock:
            if session in self._known:
                return
        base = join_key(_SESSION_PREFIX, session) + ":"
        found: set[tuple[str, str]] = set()
        for k in self.store.keys(base):
            key, hash_ = k[len(base):].split(":")
            found.add((unescape(key), unescape(hash_)))
        with self._known_lock:
            self._remember(session, found)

    def _remember(self, session: str, found: set[tuple[str, str]]) -> set[tuple[str, str]]:
        # Caller holds the lock.
        self._known[session] = found
        while len(self._known) > _KNOWN_SESSIONS:
            self._known.popitem(last=False)
        return found

    def commit(self, done: Callable[[Any, BaseException | None], None], *, lead: bool = False,
               **request: Any) -> None:
        """Queue a call's commit (see :meth:`Journal.commit_async`); ``done`` runs once it is written."""
        key, hash_, session = request.get("key"), request.get("arg_hash"), request.get("session")

        def committed(outcome: Any, error: BaseException | None) -> None:
            if error is None and key is not None:
                with self._known_lock:
                    if self._with_records is not None:
                        self._with_records.add(str(session))
                        if len(self._with_records) > _ALL_SESSIONS:
                            self._with_records = None  # too many to name: read each new session's index
                    known = self._known.get(str(session))
                    if known is not None:
                        known.add((key, str(hash_)))
            done(outcome, error)

        self.journal.commit_async(committed, lead=lead, **request)

    def forget_session(self, session: str) -> int:
        """Delete the journal records and the managed state of ``session``."""
        with self._known_lock:
            self._known.pop(session, None)
            # The name stays in the set of sessions with records (a superset is safe:
            # it only costs one read of the session's index on its next call).
        return self.journal.forget_session(session)

    def gc(self) -> GcReport:
        """Apply the retention rules now (see the module docstring)."""
        report = self.journal.gc(active=self._active)
        with self._known_lock:
            self._known.clear()
            if self._with_records is not None:
                # Sessions whose records expired by age stay named: a superset is safe.
                self._with_records.difference_update(report.forgotten)
        return report

    def _sweep(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                report = self.gc()
                self.sweeps += 1
                if report.keys:
                    logger.debug("journal sweep removed %d keys (%d sessions)", report.keys, report.sessions)
            except StateError as exc:
                logger.warning("the journal sweep failed: %s", exc)

    # -- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        """Write queued commits, stop the sweep, release the lock and close the store."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=10)
        self.journal.close()
        self.store.close()
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
        self._lock_file.close()
