"""What marks a LangChain run as served by nalar: the switch.

A run is served by nalar when its callbacks carry a switch carrier (the
callback handler of :meth:`Runtime.callback`), or when the middleware or a
ToolNode hook turned the switch on for the call it wraps (a context variable).
The intercepted execution paths (see :mod:`.interception`) look for a switch
first and leave every other run untouched.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SWITCH", "Switch", "SwitchCarrier", "awrap_with_switch", "find_switch", "wrap_with_switch"]


@dataclass(frozen=True)
class Switch:
    """Which adapter service serves a run, and the run-wide call options.

    Attributes:
        service: The Runtime's adapter service (never leaves this process).
        session: Session of every call of the run (default: the ``thread_id``).
        priority: Default priority of the run's calls.
        deadline: Default absolute deadline (``time.time()`` seconds).
        options: Further options (``expected_s``, ``directives`` per component, ``ship``).
    """

    service: Any = field(compare=False, repr=False)
    session: str | None = None
    priority: float | None = None
    deadline: float | None = None
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    def __reduce__(self) -> Any:
        # A switch does not travel: a body run in another process serves no calls.
        return (_no_switch, ())


def _no_switch() -> None:
    return None


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

    A switch whose Runtime closed is ignored: the run is served no more.

    Args:
        callbacks: A list of handlers, a callback manager, a run manager or ``None``.

    Returns:
        The switch, or ``None`` when the run is not served by nalar.
    """
    for handler in _handlers(callbacks):
        if isinstance(handler, SwitchCarrier):
            switch = handler.nalar_switch
            if switch is not None and switch.service is not None and not switch.service.closed:
                return switch
    switch = SWITCH.get()
    if switch is not None and (switch.service is None or switch.service.closed):
        return None
    return switch


def wrap_with_switch(switch: Switch, request: Any, execute: Callable[[Any], Any]) -> Any:
    """Run ``execute(request)`` with the switch on (ToolNode's ``wrap_tool_call`` shape)."""
    token = SWITCH.set(switch)
    try:
        return execute(request)
    finally:
        SWITCH.reset(token)


async def awrap_with_switch(switch: Switch, request: Any, execute: Callable[[Any], Awaitable[Any]]) -> Any:
    """Await ``execute(request)`` with the switch on (ToolNode's ``awrap_tool_call`` shape)."""
    token = SWITCH.set(switch)
    try:
        return await execute(request)
    finally:
        SWITCH.reset(token)
