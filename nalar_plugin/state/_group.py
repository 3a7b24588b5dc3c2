"""Group commit: many callers' small write transactions, run as one.

Every journaled call commits once. Run one by one, thousands of concurrent
calls would queue on SQLite's write lock and pay one transaction each. Here
callers queue their work instead; one writer thread runs everything queued so
far in a single store transaction and hands each caller its own result or its
own exception: by return (:meth:`GroupWriter.run`, for threads) or by a
callback on the writer thread (:meth:`GroupWriter.submit`, which never blocks,
so an event loop can wait for its commit without stopping).

A unit of work must not write anything before it can fail on its own account
(it reads and checks first, then writes), so one caller's error never leaves
half of its writes in the shared transaction. An error of the store itself
(the commit failed) reaches every caller of the batch, none of whose writes
then exist.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from nalar_plugin.errors import StateError
from nalar_plugin.measure import COMMIT_BOUNDS, Histogram
from nalar_plugin.state.store import Store

__all__ = ["GroupWriter"]

T = TypeVar("T")

logger = logging.getLogger(__name__)

_IDLE_S: Final = 5.0  # the writer thread leaves after this long without work

Done = Callable[[Any, "BaseException | None"], None]


class _Waiter:
    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def __call__(self, value: Any, error: BaseException | None) -> None:
        self.value, self.error = value, error
        self.event.set()


class GroupWriter:
    """Runs queued units of work in shared transactions on one store.

    Args:
        store: The store.
        lock: Held around every transaction, so other writers of this process
            (which take it too) never wait on SQLite's lock polling instead.
    """

    def __init__(self, store: Store, lock: threading.Lock) -> None:
        self._store = store
        self._lock = lock
        self._cond = threading.Condition()
        self._queue: list[tuple[Callable[[], Any], Done]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._writing = False  # a caller leads a transaction now
        self.batches = 0
        self.units = 0
        # Seconds each shared transaction took, lock wait included (one observation per batch).
        self.commit_seconds = Histogram(COMMIT_BOUNDS)

    def submit(self, work: Callable[[], Any], done: Done, *, lead: bool = False) -> None:
        """Queue ``work``; ``done(result, error)`` runs once it is committed.

        Args:
            work: The unit of work.
            done: Called with its result or its error, on the thread that committed it.
            lead: The caller may commit itself (a thread that is not an event
                loop): when nothing else is queued or being written, it runs the
                transaction at once, in its own thread, instead of handing it to
                the writer thread and back.
        """
        inline = False
        with self._cond:
            if self._closed:
                closed: BaseException | None = StateError("the journal is closed; nothing of this call was written")
            else:
                closed = None
                if lead and not self._queue and not self._writing:
                    self._writing = inline = True
                else:
                    self._queue.append((work, done))
                    if self._thread is None:
                        self._thread = threading.Thread(target=self._loop, name="nalar-journal-writer", daemon=True)
                        self._thread.start()
                    self._cond.notify()
        if closed is not None:
            done(None, closed)
            return
        if inline:
            try:
                self._run([(work, done)])
            finally:
                with self._cond:
                    self._writing = False
                    if self._queue:
                        self._cond.notify()

    def run(self, work: Callable[[], T]) -> T:
        """Run ``work`` inside a store transaction shared with other callers; return its result.

        Raises:
            Exception: Whatever ``work`` raised, or the store's error.
        """
        waiter = _Waiter()
        self.submit(work, waiter)
        waiter.event.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.value  # type: ignore[no-any-return]

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then refuse new work."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._writing or (not self._queue and not self._closed):
                    if not self._cond.wait(_IDLE_S) and not self._queue:
                        break
                if not self._queue:
                    self._thread = None
                    return
                batch, self._queue = self._queue, []
            self._run(batch)
            # Hold nothing of the batch (its callers' objects) while waiting for the next.
            del batch

    def _run(self, batch: list[tuple[Callable[[], Any], Done]]) -> None:
        outcomes: list[tuple[Done, Any, BaseException | None]] = []
        t0 = time.perf_counter()
        try:
            with self._lock, self._store.transact():
                for work, done in batch:
                    try:
                        outcomes.append((done, work(), None))
                    except Exception as exc:  # this caller's own failure; the others go on
                        outcomes.append((done, None, exc))
        except BaseException as exc:  # the transaction failed: nothing of the batch was written
            outcomes = [(done, None, exc) for _, done in batch]
        else:
            self.commit_seconds.observe(time.perf_counter() - t0)
        self.batches += 1
        self.units += len(batch)
        for done, value, error in outcomes:
            try:
                done(value, error)
            except Exception:
                logger.exception("a journal commit callback failed")
