"""How a running call reaches the journal and the managed state.

Two ways, chosen per process:

* :class:`LocalAccess` — the Runtime lives in this process (an embedded cluster
  in threads mode): the call uses the Runtime's store directly.
* :class:`SchedulerAccess` — any other process (worker processes of an
  embedded cluster, ``dask worker`` processes on other hosts): the call asks
  the Dask scheduler, where :class:`~nalar_plugin.state.plugin.StatePlugin`
  serves the Runtime's store. State travels over the cluster's own connections
  (with its TLS settings); a worker needs no path, no shared file system and no
  other service, and never opens the state directory.

Requests from a worker go through one background thread per process that owns
its own event loop and connections. Blocking calls (managed-state reads inside
a call body) therefore work both from task threads and from ``async def``
bodies running on the worker's event loop, without deadlocking that loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing.util
import threading
from collections.abc import Coroutine
from typing import Any, Protocol

from nalar_plugin.errors import ClusterError, RuntimeStateError
from nalar_plugin.state.journal import Journal, JournalRecord
from nalar_plugin.state.retry import RetryPolicy
from nalar_plugin.state.serde import default_serde

__all__ = ["HANDLER", "LocalAccess", "SchedulerAccess", "StateAccess", "access_for", "parse_allowed_types"]

HANDLER = "nalar_state"
"""The name of the scheduler handler that serves state requests."""


class StateAccess(Protocol):
    """What the task wrapper needs from the state layer (sync and async twins)."""

    @property
    def serde(self) -> Any: ...

    @property
    def retry(self) -> RetryPolicy: ...

    def lookup(self, key: str, arg_hash: str) -> JournalRecord | None: ...

    async def alookup(self, key: str, arg_hash: str) -> JournalRecord | None: ...

    def commit(self, **request: Any) -> tuple[JournalRecord | None, bool]: ...

    async def acommit(self, **request: Any) -> tuple[JournalRecord | None, bool]: ...

    def read(self, session: str, name: str) -> bytes | None: ...


def parse_allowed_types(names: Any) -> list[tuple[str, ...]]:
    """Turn ``["pkg.mod.Class", "pkg.mod:Class"]`` into the serde's ``(module, name)`` pairs.

    Raises:
        ConfigError: A name has no module part.
    """
    from nalar_plugin.errors import ConfigError

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


class LocalAccess:
    """Direct access to a Runtime's journal in this process.

    Args:
        journal: The Runtime's journal.
        retry: The Runtime's retry policy.
    """

    def __init__(self, journal: Journal, retry: RetryPolicy) -> None:
        self._journal = journal
        self._retry = retry

    @property
    def serde(self) -> Any:
        return self._journal.serde

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

    def lookup(self, key: str, arg_hash: str) -> JournalRecord | None:
        return self._journal.lookup(key, arg_hash)

    async def alookup(self, key: str, arg_hash: str) -> JournalRecord | None:
        # SQLite may wait for another process's lock: keep it off the event loop.
        return await asyncio.to_thread(self._journal.lookup, key, arg_hash)

    def commit(self, **request: Any) -> tuple[JournalRecord | None, bool]:
        return self._journal.commit(**request)

    async def acommit(self, **request: Any) -> tuple[JournalRecord | None, bool]:
        return await asyncio.to_thread(lambda: self._journal.commit(**request))

    def read(self, session: str, name: str) -> bytes | None:
        return self._journal.read_managed(session, name)


class _SchedulerLink:
    """One event loop thread in this process with an rpc to the scheduler."""

    def __init__(self, address: str, connection_args: dict[str, Any]) -> None:
        from distributed.core import rpc

        self.address = address
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nalar-state-link", daemon=True)
        self._thread.start()
        self._rpc = rpc(address, connection_args=connection_args)
        # Worker processes are multiprocessing children, which skip atexit; this
        # runs in both, and closes the connections before the loop thread dies.
        multiprocessing.util.Finalize(self, self.close, exitpriority=10)

    def close(self) -> None:
        """Close the connections to the scheduler (at process exit)."""
        if self._loop.is_closed() or not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._rpc.close_rpc(), self._loop).result(timeout=2)
        except Exception:  # at exit, a scheduler already gone is no error
            pass

    async def _send(self, msg: dict[str, Any]) -> Any:
        return await getattr(self._rpc, HANDLER)(**msg)

    def _submit(self, msg: dict[str, Any]) -> concurrent.futures.Future[Any]:
        coro: Coroutine[Any, Any, Any] = self._send(msg)
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, **msg: Any) -> Any:
        """Send one request and wait for the reply (from any thread)."""
        try:
            return self._submit(msg).result()
        except (OSError, EOFError) as exc:
            raise ClusterError(f"lost the Dask scheduler at {self.address} while asking for state: {exc}") from exc

    async def acall(self, **msg: Any) -> Any:
        """Send one request from an event loop other than the link's own."""
        try:
            return await asyncio.wrap_future(self._submit(msg))
        except (OSError, EOFError) as exc:
            raise ClusterError(f"lost the Dask scheduler at {self.address} while asking for state: {exc}") from exc


class SchedulerAccess:
    """Access to a Runtime's state through the scheduler's nalar handler.

    Args:
        token: The Runtime's token (the scheduler may serve several Runtimes).
        link: The rpc link to the scheduler.
    """

    def __init__(self, token: str, link: _SchedulerLink) -> None:
        self._token = token
        self._link = link
        info = link.call(request="info", token=token)
        self._serde = default_serde(allowed_types=parse_allowed_types(info.get("allowed_types")))
        self._retry = RetryPolicy(**info["retry"])

    @property
    def serde(self) -> Any:
        return self._serde

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

    def lookup(self, key: str, arg_hash: str) -> JournalRecord | None:
        reply = self._link.call(request="lookup", token=self._token, key=key, arg_hash=arg_hash)
        return None if reply is None else JournalRecord.from_wire(reply)

    async def alookup(self, key: str, arg_hash: str) -> JournalRecord | None:
        reply = await self._link.acall(request="lookup", token=self._token, key=key, arg_hash=arg_hash)
        return None if reply is None else JournalRecord.from_wire(reply)

    def commit(self, **request: Any) -> tuple[JournalRecord | None, bool]:
        return _from_commit(self._link.call(request="commit", token=self._token, **_wire(request)))

    async def acommit(self, **request: Any) -> tuple[JournalRecord | None, bool]:
        return _from_commit(await self._link.acall(request="commit", token=self._token, **_wire(request)))

    def read(self, session: str, name: str) -> bytes | None:
        reply = self._link.call(request="read", token=self._token, session=session, name=name)
        return None if reply is None else bytes(reply)


def _from_commit(reply: list[Any]) -> tuple[JournalRecord | None, bool]:
    fields, committed = reply
    return (None if fields is None else JournalRecord.from_wire(fields)), bool(committed)


def _wire(request: dict[str, Any]) -> dict[str, Any]:
    out = dict(request)
    if out.get("result") is not None:
        out["result"] = list(out["result"])
    return out


_LINKS: dict[str, _SchedulerLink] = {}
_ACCESS: dict[str, StateAccess] = {}
_LOCK = threading.Lock()


def access_for(token: str) -> StateAccess:
    """Return how calls of the Runtime ``token`` reach its state from this process.

    Raises:
        RuntimeStateError: Not in the Runtime's process and not in a Dask worker.
        StateError: The scheduler serves no state for ``token``.
    """
    from nalar_plugin import _task

    rt = _task.RUNTIMES.get(token)
    if rt is not None and getattr(rt, "journal", None) is not None:
        return LocalAccess(rt.journal, rt.retry_policy)
    with _LOCK:
        found = _ACCESS.get(token)
        if found is not None:
            return found
        try:
            from distributed import get_worker

            worker = get_worker()
        except ValueError as exc:
            raise RuntimeStateError(
                "a nalar call runs outside its Runtime's process and outside a Dask worker; "
                "its state is unreachable"
            ) from exc
        address = worker.scheduler.address
        link = _LINKS.get(address)
        if link is None:
            link = _LINKS[address] = _SchedulerLink(address, dict(worker.connection_args))
        access = _ACCESS[token] = SchedulerAccess(token, link)
        return access
