"""nalar-plugin: serve LangChain/LangGraph agent workflows as futures on Dask.

After Nalar (arXiv 2601.05109): stubs turn agent and tool calls into futures
with context, a two-level controller schedules them, and a managed state layer
keeps sessions safe.
"""

from __future__ import annotations

from .context import CallContext, active_runtime, current_call, current_session
from .errors import AdmissionRejectedError, NalarError
from .future import Future, value
from .graph import SessionGraph
from .hookspecs import hookimpl
from .runtime import Runtime
from .scheduler.policies import Policy
from .state import ManagedDict, ManagedList, managed_dict, managed_list
from .stubs import agent, tool

__all__ = [
    "AdmissionRejectedError",
    "CallContext",
    "Future",
    "ManagedDict",
    "ManagedList",
    "NalarError",
    "Policy",
    "Runtime",
    "SessionGraph",
    "active_runtime",
    "agent",
    "current_call",
    "current_session",
    "hookimpl",
    "managed_dict",
    "managed_list",
    "tool",
    "value",
]

__version__ = "0.1.0"
