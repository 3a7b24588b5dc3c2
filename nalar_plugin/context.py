"""The metadata a future carries, and the context variables that carry it.

A :class:`CallContext` is made when a stub is called. The session and the parent
call flow into nested calls through :mod:`contextvars`, so they follow both
threads (the task wrapper sets them on the worker) and asyncio tasks.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["CallContext", "current_call", "current_session", "new_id"]

_counter = itertools.count()
_prefix = uuid.uuid4().hex[:8]


def new_id(kind: str = "c") -> str:
    """Return a process-unique, cluster-unique id such as ``c-1a2b3c4d-17``."""
    return f"{kind}-{_prefix}{os.getpid() % 0xFFFF:04x}-{next(_counter)}"


@dataclass
class CallContext:
    """Context and dependency metadata of one call (the paper's future metadata).

    Attributes:
        session: The session the call belongs to (LangGraph's ``thread_id``).
        call_id: Unique id of the call; also the Dask key of its task.
        component: The component (agent or tool) the call targets.
        method: The method of the component, ``"__call__"`` for functions.
        parent: Call id of the call that made this one, ``None`` at top level.
        dependencies: Call ids whose futures were passed as arguments.
        creator: Component that created the future (``"driver"`` at top level).
        executor: Instance (and Dask worker) that runs the call, set on admission.
        consumers: Call ids that take this call's future as an input.
        priority: Higher runs first; ties run in arrival order.
        deadline: Absolute deadline (``time.time()`` seconds), or ``None``.
        attempt: 0 for the first execution, incremented on each retry.
        idempotency_key: Deterministic key of the call in the journal.
    """

    session: str
    call_id: str
    component: str
    method: str = "__call__"
    parent: str | None = None
    dependencies: list[str] = field(default_factory=list)
    creator: str = "driver"
    executor: str | None = None
    consumers: list[str] = field(default_factory=list)
    priority: float = 0.0
    deadline: float | None = None
    attempt: int = 0
    idempotency_key: str | None = None
    child_seq: int = field(default=0, repr=False, compare=False)  # nested calls made so far

    def to_dict(self) -> dict[str, Any]:
        """Return the context as plain JSON-able data."""
        return asdict(self)

    def override(self, **changes: Any) -> CallContext:
        """Return a copy with ``changes`` applied."""
        return replace(self, **changes)


_session_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nalar_session", default=None
)
_call_var: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "nalar_call", default=None
)
# Per-session defaults set by ``rt.session(...)``: priority, deadline.
_options_var: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "nalar_call_options", default=None
)


def current_session() -> str | None:
    """Return the session of the running call or ``rt.session`` block, if any."""
    session = _session_var.get()
    if session is not None:
        return session
    call = _call_var.get()
    return call.session if call is not None else None


def current_call() -> CallContext | None:
    """Return the context of the call whose body is running here, if any."""
    return _call_var.get()
