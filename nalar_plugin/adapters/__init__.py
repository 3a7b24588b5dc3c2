"""Adapters that route LangChain and LangGraph calls through nalar.

* :meth:`Runtime.callback() <nalar_plugin.Runtime.callback>` - a callback
  handler: add it to a run's ``config["callbacks"]`` and the run's tool and
  chat-model calls, nested ones included, become nalar calls.
* :meth:`Runtime.middleware() <nalar_plugin.Runtime.middleware>` - the same for
  ``langchain.agents.create_agent``.
* ``rt.wrap_tool_call`` / ``rt.awrap_tool_call`` - the same for ``ToolNode``.
* :meth:`Runtime.deploy_model() <nalar_plugin.Runtime.deploy_model>` (or plain
  ``rt.deploy`` with chat models) - the replicas of a model as a component whose
  instance the controllers choose for each call.

How it works, one module a role: the callback is the switch and the sensor
(:mod:`.activation`, :mod:`.callback`, :mod:`.recorder`); wraps of LangChain's
execution paths are the actuator (:mod:`.interception`, :mod:`.streaming`);
:mod:`.requests` turns an intercepted call into a nalar call; a call runs where
its objects live unless it is shipped (:mod:`.shipping`, :mod:`.remote`), and
then its callback events fire in the caller (:mod:`.events`). The Runtime
makes the :mod:`.service`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .callback import NalarCallbackHandler
from .recorder import RunRecord
from .service import AdapterService
from .shipping import InProcessWarning, NotSendable

__all__ = [
    "AdapterService",
    "InProcessWarning",
    "NalarCallbackHandler",
    "NalarMiddleware",
    "NotSendable",
    "RunRecord",
]


def __getattr__(name: str) -> Any:
    # The middleware needs ``langchain`` (an optional dependency): imported on first use.
    if name == "NalarMiddleware":
        return importlib.import_module(".middleware", __name__).NalarMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
