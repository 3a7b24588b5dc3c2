"""The ``create_agent`` middleware and the ``ToolNode`` hooks.

They are the same actuator as the callback, behind LangChain's official
interfaces: each turns the switch on for the call it wraps, and the wrapped
execution path (:mod:`._seams`) makes it a nalar call. Everything the agent or
the ToolNode does around the call (binding tools, injecting state, handling tool
errors, building the ``ToolMessage``) stays in the caller, as without nalar.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware

from ._switch import SWITCH, Switch

__all__ = ["NalarMiddleware", "awrap_with_switch", "wrap_with_switch"]


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


class NalarMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Route an agent's model calls and tool calls through nalar.

    Made by :meth:`nalar_plugin.Runtime.middleware`; pass it to
    ``create_agent(model, tools, middleware=[rt.middleware()])``. Place it last
    (innermost) so other middleware (retries, human in the loop) wrap the nalar
    call.

    Args:
        switch: The Runtime and the call options.
    """

    def __init__(self, switch: Switch) -> None:
        super().__init__()
        self.switch = switch

    @property
    def name(self) -> str:
        """The middleware's name in the agent graph."""
        return "NalarMiddleware"

    def wrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        """Make the model call a nalar call."""
        return wrap_with_switch(self.switch, request, handler)

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        """Make the model call a nalar call (async)."""
        return await awrap_with_switch(self.switch, request, handler)

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        """Make the tool call a nalar call."""
        return wrap_with_switch(self.switch, request, handler)

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        """Make the tool call a nalar call (async)."""
        return await awrap_with_switch(self.switch, request, handler)
