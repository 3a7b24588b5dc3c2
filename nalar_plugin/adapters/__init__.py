"""Adapters that route LangChain and LangGraph calls through nalar.

* :meth:`Runtime.callback() <AdapterMixin.callback>` - a callback handler: add it
  to a run's ``config["callbacks"]`` and the run's tool and chat-model calls,
  nested ones included, run as nalar calls on the Dask cluster.
* :meth:`Runtime.middleware() <AdapterMixin.middleware>` - the same for
  ``langchain.agents.create_agent``.
* ``rt.wrap_tool_call`` / ``rt.awrap_tool_call`` - the same for ``ToolNode``.
* :meth:`Runtime.deploy_model() <AdapterMixin.deploy_model>` (or plain
  ``rt.deploy`` with chat models) - the replicas of a model as a component whose
  instance the controllers choose for each call.

How it works: the callback is the switch and the sensor (it marks the run and
records the run tree); wraps of LangChain's execution paths are the actuator
(:mod:`._seams`, :mod:`._stream`); callback events raised on a worker fire in
the caller (:mod:`._tunnel`). What travels to a worker, and what runs in the
caller's process instead, with an :class:`InProcessWarning`, is described in
:mod:`._parcel`.
"""

from __future__ import annotations

from typing import Any

from ._parcel import InProcessWarning, NotSendable
from .mixin import AdapterMixin

__all__ = ["AdapterMixin", "InProcessWarning", "NalarCallbackHandler", "NalarMiddleware", "NotSendable", "RunRecord"]

_LAZY = {
    "NalarCallbackHandler": ".callback",
    "NalarMiddleware": ".middleware",
    "RunRecord": "._runtree",
}


def __getattr__(name: str) -> Any:
    # LangChain is imported on first use: a Runtime that serves only stubs does not pay for it.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
