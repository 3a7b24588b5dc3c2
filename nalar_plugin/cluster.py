"""The Dask cluster of a Runtime: an embedded ``LocalCluster``, or one reached by address.

Embedded in threads mode (the default), the scheduler and the workers live in
this process and talk ``inproc://``: no port is opened. With worker processes
the scheduler, the nannies and the workers listen on 127.0.0.1 only, and so do
Dask's HTTP servers (metrics, and the dashboard when asked for).

:class:`NalarAdaptive` is Dask's adaptive scaling sized for nalar's calls too:
``rt.cluster.adapt(Adaptive=NalarAdaptive, runtime=rt, minimum=1, maximum=4)``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import sys
import time
from collections.abc import Hashable
from typing import Any

import dask.config
from distributed import Client, LocalCluster
from distributed.deploy import Adaptive

from .errors import ClusterError, ConfigError, RuntimeStateError
from .hookspecs import hookimpl

__all__ = ["EMBEDDED_DASK", "NalarAdaptive", "check_main_guard", "close_cluster", "connect"]

logger = logging.getLogger(__name__)

_QUIET = ("distributed.scheduler", "distributed.core", "distributed.worker", "distributed.nanny")

# Dask's periodic work that an embedded cluster serving nalar's calls does not need
# (nalar runs no task per call): the workers' statistical profiler (every 10 ms),
# work stealing, and fast event-loop and memory monitors. Together they cost an idle
# process ~6% of a core; with these, ~0.6%. Only the embedded cluster is changed.
EMBEDDED_DASK: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.scheduler.work-stealing": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


def check_main_guard() -> None:
    """Refuse to start worker processes from a process that is itself a spawned child.

    Dask starts worker processes by *spawning* them: each child imports the
    script's ``__main__`` again. A script that makes a ``Runtime(processes=True)``
    at module level without ``if __name__ == "__main__":`` would then start a
    cluster inside every child, and Dask fails with "Nanny failed to start".
    """
    in_worker = multiprocessing.current_process().name.startswith("Dask Worker process")
    respawned = (multiprocessing.parent_process() is not None
                 and getattr(sys.modules.get("__main__"), "__name__", "") == "__mp_main__")
    if in_worker or respawned:
        raise RuntimeStateError(
            "Runtime(processes=True) was started while a worker process imported the main script: "
            "put the code that makes the Runtime under `if __name__ == \"__main__\":` (Dask starts "
            "worker processes by importing the main module again)"
        )


def connect(config: dict[str, Any], address: str | None, security: Any) -> tuple[Any, Any]:
    """Start the embedded cluster (or reach ``address``) and return ``(cluster, client)``.

    Raises:
        ClusterError: The cluster could not be started or reached.
        RuntimeStateError: Worker processes started without a main guard.
    """
    cluster = None
    try:
        if address is not None:
            return None, Client(address, security=security, set_as_default=False, timeout="30s")
        processes = bool(config["processes"])
        if processes:
            check_main_guard()
        n = config["n-workers"] or (2 if processes else 1)
        settings = {"distributed.scheduler.worker-saturation": config["worker-saturation"]}
        if config["embedded-dask-quiet"]:
            settings.update(EMBEDDED_DASK)
        with dask.config.set(settings):
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=config["worker-slots"],
                processes=processes,
                # Threads mode talks in-process (inproc://) and opens no port;
                # processes mode listens on loopback only.
                **({"host": "127.0.0.1", "scheduler_port": 0} if processes else {}),
                # Dask's HTTP servers (metrics, and the dashboard when asked for)
                # would otherwise bind the host's address; keep them on loopback.
                dashboard_address="127.0.0.1:0" if config["dashboard"] else None,
                scheduler_kwargs={"dashboard": config["dashboard"], "dashboard_address": "127.0.0.1:0"},
                worker_dashboard_address="127.0.0.1:0",
                security=security,
                memory_limit=config["memory-limit"],
            )
            return cluster, Client(cluster, set_as_default=False)
    except RuntimeStateError:
        raise
    except (OSError, RuntimeError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        hint = ""
        if address is None and config["processes"] and getattr(sys.modules.get("__main__"), "__file__", None):
            hint = (". If the script makes the Runtime at module level, put that code under "
                    "`if __name__ == \"__main__\":`: Dask starts worker processes by importing the script again")
        raise ClusterError(
            f"could not reach the Dask cluster at {address or 'the embedded LocalCluster'}: {exc}{hint}") from exc


def close_cluster(cluster: Any, client: Any) -> None:
    """Close the client and the embedded cluster, quietly."""
    # Closing an embedded cluster makes Dask log about connections and tasks it
    # drops; nothing is lost that anyone can still ask for.
    quiet = [logging.getLogger(n) for n in _QUIET]
    levels = [q.level for q in quiet]
    if cluster is not None:
        for q in quiet:
            q.setLevel(logging.CRITICAL)
    try:
        client.close()
    finally:
        try:
            if cluster is not None:
                cluster.close()
        finally:
            for q, lvl in zip(quiet, levels):
                q.setLevel(lvl)


class _Closing:
    """Stops an adaptive deployment when its Runtime closes (an observer plugin)."""

    def __init__(self, adaptive: NalarAdaptive) -> None:
        self._adaptive = adaptive

    @hookimpl
    def nalar_runtime_closing(self, runtime: Any) -> None:
        if runtime is self._adaptive.runtime:
            self._adaptive.stop(reason="nalar-runtime-closing")


class NalarAdaptive(Adaptive):
    """Dask's adaptive scaling, sized for the calls nalar holds as well as for Dask's tasks.

    Use it through the cluster: ``cluster.adapt(Adaptive=NalarAdaptive, runtime=rt,
    minimum=1, maximum=4, interval="500ms")`` (``cluster.adapt`` passes its keyword
    arguments here). Dask cannot see nalar's backlog: calls wait in the driver's local
    controllers, not in the Dask scheduler, and admitted calls run in nalar's executor
    on the workers, not as Dask tasks. So :meth:`target` is the larger of Dask's own
    target and :meth:`need`, the workers nalar's calls need:

    - the queued and in-flight calls of the components whose calls run on any worker
      (function and tool components, endpoint components; each capped by what its
      ``max_instances`` could run at once), ``worker_slots`` calls per worker;
    - the workers that host instances of factory components, plus one per
      instance still *planned* (a ``Provision`` the ``autoscale`` policy made when
      every worker already hosted one of the component's instances).

    Each adaptive interval it also refreshes nalar's view of the workers and gives
    planned instances a new worker (one hosting none of their component), so when
    the cluster grows a factory component gets its new instance there and the calls
    of function components spread onto the new workers (the dispatcher picks the
    worker with the fewest calls in flight).

    **Scaling down** loses no call. The workers to close are those hosting the fewest
    nalar instances, then the latest to join. Before Dask retires them, they get
    no new call that another worker could run; an instance of a factory component
    still hosted there is made again on a worker that stays (once the new one is
    ready the old one drains: its queued calls go back to the component's queue, its
    admitted calls finish); then the retirement waits, up to ``drain_timeout``, for
    their calls to finish. A function call still running on a worker when it goes is
    retried elsewhere by nalar's retry path (``nalar.retries``).

    Limits: the need counts a call as one worker slot, so ``async`` bodies (which
    hold no slot) are over-counted; hosted objects are not spread over new workers
    unless the ``autoscale`` policy (or ``rt.add_instance``) asks for instances.

    Args:
        cluster: The Dask cluster (``cluster.adapt`` passes it).
        runtime: The :class:`~nalar_plugin.Runtime` whose calls the cluster serves.
        worker_slots: Calls one worker runs at once (default: the Runtime's
            ``nalar.worker-slots``, which the embedded cluster's workers have as threads).
        drain_timeout: Seconds a retiring worker's calls get to finish.
        **kwargs: Dask's :class:`~distributed.deploy.Adaptive` arguments (``interval``,
            ``minimum``, ``maximum``, ``wait_count``, ``target_duration``, ...).

    Raises:
        ConfigError: ``worker_slots`` below 1 or a negative ``drain_timeout``.
    """

    def __init__(self, cluster: Any = None, runtime: Any = None, worker_slots: int | None = None,
                 drain_timeout: float = 30.0, **kwargs: Any) -> None:
        if runtime is None:
            raise ConfigError("NalarAdaptive needs the Runtime: cluster.adapt(Adaptive=NalarAdaptive, runtime=rt, ...)")
        self.runtime = runtime
        self.worker_slots = int(worker_slots if worker_slots is not None else runtime.config["worker-slots"])
        if self.worker_slots < 1:
            raise ConfigError(f"NalarAdaptive: worker_slots must be >= 1, got {worker_slots!r}")
        if drain_timeout < 0:
            raise ConfigError(f"NalarAdaptive: drain_timeout must be >= 0, got {drain_timeout!r}")
        self.drain_timeout = float(drain_timeout)
        self.last_need = 0  # what :meth:`need` said at the latest interval
        super().__init__(cluster, **kwargs)
        runtime.provisioner.can_grow = self._can_grow
        runtime.register_plugin(_Closing(self), name=f"nalar-adaptive-{id(self)}")

    def _can_grow(self) -> bool:
        """Whether a new worker may still come (a planned instance can wait for it)."""
        return self.state in ("starting", "running") and len(self.plan) < self.maximum

    def need(self) -> int:
        """The workers nalar's queued, in-flight and hosted work needs now (see the class docstring)."""
        rt = self.runtime
        snap = rt.plane.snapshot()
        components = rt.components
        calls = 0
        for name, comp in snap.components.items():
            if comp.inline or components.is_factory(name):
                continue  # run in their callers, or pinned to the workers hosting their objects
            load = comp.load
            caps = [s.capacity for s in comp.instances.values()]
            if comp.max_instances is not None and caps and all(c is not None for c in caps):
                load = min(load, comp.max_instances * max(c or 0 for c in caps))
            calls += load
        hosting = [w for w in components.hosting() if w not in rt.dispatcher.retiring()]
        return max(math.ceil(calls / self.worker_slots), len(hosting) + len(components.planned()))

    def _observe(self) -> int:
        rt = self.runtime
        rt.dispatcher.refresh()
        rt.provisioner.place_planned()
        self.last_need = self.need()
        return self.last_need

    async def target(self) -> int:
        """The larger of Dask's target (its tasks and memory) and :meth:`need`."""
        dask_target = await super().target()
        need = await asyncio.get_running_loop().run_in_executor(None, self._observe)
        return max(int(dask_target), need)

    def _ranked(self) -> list[tuple[Hashable, str]]:
        """Every worker as (name, address), the cheapest to close first.

        Fewest hosted instances first, then the latest to join: a stable order, so the
        same workers are suggested tick after tick (Dask closes a worker only once it
        has been suggested ``wait_count`` times in a row).
        """
        workers = list(dict(self.cluster.scheduler_info.get("workers", {})).items())
        hosting = self.runtime.components.hosting()
        order = {a: i for i, (a, _) in enumerate(workers)}
        ranked = sorted(workers, key=lambda kv: (hosting.get(kv[0], 0), -order[kv[0]]))
        return [(w.get("name", a), a) for a, w in ranked]

    async def workers_to_close(self, target: int) -> list[Any]:
        """The workers (by name) to close to reach ``target``: hosting the fewest instances, then the newest."""
        ranked = await asyncio.get_running_loop().run_in_executor(None, self._ranked)
        return [name for name, _ in ranked[:max(0, len(ranked) - target)]]

    async def scale_down(self, workers: Any) -> None:
        """Drain ``workers`` of nalar's calls and instances, then let Dask retire them."""
        if not workers:
            return
        loop = asyncio.get_running_loop()
        names, addresses = await loop.run_in_executor(None, self._drain, list(workers))
        try:
            if names:
                await super().scale_down(names)
        except BaseException:
            self.runtime.dispatcher.unretire(addresses)
            raise

    def _drain(self, names: list[Any]) -> tuple[list[Any], list[str]]:
        """Move nalar's work off the workers named ``names``; return those that may go and their addresses."""
        rt = self.runtime
        by_name = {name: address for name, address in self._ranked()}
        leaving = {by_name[n]: n for n in names if n in by_name}
        staying = [w for w in rt.dispatcher.workers() if w not in leaving]
        rt.dispatcher.retire(list(leaving))
        deadline = time.monotonic() + self.drain_timeout
        for iid, worker in self._hosted_on(list(leaving)):
            if not self._rehost(iid, staying, deadline):
                logger.warning("instance %s cannot leave worker %s: it stays", iid, worker)
                leaving.pop(worker, None)
                rt.dispatcher.unretire([worker])
        while time.monotonic() < deadline:
            busy = rt.dispatcher.busy()
            if not any(busy.get(a, 0) for a in leaving) and not self._hosted_on(list(leaving), draining=True):
                break
            time.sleep(0.05)
        return list(leaving.values()), list(leaving)

    def _hosted_on(self, addresses: list[str], *, draining: bool = False) -> list[tuple[str, str]]:
        """Instances hosted on ``addresses``: (instance, worker); with ``draining`` those still draining too."""
        out = []
        for iid, ctl in list(self.runtime.plane.instances.items()):
            worker = getattr(ctl.address, "worker", None)
            if worker in addresses and (draining or not ctl.draining) and isinstance(worker, str):
                out.append((iid, worker))
        return out

    def _rehost(self, instance: str, staying: list[str], deadline: float) -> bool:
        """Make ``instance`` again on a worker in ``staying`` (make before break), then drain it."""
        rt = self.runtime
        ctl = rt.plane.instances.get(instance)
        if ctl is None:
            return True
        component = ctl.component
        if not staying:
            return False
        try:
            new = rt.components.add_instance(component, worker=rt.components.least_hosting(component, staying))
        except ConfigError:  # at its max_instances: the others take its calls, if there are others
            new = None
        while new is not None and time.monotonic() < deadline:
            made = rt.plane.instances.get(new)
            if made is None or made.ready_at <= time.monotonic():
                break
            time.sleep(0.02)
        made_again = new is not None and new in rt.plane.instances
        if not made_again and len(rt.plane.components.get(component, [])) <= 1:
            return False
        rt.components.remove_instance(instance)
        return True
