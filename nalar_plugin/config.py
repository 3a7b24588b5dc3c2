"""Configuration under the ``nalar`` key of :mod:`dask.config`.

Every setting can come from Dask's YAML files, from environment variables read
when Dask is imported (``DASK_NALAR__POLICY=las``, ``DASK_NALAR__WORKER_SLOTS=2048``),
from ``dask.config.set({"nalar.policy": "las"})``, or from keyword arguments to
:class:`~nalar_plugin.Runtime` (``policy="las"``), in rising precedence.

Settings:
    processes: Embedded cluster with worker processes (default ``False``: threads).
    n-workers: Workers of the embedded cluster (``None``: 1 with threads, 2 with processes).
    worker-slots: Dask ``nthreads`` per worker (default 1024). A call holds a slot
        while it runs, even when it only awaits I/O; the local controllers, not the
        slots, enforce each instance's capacity, so the slots only need to exceed
        the concurrency they admit. Threads are made lazily, so idle slots cost nothing.
    worker-saturation: ``distributed.scheduler.worker-saturation`` for the embedded
        scheduler (default ``inf``). Queueing happens in the local controllers, so the
        Dask scheduler should send every admitted task to a worker at once.
    policy: Name of the active policy (entry-point group ``nalar_plugin.policies``).
    tick-interval: Period of the global controller (default ``100ms``).
    dashboard: Start Dask's dashboard on 127.0.0.1 (default ``False``).
    state-dir: Directory of the managed state store (default ``.nalar/state``).
    memory-limit: Per-worker memory limit of the embedded cluster (default ``auto``).
    seed: Seed of the controllers' random choices (default 0).
    global-controller: Where the global controller runs: ``local`` (in this process),
        ``scheduler`` (a SchedulerPlugin shared by every driver of the cluster), or
        ``auto`` (default: ``scheduler`` when joining a cluster by address, else ``local``).
    retries: Times a call is retried after its worker dies (default 3).
    retry-backoff: First wait before a retry (default ``100ms``); it doubles each retry,
        up to ``retry-backoff-max`` (default ``5s``).
    state-allowed-types: Extra classes (``"module.Class"``) the state serde may rebuild.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask.config

from .errors import ConfigError

__all__ = ["DEFAULTS", "resolve"]

DEFAULTS: dict[str, Any] = {
    "processes": False,
    "n-workers": None,
    "worker-slots": 1024,
    "worker-saturation": "inf",
    "policy": "nalar",
    "tick-interval": "100ms",
    "dashboard": False,
    "state-dir": ".nalar/state",
    "memory-limit": "auto",
    "seed": 0,
    "global-controller": "auto",
    "retries": 3,
    "retry-backoff": "100ms",
    "retry-backoff-max": "5s",
    "state-allowed-types": [],
}

dask.config.update_defaults({"nalar": DEFAULTS})


def resolve(**overrides: Any) -> dict[str, Any]:
    """Return the effective ``nalar`` settings with ``overrides`` (``None`` = unset) on top.

    Raises:
        ConfigError: An unknown setting, or a value of the wrong kind.
    """
    cfg = {k.replace("_", "-"): v for k, v in dict(dask.config.get("nalar", default={}) or {}).items()}
    for key, val in overrides.items():
        if val is not None:
            cfg[key.replace("_", "-")] = val
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown nalar setting(s) {unknown}; known: {sorted(DEFAULTS)}")
    converters: dict[str, Callable[[Any], Any]] = {
        "tick-interval": _seconds,
        "worker-slots": int,
        "worker-saturation": float,
        "processes": _bool,
        "dashboard": _bool,
        "n-workers": lambda v: None if v is None else int(v),
        "seed": int,
    }
    for key, conv in converters.items():
        try:
            cfg[key] = conv(cfg[key])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad value for nalar.{key}: {cfg[key]!r} ({exc})") from exc
    if cfg["global-controller"] not in ("auto", "local", "scheduler"):
        raise ConfigError(f"nalar.global-controller must be auto, local or scheduler, got {cfg['global-controller']!r}")
    if cfg["tick-interval"] <= 0:
        raise ConfigError(f"nalar.tick-interval must be > 0, got {cfg['tick-interval']}")
    if cfg["worker-slots"] < 1:
        raise ConfigError(f"nalar.worker-slots must be >= 1, got {cfg['worker-slots']}")
    if cfg["n-workers"] is not None and cfg["n-workers"] < 1:
        raise ConfigError(f"nalar.n-workers must be >= 1, got {cfg['n-workers']}")
    return cfg


def _seconds(v: Any) -> float:
    from dask.utils import parse_timedelta

    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return float(parse_timedelta(v, default="seconds"))


def _bool(v: Any) -> bool:
    if isinstance(v, str):
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"not a boolean: {v!r}")
    return bool(v)
