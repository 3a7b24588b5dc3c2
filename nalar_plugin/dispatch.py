"""The dispatcher: which worker runs an admitted call, and the links that reach it.

The local controllers decide *which instance* serves a call and *when*; the
dispatcher decides *which Dask worker* runs its body: the worker a call is
pinned to (a hosted object's), else, among the workers that offer the call's
``resources``, the one with the fewest calls in flight. Calls that need
resources also hold them while they run, as Dask's own resource accounting
does: a call waits for a worker with enough free resources.

Workers come from the Dask scheduler (``scheduler_info``), refreshed by
:meth:`Dispatcher.refresh`; each gets a link (:mod:`nalar_plugin.links`). A
worker whose link breaks is dropped until the scheduler lists it again. A worker
about to be retired (adaptive scaling, :meth:`Dispatcher.retire`) gets no new call
that any other worker could run; calls pinned to it (its hosted objects') still go.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from .errors import ClusterError, UnsatisfiableResourcesError, WorkerLostError
from .execution import LOST, Job, Outcome
from .links import PLUGIN_NAME, InProcessLink, LinkHandlers, RemoteLink

__all__ = ["Dispatcher"]

logger = logging.getLogger(__name__)

_RETRY_CONNECT_S: Final = 2.0  # a worker whose link broke is not dialled again for this long
_NO_WORKER_S: Final = 60.0  # a call waits this long for a worker to (re)appear

Link = InProcessLink | RemoteLink
Done = Callable[[Outcome], None]


class Dispatcher:
    """Places admitted calls on workers and sends them there.

    Args:
        client: The Runtime's Dask client.
        cluster: The embedded cluster (``None`` when joined by address).
        in_process: Whether the embedded cluster's workers live in this process.
        token: The Runtime's token.
        allowed_types: The state serde's extra classes (sent to remote workers).
        handlers: What to do with requests from remote bodies.
        sink: Where nested calls of in-process bodies go.
        access: The managed-state access of in-process bodies.
    """

    def __init__(self, client: Any, cluster: Any, *, in_process: bool, token: str, allowed_types: list[str],
                 handlers: LinkHandlers, sink: Any, access: Callable[[], Any]) -> None:
        self._client = client
        self._cluster = cluster
        self._in_process = in_process
        self._token = token
        self._allowed_types = allowed_types
        self._handlers = handlers
        self._sink = sink
        self._access = access
        self._lock = threading.Lock()
        self._links: dict[str, Link] = {}
        self._resources: dict[str, dict[str, float]] = {}  # worker -> what it offers
        self._free: dict[str, dict[str, float]] = {}  # worker -> what is not held now
        self._waiting: collections.deque[tuple[Any, Job, Done, list[str] | None, float]] = collections.deque()
        self._broken: dict[str, float] = {}
        self._retiring: set[str] = set()
        self._closed = False
        self.refresh()

    # -- workers ---------------------------------------------------------------------
    def refresh(self) -> None:
        """Learn the cluster's workers now: open links to new ones, forget departed ones."""
        if self._closed:
            return
        try:
            info = self._client.scheduler_info(n_workers=-1).get("workers", {})
        except Exception as exc:  # the scheduler is gone; the links say what still works
            logger.debug("could not refresh the workers: %s", exc)
            return
        now = time.monotonic()
        opened: list[Link] = []
        with self._lock:
            for address, w in info.items():
                self._resources[address] = dict(w.get("resources") or {})
                self._free.setdefault(address, dict(self._resources[address]))
                if address in self._links or now < self._broken.get(address, 0.0):
                    continue
                link = self._open(address)
                if link is not None:
                    self._links[address] = link
                    opened.append(link)
            for address in [a for a in self._links if a not in info]:
                self._links.pop(address).close()
                self._resources.pop(address, None)
                self._free.pop(address, None)
            self._retiring &= set(info)
        self._expire()
        self._drain()

    def _open(self, address: str) -> Link | None:
        if self._in_process:
            worker = _local_worker(self._cluster, address)
            plugin = getattr(worker, "plugins", {}).get(PLUGIN_NAME) if worker is not None else None
            executor = getattr(plugin, "executor", None)
            if executor is None:
                return None
            return InProcessLink(executor, self._sink, self._access)
        loop = self._client.loop.asyncio_loop
        return RemoteLink(address, loop, dict(self._client.connection_args), self._token, self._allowed_types,
                          self._handlers, self._lost)

    def _lost(self, link: RemoteLink) -> None:
        with self._lock:
            if self._links.get(link.address) is link:
                del self._links[link.address]
            self._broken[link.address] = time.monotonic() + _RETRY_CONNECT_S

    def workers(self) -> list[str]:
        """Addresses of the workers with a live link."""
        with self._lock:
            return sorted(a for a, link in self._links.items() if link.alive)

    def wait_for_workers(self, timeout: float = 30.0) -> list[str]:
        """Refresh until at least one worker has a link.

        Raises:
            ClusterError: None within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.workers()
            if found:
                return found
            if time.monotonic() > deadline:
                raise ClusterError("the cluster has no workers to run calls on")
            time.sleep(0.05)
            self.refresh()

    def retire(self, addresses: list[str]) -> None:
        """Send no new unpinned call to these workers (they are about to leave the cluster)."""
        with self._lock:
            self._retiring.update(addresses)

    def unretire(self, addresses: list[str]) -> None:
        """Undo :meth:`retire` for workers that stay."""
        with self._lock:
            self._retiring.difference_update(addresses)

    def retiring(self) -> set[str]:
        """The workers marked by :meth:`retire` that the scheduler still lists."""
        with self._lock:
            return set(self._retiring)

    def offered(self) -> list[dict[str, float]]:
        """The resources each known worker offers."""
        with self._lock:
            return [dict(r) for r in self._resources.values()]

    def check_resources(self, needs: dict[str, float], component: str) -> None:
        """Refuse a call whose ``resources`` no worker offers (it would wait for ever).

        Raises:
            UnsatisfiableResourcesError: Naming the resource and what workers offer.
        """
        offered = self.offered()
        if any(all(res.get(k, 0) >= v for k, v in needs.items()) for res in offered):
            return
        self.refresh()
        offered = self.offered()
        if any(all(res.get(k, 0) >= v for k, v in needs.items()) for res in offered):
            return
        raise UnsatisfiableResourcesError(
            f"{component} needs resources {needs}, which no worker offers; "
            f"workers offer {offered or 'nothing (no workers)'}. "
            "Start workers with --resources (or LocalCluster(resources=...)), or change the directive."
        )

    # -- sending ------------------------------------------------------------------------
    def send(self, call: Any, job: Job, done: Done, workers: list[str] | None = None) -> None:
        """Run ``job`` on a worker; ``done(outcome)`` once, from the thread that learns it."""
        needs = dict(call.resources or {})
        with self._lock:
            link = self._pick(needs, workers)
            if link is None and self._can_wait(needs, workers):
                self._waiting.append((call, job, done, workers, time.monotonic()))
                return
        if link is None:
            where = f"worker {workers[0]}" if workers else "any worker"
            done(Outcome(LOST, WorkerLostError(f"{where} of this cluster is gone; call {job.ctx.call_id} cannot run")))
            return
        self._send(link, call, job, done, needs)

    def _can_wait(self, needs: dict[str, float], workers: list[str] | None) -> bool:
        # Caller holds the lock. Wait when some live worker could serve the call
        # later, or when no worker is linked just now (workers come and go).
        if workers is not None:
            return False  # a pinned worker that is gone does not come back
        if not self._links:
            return not self._closed
        return bool(needs) and any(all(r.get(k, 0) >= v for k, v in needs.items()) for r in self._resources.values())

    def _pick(self, needs: dict[str, float], workers: list[str] | None) -> Link | None:
        # Caller holds the lock. A retiring worker runs an unpinned call only when no
        # other worker can.
        best: Link | None = None
        best_leaving = True
        for address, link in self._links.items():
            if not link.alive or (workers is not None and address not in workers):
                continue
            if needs:
                free = self._free.get(address, {})
                if not all(free.get(k, 0) >= v for k, v in needs.items()):
                    continue
            leaving = workers is None and address in self._retiring
            if best is None or (best_leaving, best.in_flight) > (leaving, link.in_flight):
                best, best_leaving = link, leaving
        if best is not None:
            best.in_flight += 1  # under the lock, as its decrement
            if needs:
                free = self._free[best.address]
                for k, v in needs.items():
                    free[k] -= v
        return best

    def _send(self, link: Link, call: Any, job: Job, done: Done, needs: dict[str, float]) -> None:
        # ``_pick`` counted the call in ``link.in_flight``, under the lock.
        call.worker = link.address

        def finished(outcome: Outcome) -> None:
            with self._lock:
                link.in_flight -= 1
                if needs:
                    free = self._free.get(link.address)
                    if free is not None:
                        for k, v in needs.items():
                            free[k] += v
            if needs:
                self._drain()
            done(outcome)

        link.send(job, finished)

    def _expire(self) -> None:
        """Fail calls that waited too long for a worker."""
        now = time.monotonic()
        with self._lock:
            late = [w for w in self._waiting if now - w[4] > _NO_WORKER_S]
            for w in late:
                self._waiting.remove(w)
        for _, job, done, _, _ in late:
            done(Outcome(LOST, WorkerLostError(
                f"no worker could run call {job.ctx.call_id} within {_NO_WORKER_S:g} s")))

    def _drain(self) -> None:
        """Send waiting calls that can go now."""
        while True:
            with self._lock:
                if not self._waiting:
                    return
                call, job, done, workers, _ = self._waiting[0]
                link = self._pick(dict(call.resources or {}), workers)
                if link is None:
                    return
                self._waiting.popleft()
            self._send(link, call, job, done, dict(call.resources or {}))

    def cancel(self, call: Any) -> None:
        """Ask the worker running ``call`` to cancel its body."""
        with self._lock:
            for i, (waiting, *_) in enumerate(self._waiting):
                if waiting is call:
                    del self._waiting[i]
                    break
            link = self._links.get(call.worker or "")
        if link is not None:
            link.cancel(call.context.call_id)

    def drop_objects(self, worker: str, object_ids: list[str]) -> None:
        """Forget hosted objects on ``worker``."""
        with self._lock:
            link = self._links.get(worker)
        if link is not None:
            link.drop_objects(object_ids)

    def busy(self) -> dict[str, int]:
        """Calls in flight per worker."""
        with self._lock:
            return {a: link.in_flight for a, link in self._links.items()}

    def close(self) -> None:
        """Close every link; waiting calls are lost."""
        with self._lock:
            self._closed = True
            links, self._links = list(self._links.values()), {}
            waiting, self._waiting = list(self._waiting), collections.deque()
        for link in links:
            link.close()
        for _, job, done, _, _ in waiting:
            done(Outcome(LOST, WorkerLostError(f"the Runtime closed before call {job.ctx.call_id} found a worker")))


def _local_worker(cluster: Any, address: str) -> Any:
    for worker in getattr(cluster, "workers", {}).values():
        if getattr(worker, "address", None) == address:
            return worker
    return None
