"""The ``create_agent`` middleware (``langchain``, an optional dependency, is imported here only).

They are the same actuator as the callback, behind LangChain's official
interfaces: each turns the switch on for the call it wraps, and the
intercepted execution path (:mod:`.interception`) makes it a nalar call. Everything the agent or
the ToolNode does around the call (binding tools, injecting state, handling tool
errors, building the ``ToolMessage``) stays in the caller, as without nalar.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware

from .activation import Switch, awrap_with_switch, wrap_with_switch

__all__ = ["NalarMiddleware"]


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
