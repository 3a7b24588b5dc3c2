"""The scheduler side of remote state: a ``SchedulerPlugin`` that serves the store.

A Runtime whose calls may run in other processes registers one
:class:`StatePlugin` with ``client.register_plugin``. In the scheduler's process
the plugin opens the Runtime's state directory and adds one handler,
``nalar_state``, that workers call over their ordinary connection to the
scheduler (:class:`~nalar_plugin.state.access.SchedulerAccess`). The handler
runs each store operation in a small thread pool, so a lock held by another
process never stalls the scheduler's event loop.

So the state directory must be reachable *by the scheduler and the driver*
(one host, or a shared file system); workers need nothing. A scheduler may
serve several Runtimes: requests name the Runtime by its token.

The plugin also sets the scheduler's ``allowed_failures`` to 0 while it serves
a Runtime: a task whose worker dies then fails at once with ``KilledWorker``
instead of being re-run silently by Dask, and nalar retries it under the
journal with its own limit and backoff and a new ``context.attempt``. The
previous value is restored when the last Runtime leaves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from nalar_plugin.errors import StateError
from nalar_plugin.state.access import HANDLER, claim_holder_alive, parse_allowed_types
from nalar_plugin.state.journal import Journal
from nalar_plugin.state.serde import default_serde
from nalar_plugin.state.store import MARKER_NAME, Store

__all__ = ["StatePlugin", "identity_key", "plugin_name"]

logger = logging.getLogger(__name__)


@dataclass
class _Served:
    journal: Journal
    retry: dict[str, Any]
    allowed_types: list[str]
    scheduler: Any


_SERVED: dict[str, _Served] = {}
_LOCK = threading.Lock()
_EXECUTOR: concurrent.futures.ThreadPoolExecutor | None = None
_SAVED_ALLOWED_FAILURES: dict[int, int] = {}  # id(scheduler) -> its value before nalar


def identity_key(token: str) -> str:
    """The key a Runtime writes in its store so the scheduler can check it opened the same one."""
    return f"runtime:{token}"


def plugin_name(token: str) -> str:
    """The plugin name under which the Runtime ``token`` registers."""
    return f"nalar-state-{token}"


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _EXECUTOR
    with _LOCK:
        if _EXECUTOR is None:
            # Waiting callers share the journal's group commits; more of them, bigger batches.
            _EXECUTOR = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="nalar-state")
        return _EXECUTOR


class StatePlugin(SchedulerPlugin):
    """Serve one Runtime's journal and managed state to the workers.

    Args:
        token: The Runtime's token.
        path: The state directory, as the scheduler's process sees it.
        retry: The Runtime's retry policy (``RetryPolicy.to_dict()``), for
            nested calls made from worker processes.
        allowed_types: Extra classes the serde may rebuild (``module.Class``).
    """

    def __init__(self, token: str, path: str, retry: dict[str, Any], allowed_types: list[str]) -> None:
        self.token = token
        self.path = path
        self.retry = dict(retry)
        self.allowed_types = list(allowed_types)
        self.name = plugin_name(token)

    async def start(self, scheduler: Any) -> None:
        """Open the store, add the handler, take over worker-loss retries."""
        # The scheduler's process opens the directory itself, even when it is
        # the driver's process: a second connection is cheap, and the plugin
        # then works the same on every kind of cluster.
        loop = asyncio.get_running_loop()
        store = await loop.run_in_executor(_executor(), self._open)
        with _LOCK:
            _SERVED[self.token] = _Served(Journal(store), self.retry, self.allowed_types, scheduler)
            _SAVED_ALLOWED_FAILURES.setdefault(id(scheduler), scheduler.allowed_failures)
        scheduler.handlers[HANDLER] = _handle
        scheduler.allowed_failures = 0

    def _open(self) -> Store:
        """Open the driver's state directory, and prove it is the same one.

        Raises:
            StateError: The scheduler's host has no such directory, or another
                one at that path (the driver and the scheduler share no file system).
        """
        if not (Path(self.path) / MARKER_NAME).is_file():
            raise StateError(
                f"the Dask scheduler cannot see the Runtime's state directory {self.path!r}; it must be "
                "on the scheduler's host (or a file system the driver and the scheduler share)"
            )
        store = Store(self.path, serde=default_serde(allowed_types=parse_allowed_types(self.allowed_types)))
        if store.get_bytes(identity_key(self.token)) is None:
            store.close()
            raise StateError(
                f"the Dask scheduler sees another directory at {self.path!r} than the Runtime does "
                "(no shared file system?); put the state directory where both can reach it"
            )
        return store

    async def close(self) -> None:
        """Release the store when the scheduler closes."""
        release(self.token)


def release(token: str) -> None:
    """Stop serving ``token`` and close the store the plugin opened for it.

    When no Runtime is served any more, the scheduler's ``allowed_failures``
    gets back its value from before nalar.
    """
    with _LOCK:
        served = _SERVED.pop(token, None)
        if served is None:
            return
        sid = id(served.scheduler)
        if not any(id(s.scheduler) == sid for s in _SERVED.values()):
            saved = _SAVED_ALLOWED_FAILURES.pop(sid, None)
            if saved is not None:
                served.scheduler.allowed_failures = saved
    served.journal.store.close()


async def _handle(request: str, token: str, **msg: Any) -> Any:
    """The ``nalar_state`` scheduler handler: one state request from a worker."""
    with _LOCK:
        served = _SERVED.get(token)
    if served is None:
        raise StateError(
            f"the Dask scheduler serves no nalar state for Runtime {token} "
            "(the Runtime closed, or it registered no state plugin on this cluster)"
        )
    journal = served.journal
    info = {"retry": served.retry, "allowed_types": served.allowed_types}
    if request == "info":
        return info
    loop = asyncio.get_running_loop()
    if request == "begin":
        # Snapshots taken on the event loop, where the scheduler changes them.
        workers, served_tokens = set(served.scheduler.workers), set(_SERVED)

        def alive(holder: str) -> bool:
            return claim_holder_alive(holder, workers, served_tokens)

        state, rec = await loop.run_in_executor(
            _executor(), journal.begin, msg["key"], msg["arg_hash"], msg["owner"], alive
        )
        return {"state": state, "record": None if rec is None else rec.to_wire(),
                "info": info if msg.get("info") else None}
    if request == "release-claim":
        await loop.run_in_executor(_executor(), journal.release, msg["key"], msg["arg_hash"], msg["owner"])
        return None
    if request == "commit":
        result = msg.pop("result", None)
        ops = msg.pop("ops", None)
        fields = {
            "key": msg["key"], "arg_hash": msg["arg_hash"], "session": msg["session"], "call_id": msg["call_id"],
            "attempt": int(msg["attempt"]),
            "result": None if result is None else (str(result[0]), bytes(result[1])),
            "ops": None if ops is None else bytes(ops),
        }
        rec, committed = await loop.run_in_executor(_executor(), lambda: journal.commit(**fields))
        return [None if rec is None else rec.to_wire(), committed]
    if request == "read":
        return await loop.run_in_executor(_executor(), journal.read_managed, msg["session"], msg["name"])
    if request == "release":
        release(token)
        return None
    raise StateError(f"unknown nalar state request {request!r}")
