"""Components deployed by name, and the stubs that call them.

``rt.deploy(name, instances)`` declares a component whose instances are either
given objects (external endpoints: chat models, engines, HTTP clients) or objects
a factory makes on Dask workers. ``rt.call(name, method, ...)`` (or
``rt.component(name).method(...)``) makes a call; the instance is chosen when the
call is admitted, and what the call needs to reach it is passed to it then.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..stubs import Directives

__all__ = ["ComponentHandle", "ComponentStub", "EndpointTarget", "HostedAddress"]


class HostedAddress:
    """Where a factory-made instance lives: its object id and its worker."""

    def __init__(self, object_id: str, worker: str) -> None:
        self.object_id = object_id
        self.worker = worker

    def __repr__(self) -> str:
        return f"<hosted {self.object_id} on {self.worker}>"


class EndpointTarget:
    """Run ``method`` on the endpoint object the call was admitted to (its first argument)."""

    def __init__(self, method: str, is_async: bool) -> None:
        self.method = method
        self.is_async = is_async

    def __call__(self, endpoint: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(endpoint, self.method)(*args, **kwargs)


class ComponentStub:
    """The stub of one method of a deployed component (what ``submit_call`` takes)."""

    def __init__(self, name: str, method: str, is_async: bool, directives: Directives) -> None:
        self.name = name
        self.method = method
        self.is_async = is_async
        self.directives = directives
        self.fn = EndpointTarget(method, is_async)


def method_is_async(obj: Any, method: str) -> bool:
    """True when ``obj.method`` is a coroutine function."""
    attr = getattr(obj, method, None)
    if attr is None:
        raise AttributeError(f"{type(obj).__name__} has no method {method!r}")
    return inspect.iscoroutinefunction(attr)


class ComponentHandle:
    """``rt.component(name)``: attribute access gives callables that make calls."""

    def __init__(self, rt: Any, name: str) -> None:
        self._rt = rt
        self._name = name

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        rt, name = self._rt, self._name

        def call(*args: Any, **kwargs: Any) -> Any:
            return rt.call(name, method, *args, **kwargs)

        call.__name__ = method
        return call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._rt.call(self._name, "__call__", *args, **kwargs)

    def __repr__(self) -> str:
        return f"<nalar component {self._name}>"
