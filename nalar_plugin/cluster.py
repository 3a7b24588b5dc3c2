"""The Dask cluster of a Runtime: an embedded ``LocalCluster``, or one reached by address.

Embedded in threads mode (the default), the scheduler and the workers live in
this process and talk ``inproc://``: no port is opened. With worker processes
the scheduler, the nannies and the workers listen on 127.0.0.1 only, and so do
Dask's HTTP servers (metrics, and the dashboard when asked for).
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from typing import Any

import dask.config
from distributed import Client, LocalCluster

from .errors import ClusterError, RuntimeStateError

__all__ = ["EMBEDDED_DASK", "check_main_guard", "close_cluster", "connect"]

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
