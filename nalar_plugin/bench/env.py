"""What a workload's app and client see of one run: the trace, the deployment, the clock."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .deploy import Deployment
from .trace import Trace

__all__ = ["Env", "RequestRecord"]


@dataclass
class RequestRecord:
    """One request as the client saw it (wall-clock ``time.monotonic`` times).

    Attributes:
        request: Request id (a key of ``trace.critical_paths``).
        start: When the request was issued.
        end: When its answer came back.
        answer: What the app answered (compared across systems).
        error: The exception text if it failed.
    """

    request: str
    start: float
    end: float
    answer: Any = None
    error: str | None = None


@dataclass
class Env:
    """One system's run of one trace.

    Attributes:
        trace: The trace.
        dep: Engines, models, tools and the app's router.
        system: ``nalar``, ``langgraph`` or ``fcfs``.
        app: ``graph`` (the LangGraph app) or ``futures`` (the futures workflow).
        rt: The nalar Runtime, or ``None`` for the ``langgraph`` baseline.
        callbacks: What every run's ``config["callbacks"]`` carries (``[rt.callback()]`` under nalar).
    """

    trace: Trace
    dep: Deployment
    system: str
    app: str = "graph"
    rt: Any = None
    callbacks: list[Any] = field(default_factory=list)
    records: list[RequestRecord] = field(default_factory=list)
    on_record: Any = None  # called with each record (the progress bar)
    shared: dict[str, Any] = field(default_factory=dict)  # per-run objects an app makes once
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def time_scale(self) -> float:
        """Wall seconds per model second."""
        return self.dep.config.time_scale

    def config(self, thread_id: str, priority: float | None = None, **extra: Any) -> dict[str, Any]:
        """The run config of one LangGraph invocation: the thread, and nalar's callback if served by nalar.

        ``priority`` goes in as ``nalar_priority`` (higher runs first), the same for every
        system: LangGraph has no priorities across threads and ignores it.
        """
        cfg: dict[str, Any] = {"configurable": {"thread_id": thread_id}, **extra}
        if priority is not None:
            cfg["configurable"]["nalar_priority"] = priority
        if self.callbacks:
            cfg["callbacks"] = list(self.callbacks)
        return cfg

    def record(self, request: str, start: float, answer: Any = None, error: BaseException | None = None) -> None:
        """Record a finished (or failed) request that started at ``start``."""
        rec = RequestRecord(request, start, time.monotonic(), answer,
                            None if error is None else f"{type(error).__name__}: {error}")
        with self._lock:
            self.records.append(rec)
        if self.on_record is not None:
            self.on_record(rec)

    async def sleep_model(self, seconds: float) -> None:
        """Sleep ``seconds`` model seconds."""
        await asyncio.sleep(seconds * self.time_scale)
