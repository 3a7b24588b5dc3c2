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
    request-gap: A session idle for no longer than this between two calls is still in one
        request, and keeps that request's age in the queues: among calls of equal priority
        the older request goes first (default ``500ms``).
    graph-sessions: Sessions whose call graph ``rt.graph`` keeps (default 1000).
    gc-freeze: Leave the objects tracked when the first Runtime opens (the cluster's,
        mostly) out of Python's full garbage-collection passes until the last one
        closes (:mod:`nalar_plugin.heap`; default ``True``).
    close-timeout: How long ``rt.close()`` waits for running calls to finish and commit
        (default ``30s``).
    rate-output-tokens: The output tokens a call of a component with a ``tpm`` limit is
        expected to produce when it gives no ``max_tokens`` (and a deployed model has none),
        reserved at admission and settled when it completes (default 256).

Re-allocation guard (the ``reallocate`` policy, and so ``nalar``; each is also a
constructor argument of :class:`~nalar_plugin.scheduler.reallocate.ReallocatePolicy`):
    move-cost: What moving an instance to another component costs, its warm-up there,
        when its provisioner does not declare it (default ``30s``, the simulated farm's).
        The ``autoscale`` policy waits as long between two changes to a component
        unless its ``cooldown_s`` says otherwise.
    move-gain: A move is made only when the queued work it would serve sooner is at least
        this many times the slot-seconds its warm-up costs (default 2.0: a move is a loan,
        and pays for its way back too).
    move-horizon: How long the arriving mix is taken to last when that gain is estimated,
        in move costs, from when the taking component's queueing was confirmed (default 3).
    move-hold-ticks: Ticks a move's conditions must hold in a row before it is made (default 20).
    move-backoff: No move back between two components within this many move costs of a
        move the other way (default 2).
    move-budget: Moves at most per budget window (default 3).
    move-budget-window: The window of the budget, in move costs (default 10).
    make-before-break: A moved instance keeps serving its old component until it is warm in
        the new one (the simulated farm's provisioners; default ``True``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import dask.config
from dask.utils import parse_timedelta

from .errors import ConfigError

__all__ = ["DEFAULTS", "ON_SLO", "call_options", "checked_options", "resolve", "slo_mode", "slo_seconds"]

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
    "request-gap": "500ms",
    "graph-sessions": 1000,
    "close-timeout": "30s",
    "gc-freeze": True,
    "rate-output-tokens": 256,
    "move-cost": "30s",
    "move-gain": 2.0,
    "move-horizon": 3.0,
    "move-hold-ticks": 20,
    "move-backoff": 2.0,
    "move-budget": 3,
    "move-budget-window": 10.0,
    "make-before-break": True,
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
        "request-gap": _seconds,
        "close-timeout": _seconds,
        "gc-freeze": _bool,
        "rate-output-tokens": int,
        "move-cost": _seconds,
        "move-gain": float,
        "move-horizon": float,
        "move-hold-ticks": int,
        "move-backoff": float,
        "move-budget": int,
        "move-budget-window": float,
        "make-before-break": _bool,
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
    for key in ("worker-threads-max", "session-cache", "graph-sessions", "rate-output-tokens"):
        if cfg[key] < 1:
            raise ConfigError(f"nalar.{key} must be >= 1, got {cfg[key]}")
    if cfg["journal-max-sessions"] is not None and cfg["journal-max-sessions"] < 1:
        raise ConfigError(f"nalar.journal-max-sessions must be >= 1 or None, got {cfg['journal-max-sessions']}")
    for key in ("move-cost", "move-gain", "move-horizon", "move-backoff", "move-budget-window"):
        if cfg[key] < 0:
            raise ConfigError(f"nalar.{key} must be >= 0, got {cfg[key]}")
    for key in ("move-hold-ticks", "move-budget"):
        if cfg[key] < 1:
            raise ConfigError(f"nalar.{key} must be >= 1, got {cfg[key]}")
    for key in ("journal-max-age", "journal-gc-interval"):
        if cfg[key] is not None and cfg[key] <= 0:
            raise ConfigError(f"nalar.{key} must be > 0 or None, got {cfg[key]}")
    return cfg


_CALL_OPTIONS = ("priority", "deadline", "expected_s", "on_slo")
ON_SLO = ("reject", "defer")  # what admission does with a call that would break its SLO


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if math.isnan(out) or math.isinf(out):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return out


def call_options(**given: Any) -> dict[str, Any]:
    """Check a call's ``priority``, ``deadline`` (``time.time()`` seconds), ``expected_s`` and ``on_slo``.

    Returns:
        The options that were given (``None`` means not given), as floats (``on_slo`` as its string).

    Raises:
        ConfigError: One is not a finite number (``expected_s`` must also be >= 0), or
            ``on_slo`` is neither ``"reject"`` nor ``"defer"``.
    """
    out: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        if name == "on_slo":
            out[name] = slo_mode(value)
            continue
        out[name] = _finite(name, value)
        if name == "expected_s" and out[name] < 0:
            raise ConfigError(f"expected_s must be >= 0, got {value!r}")
    return out


def slo_mode(value: Any) -> str:
    """Check an ``on_slo`` option: ``"reject"`` (fail fast) or ``"defer"`` (queue behind the others).

    Raises:
        ConfigError: Any other value.
    """
    if value not in ON_SLO:
        raise ConfigError(f"on_slo must be one of {list(ON_SLO)}, got {value!r}")
    return str(value)


def slo_seconds(value: Any) -> float | None:
    """Check an SLO (seconds, or a string such as ``"2s"``); ``None`` means no SLO.

    Raises:
        ConfigError: Not a duration > 0.
    """
    if value is None:
        return None
    try:
        out = _seconds(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"slo_s must be a number of seconds > 0, got {value!r}") from exc
    if not out > 0 or math.isinf(out):
        raise ConfigError(f"slo_s must be a number of seconds > 0, got {value!r}")
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
