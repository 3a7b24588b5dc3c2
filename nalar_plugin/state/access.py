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
import uuid
from collections.abc import Coroutine
from typing import Any, Protocol

from nalar_plugin.errors import ClusterError, RuntimeStateError
from nalar_plugin.state.journal import Journal, JournalRecord
from nalar_plugin.state.retry import RetryPolicy
from nalar_plugin.state.serde import default_serde

__all__ = [
    "HANDLER",
    "LocalAccess",
    "SchedulerAccess",
    "StateAccess",
    "access_for",
    "claim_holder_alive",
    "parse_allowed_types",
]

HANDLER = "nalar_state"
"""The name of the scheduler handler that serves state requests."""


class StateAccess(Protocol):
    """What the task wrapper needs from the state layer (sync and async twins)."""

    @property
    def serde(self) -> Any: ...

    @property
    def retry(self) -> RetryPolicy: ...

    def new_owner(self) -> str: ...

    def begin(self, key: str, arg_hash: str, owner: str) -> tuple[str, JournalRecord | None]: ...

    async def abegin(self, key: str, arg_hash: str, owner: str) -> tuple[str, JournalRecord | None]: ...

    def release(self, key: str, arg_hash: str, owner: str) -> None: ...

    async def arelease(self, key: str, arg_hash: str, owner: str) -> None: ...

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


def claim_holder_alive(holder: str, workers: Any, served: Any) -> bool:
    """Whether the execution that holds a claim still runs.

    Args:
        holder: ``worker:{worker address}:{id}`` or ``local:{Runtime token}:{id}``.
        workers: The addresses of the cluster's live workers.
        served: The tokens of the live Runtimes.
    """
    kind, _, rest = holder.partition(":")
    if kind == "worker":
        return rest.rsplit(":", 1)[0] in workers
    if kind == "local":
        return rest.split(":", 1)[0] in served
    return False


class LocalAccess:
    """Direct access to a Runtime's journal in this process.

    An execution here claims a call as ``local:{token}:{id}``. It releases the
    claim when it ends, so a claim with this Runtime's token is alive; one with
    another token was left by a process that died (or by another driver, whose
    executions this process cannot see; they are taken over).

    Args:
        journal: The Runtime's journal.
        retry: The Runtime's retry policy.
        token: The Runtime's token.
    """

    def __init__(self, journal: Journal, retry: RetryPolicy, token: str) -> None:
        self._journal = journal
        self._retry = retry
        self._token = token

    def new_owner(self) -> str:
        return f"local:{self._token}:{uuid.uuid4().hex}"

    def _alive(self, holder: str) -> bool:
        return claim_holder_alive(holder, (), (self._token,))

    def begin(self, key: str, arg_hash: str, owner: str) -> tuple[str, JournalRecord | None]:
        return self._journal.begin(key, arg_hash, owner, self._alive)

    async def abegin(self, key: str, arg_hash: str, owner: str) -> tuple[str, JournalRecord | None]:
        # SQLite may wait for another process's lock: keep it off the event loop.
        return await asyncio.to_thread(self.begin, key, arg_hash, owner)

    def release(self, key: str, arg_hash: str, owner: str) -> None:
        self._journal.release(key, arg_hash, owner)

    async def arelease(self, key: str, arg_hash: str, owner: str) -> None:
        await asyncio.to_thread(self._journal.release, key, arg_hash, owner)

    @property
    def serde(self) -> Any:
        return self._journal.serde

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

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

    An execution here claims a call as ``worker:{worker address}:{id}``; the
    scheduler knows which workers are alive.

    Args:
        token: The Runtime's token (the scheduler may serve several Runtimes).
        link: The rpc link to the scheduler.
        worker: This worker's address.
    """

    def __init__(self, token: str, link: _SchedulerLink, worker: str) -> None:
        self._token = token
        self._link = link
        self._worker = worker
        # The Runtime's settings (serde allowlist, retry policy) come with the
        # first lookup's reply, so a call costs the same round trips first or not.
        self._info: dict[str, Any] | None = None
        self._serde: Any = None
        self._retry = RetryPolicy()

    def _learn(self, info: dict[str, Any] | None) -> None:
        if info is not None and self._info is None:
            self._serde = default_serde(allowed_types=parse_allowed_types(info.get("allowed_types")))
            self._retry = RetryPolicy(**info["retry"])
            self._info = info

    def _ensure(self) -> None:
        if self._info is None:
            self._learn(self._link.call(request="info", token=self._token))

    @property
    def serde(self) -> Any:
        self._ensure()
        return self._serde

    @property
    def retry(self) -> RetryPolicy:
        self._ensure()
        return self._retry

    def new_owner(self) -> str:
        return f"worker:{self._worker}:{uuid.uuid4().hex}"

    def _begun(self, reply: dict[str, Any]) -> tuple[str, JournalRecord | None]:
        self._learn(reply.get("info"))
        found = reply.get("record")
        return str(reply["state"]), None if found is None else JournalRecord.from_wire(found)

    def begin(self, key: str, arg_hash: str, owner: str) -> tuple[str, JournalRecord | None]:
        return self._begun(self._link.call(
            request="begin", token=self._token, key=key, arg_hash=arg_hash, owner=owner, info=self._info is None))

    async def abegin(self, key: str, arg_hash: str, owner: str) -> tuple[str, JournalRecord | None]:
        return self._begun(await self._link.acall(
            request="begin", token=self._token, key=key, arg_hash=arg_hash, owner=owner, info=self._info is None))

    def release(self, key: str, arg_hash: str, owner: str) -> None:
        self._link.call(request="release-claim", token=self._token, key=key, arg_hash=arg_hash, owner=owner)

    async def arelease(self, key: str, arg_hash: str, owner: str) -> None:
        await self._link.acall(request="release-claim", token=self._token, key=key, arg_hash=arg_hash, owner=owner)

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
        return LocalAccess(rt.journal, rt.retry_policy, token)
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
        access = _ACCESS[token] = SchedulerAccess(token, link, worker.address)
        return access
