"""The switch: what marks a LangChain run as served by nalar.

A run is served by nalar when its callbacks carry a switch carrier (the
callback handler of :meth:`Runtime.callback`, or the worker-side tunnel of a
call that is already served), or when the middleware or a ToolNode hook turned
the switch on for the call it wraps (a context variable). The wrapped execution
paths (see :mod:`._seams`) look for a switch first and leave every other run
untouched.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SWITCH", "Switch", "SwitchCarrier", "find_switch", "runtime_of"]


@dataclass(frozen=True)
class Switch:
    """Which Runtime serves a run, and the run-wide call options.

    Attributes:
        token: The Runtime's token (resolves in the driver and on workers).
        session: Session of every call of the run (default: the ``thread_id``).
        priority: Default priority of the run's calls.
        deadline: Default absolute deadline (``time.time()`` seconds).
        options: Further options (``expected_s``, ``directives`` per component).
    """

    token: str
    session: str | None = None
    priority: float | None = None
    deadline: float | None = None
    options: dict[str, Any] = field(default_factory=dict, compare=False)


class SwitchCarrier:
    """Marker base of callback handlers that carry a :class:`Switch`."""

    nalar_switch: Switch | None = None


# Set by the middleware and the ToolNode hooks around the call they wrap.
SWITCH: contextvars.ContextVar[Switch | None] = contextvars.ContextVar("nalar_adapter_switch", default=None)


def _handlers(callbacks: Any) -> Iterable[Any]:
    if callbacks is None:
        return ()
    if isinstance(callbacks, (list, tuple)):
        return callbacks
    # A callback manager (or a run manager): its handlers include the inherited ones.
    return list(getattr(callbacks, "handlers", None) or ()) + list(getattr(callbacks, "inheritable_handlers", None) or ())


def find_switch(callbacks: Any) -> Switch | None:
    """Return the switch of a run from its callbacks, else from the context variable.

    Args:
        callbacks: A list of handlers, a callback manager, a run manager or ``None``.

    Returns:
        The switch, or ``None`` when the run is not served by nalar.
    """
    for handler in _handlers(callbacks):
        switch = getattr(handler, "nalar_switch", None)
        if isinstance(handler, SwitchCarrier) and switch is not None:
            return switch
    return SWITCH.get()


def runtime_of(switch: Switch) -> Any:
    """Return the Runtime (or, in a worker process, the worker runtime) of ``switch``.

    Inside a running call the task's runtime wins: nested calls made by a
    worker process go through its :class:`~nalar_plugin._task.WorkerRuntime`.
    """
    from .. import _task

    rt = _task.task_runtime.get()
    if rt is not None and getattr(rt, "token", None) == switch.token:
        return rt
    rt = _task.RUNTIMES.get(switch.token)
    if rt is not None:
        return rt
    return _task.WorkerRuntime.get(switch.token)
