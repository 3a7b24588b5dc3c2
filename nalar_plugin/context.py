"""The metadata a future carries, the context variables that carry it, and the live runtimes.

A :class:`CallContext` is made when a call is made. The session and the parent
call flow into nested calls through :mod:`contextvars`, so they follow both
threads (the executor sets them where a body runs) and asyncio tasks.

Ids come from this module's own generator (a random prefix drawn once from the
operating system, then a counter): nalar never draws from ``uuid.uuid4`` or
``random``, which apps and tests patch or seed for determinism.

This module also keeps the one registry of live runtimes: the stack of open
Runtimes of this process (the newest serves stub calls made outside any call)
and, inside a running call, the context variable naming where nested calls go.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

__all__ = [
    "CallContext",
    "CallSink",
    "active_runtime",
    "current_call",
    "current_session",
    "enter_call",
    "exit_call",
    "id_mark",
    "made_since",
    "make_context",
    "new_id",
    "register_runtime",
    "unregister_runtime",
]

_counter = itertools.count()
_prefix = os.urandom(4).hex()


def new_id(kind: str = "c") -> str:
    """Return a process-unique, cluster-unique id such as ``c-1a2b3c4d00f1-17``."""
    return f"{kind}-{_prefix}{os.getpid() % 0xFFFF:04x}-{next(_counter)}"


def id_mark() -> int:
    """A mark in this process's id sequence: :func:`made_since` tells ids made after it."""
    return int(new_id("mark").rsplit("-", 1)[1])


def made_since(ident: str, mark: int, kind: str = "s") -> bool:
    """Whether ``ident`` was made by :func:`new_id` in this process after ``mark`` (nothing older knows it)."""
    head = f"{kind}-{_prefix}{os.getpid() % 0xFFFF:04x}-"
    if not ident.startswith(head):
        return False
    tail = ident[len(head):]
    return tail.isdigit() and int(tail) > mark


@dataclass
class CallContext:
    """Context and dependency metadata of one call (the paper's future metadata).

    Attributes:
        session: The session the call belongs to (LangGraph's ``thread_id``).
        call_id: Unique id of the call.
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


class CallSink(Protocol):
    """Where a stub call goes: a Runtime, or the link of a worker process to its driver."""

    def submit_call(self, stub: Any, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Any: ...

    def host_object(self, stub: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...


_session_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("nalar_session", default=None)
_call_var: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("nalar_call", default=None)
# Per-session defaults set by ``rt.session(...)``: priority, deadline, expected service.
_options_var: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("nalar_call_options", default=None)
# Inside a running call: where its nested calls go.
_sink_var: contextvars.ContextVar[CallSink | None] = contextvars.ContextVar("nalar_call_sink", default=None)

_RUNTIMES: list[CallSink] = []
_RUNTIMES_LOCK = threading.Lock()


def register_runtime(rt: CallSink) -> None:
    """Make ``rt`` the Runtime that stub calls made outside any call go to."""
    with _RUNTIMES_LOCK:
        _RUNTIMES.append(rt)


def unregister_runtime(rt: CallSink) -> None:
    """Forget ``rt`` (it closed)."""
    with _RUNTIMES_LOCK:
        if rt in _RUNTIMES:
            _RUNTIMES.remove(rt)


def active_runtime() -> Any:
    """Return where a stub call made here goes, or ``None`` (plain Python).

    Inside a running call that is the call's own sink (its Runtime, or in a
    worker process the link to its driver); elsewhere the newest open Runtime.
    """
    sink = _sink_var.get()
    if sink is not None:
        return sink
    with _RUNTIMES_LOCK:
        return _RUNTIMES[-1] if _RUNTIMES else None


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


def enter_call(ctx: CallContext, sink: CallSink | None) -> tuple[contextvars.Token[Any], ...]:
    """Set the context variables of a call body that starts running here."""
    return (_call_var.set(ctx), _session_var.set(ctx.session), _sink_var.set(sink))


def exit_call(tokens: tuple[contextvars.Token[Any], ...]) -> None:
    """Undo :func:`enter_call`."""
    _call_var.reset(tokens[0])
    _session_var.reset(tokens[1])
    _sink_var.reset(tokens[2])


def make_context(component: str, method: str, deps: list[Any], options: dict[str, Any],
                 sequence: Callable[[str], int] | None) -> CallContext:
    """Make the context of a new call from the ambient context and the call's options.

    Args:
        component: The component called.
        method: Its method.
        deps: The futures passed as inputs (objects with ``context`` and ``call_id``).
        options: ``session``, ``priority``, ``deadline``, ``idempotency_key``.
        sequence: Numbers the top-level calls of a scope (``scope -> 0, 1, ...``);
            a nested call counts on its running parent instead.

    Returns:
        The context.
    """
    parent = _call_var.get()
    defaults = _options_var.get() or {}
    # A top-level call that consumes futures joins their session, so a
    # workflow written as plain calls stays one session.
    session = (
        options.get("session")
        or _session_var.get()
        or (parent.session if parent else None)
        or (deps[0].context.session if deps else None)
        or new_id("s")
    )
    priority = options.get("priority", defaults.get("priority"))
    if priority is None:
        priority = parent.priority if parent is not None else 0.0
    deadline = options.get("deadline", defaults.get("deadline"))
    if deadline is None and parent is not None:
        deadline = parent.deadline
    key = options.get("idempotency_key")
    if key is None:
        # Deterministic: the same workflow making the same calls in the same
        # order (a replay, a resumed run) derives the same keys. A nested call
        # counts on the running parent's own context, which is a fresh copy in
        # every attempt, so a retried parent derives the same keys.
        if parent is not None:
            scope = parent.idempotency_key or parent.call_id
            with _SEQ_LOCK:
                seq, parent.child_seq = parent.child_seq, parent.child_seq + 1
        else:
            scope = f"{session}/root"
            seq = sequence(scope) if sequence is not None else 0
        key = f"{scope}/{component}.{method}/{seq}"
    return CallContext(
        session=session,
        call_id=new_id("c"),
        component=component,
        method=method,
        parent=parent.call_id if parent is not None else None,
        dependencies=list(dict.fromkeys([*(d.call_id for d in deps), *(options.get("dependencies") or ())])),
        creator=parent.component if parent is not None else "driver",
        priority=float(priority),
        deadline=deadline,
        idempotency_key=key,
    )


_SEQ_LOCK = threading.Lock()
