"""Group commit: many threads' small write transactions, run as one.

Every journaled call makes two write transactions (its claim, its commit). Run
one by one, thousands of concurrent calls queue on SQLite's write lock and pay
one commit each. Here callers queue their work instead; one writer thread runs
everything queued so far in a single store transaction and hands each caller
its own result or its own exception.

A unit of work must not write anything before it can fail on its own account
(it reads and checks first, then writes), so one caller's error never leaves
half of its writes in the shared transaction. An error of the store itself
(the commit failed) reaches every caller of the batch, none of whose writes
then exist.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

from nalar_plugin.state.store import Store

__all__ = ["GroupWriter"]

T = TypeVar("T")

_IDLE_S: Final = 5.0  # the writer thread leaves after this long without work


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
        self._queue: list[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = []
        self._thread: threading.Thread | None = None

    def run(self, work: Callable[[], T]) -> T:
        """Run ``work`` inside a store transaction shared with other callers; return its result.

        Raises:
            Exception: Whatever ``work`` raised, or the store's error.
        """
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._cond:
            self._queue.append((work, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="nalar-journal-writer", daemon=True)
                self._thread.start()
            self._cond.notify()
        return future.result()  # type: ignore[no-any-return]

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(_IDLE_S)
                if not self._queue:
                    self._thread = None
                    return
                batch, self._queue = self._queue, []
            self._run(batch)

    def _run(self, batch: list[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]) -> None:
        outcomes: list[tuple[concurrent.futures.Future[Any], Any, BaseException | None]] = []
        try:
            with self._lock, self._store.transact():
                for work, future in batch:
                    try:
                        outcomes.append((future, work(), None))
                    except Exception as exc:  # this caller's own failure; the others go on
                        outcomes.append((future, None, exc))
        except BaseException as exc:  # the transaction failed: nothing of the batch was written
            for _, future in batch:
                future.set_exception(exc)
            return
        for future, value, error in outcomes:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)
