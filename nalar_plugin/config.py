"""Configuration under the ``nalar`` key of :mod:`dask.config`.

Every setting can come from Dask's YAML files, from environment variables read
when Dask is imported (``DASK_NALAR__POLICY=las``, ``DASK_NALAR__WORKER_SLOTS=2048``),
from ``dask.config.set({"nalar.policy": "las"})``, or from keyword arguments to
:class:`~nalar_plugin.Runtime` (``policy="las"``), in rising precedence.

Settings:
    processes: Embedded cluster with worker processes (default ``False``: threads).
    n-workers: Workers of the embedded cluster (``None``: 1 with threads, 2 with processes).
    worker-slots: Synchronous call bodies one worker runs at once (default 1024), and
        Dask ``nthreads`` of embedded workers. ``async def`` bodies hold no slot (they
        run on the executor's event loop); a body blocked on a future lends its slot.
        Threads are made when needed and exit when idle, so idle slots cost nothing.
    worker-threads-max: Threads of one worker's call pool at most, bodies blocked on
        futures included (default 2048): the bound on threads, whatever the load.
    worker-thread-idle: An idle thread of a call pool exits after this long (default ``10s``).
    embedded-dask-quiet: Start the embedded cluster without Dask's periodic work that
        nalar does not need (worker profiler, work stealing, fast monitors; see
        :data:`nalar_plugin.cluster.EMBEDDED_DASK`), which costs an idle process ~6% of a
        core (default ``True``).
    worker-saturation: ``distributed.scheduler.worker-saturation`` for the embedded
        scheduler (default ``inf``), for tasks users submit to Dask themselves.
    policy: Name of the active policy (entry-point group ``nalar_plugin.policies``).
    tick-interval: Period of the global controller (default ``100ms``).
    dashboard: Start Dask's dashboard on 127.0.0.1, with nalar's page at ``/nalar``
        (``Runtime.dashboard_link``; default ``False``).
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
    journal-max-age: Seconds (or ``"7d"``) a journal record lives after its commit
        (default ``7d``; ``None`` keeps records for ever).
    journal-max-sessions: Sessions the journal keeps; the oldest idle ones beyond it are
        forgotten, journal and managed state (default ``None``: no bound).
    journal-gc-interval: Period of the sweep that applies both rules (default ``60s``).
    session-cache: Idle sessions whose metrics and affinity the local controllers keep
        (default 4096).
    graph-sessions: Sessions whose call graph ``rt.graph`` keeps (default 1000).
    close-timeout: How long ``rt.close()`` waits for running calls to finish and commit
        (default ``30s``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import dask.config
from dask.utils import parse_timedelta

from .errors import ConfigError

__all__ = ["DEFAULTS", "call_options", "checked_options", "resolve"]

DEFAULTS: dict[str, Any] = {
    "processes": False,
    "n-workers": None,
    "worker-slots": 1024,
    "worker-saturation": "inf",
    "embedded-dask-quiet": True,
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
    "worker-threads-max": 2048,
    "worker-thread-idle": "10s",
    "journal-max-age": "7d",
    "journal-max-sessions": None,
    "journal-gc-interval": "60s",
    "session-cache": 4096,
    "graph-sessions": 1000,
    "close-timeout": "30s",
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
        "embedded-dask-quiet": _bool,
        "dashboard": _bool,
        "n-workers": lambda v: None if v is None else int(v),
        "seed": int,
        "worker-threads-max": int,
        "worker-thread-idle": _seconds,
        "journal-max-sessions": lambda v: None if v is None else int(v),
        "journal-max-age": lambda v: None if v is None else _seconds(v),
        "journal-gc-interval": lambda v: None if v is None else _seconds(v),
        "session-cache": int,
        "graph-sessions": int,
        "close-timeout": _seconds,
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
    for key in ("worker-threads-max", "session-cache", "graph-sessions"):
        if cfg[key] < 1:
            raise ConfigError(f"nalar.{key} must be >= 1, got {cfg[key]}")
    if cfg["journal-max-sessions"] is not None and cfg["journal-max-sessions"] < 1:
        raise ConfigError(f"nalar.journal-max-sessions must be >= 1 or None, got {cfg['journal-max-sessions']}")
    for key in ("journal-max-age", "journal-gc-interval"):
        if cfg[key] is not None and cfg[key] <= 0:
            raise ConfigError(f"nalar.{key} must be > 0 or None, got {cfg[key]}")
    return cfg


_CALL_OPTIONS = ("priority", "deadline", "expected_s")


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if math.isnan(out) or math.isinf(out):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return out


def call_options(**given: Any) -> dict[str, Any]:
    """Check a call's ``priority``, ``deadline`` (``time.time()`` seconds) and ``expected_s``.

    Returns:
        The options that were given (``None`` means not given), as floats.

    Raises:
        ConfigError: One is not a finite number (``expected_s`` must also be >= 0).
    """
    out: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        out[name] = _finite(name, value)
        if name == "expected_s" and out[name] < 0:
            raise ConfigError(f"expected_s must be >= 0, got {value!r}")
    return out


def checked_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``priority``, ``deadline`` and ``expected_s`` checked (see :func:`call_options`)."""
    if not options:
        return options
    given = {k: options[k] for k in _CALL_OPTIONS if options.get(k) is not None}
    if not given:
        return options
    return {**options, **call_options(**given)}


def _seconds(v: Any) -> float:
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
