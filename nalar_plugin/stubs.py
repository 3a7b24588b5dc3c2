"""``@agent`` and ``@tool``: stubs that turn calls into futures.

Under an active :class:`~nalar_plugin.Runtime` a call to a stub returns a
:class:`~nalar_plugin.Future` at once. With no Runtime active the decorated code
runs as plain Python and returns plain values, so the same workflow runs with and
without nalar.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import numbers
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from .context import active_runtime
from .errors import DirectiveError

__all__ = [
    "ClassStub",
    "CreateTarget",
    "Directives",
    "EndpointTarget",
    "HostedAddress",
    "HostedObject",
    "MethodTarget",
    "Stub",
    "agent",
    "tool",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Directives:
    """The paper's per-component directives, validated on construction.

    Attributes:
        kind: ``"agent"`` or ``"tool"``.
        stateful: The component keeps per-session state (session affinity).
        batchable: Calls may be batched by the instance (refused: not carried out yet).
        preemptable: A running call may be preempted (refused: not carried out yet).
        min_instances: Instances the component starts with (each admits
            ``max_concurrency`` calls at once).
        max_instances: Instances the component may ever have, provisioning included
            (``None``: no bound).
        resources: Dask worker resources one call needs, e.g. ``{"GPU": 1}``.
        idempotent: The call may run again freely (no journal replay needed).
        max_concurrency: Concurrent calls per instance (``None``: no bound).
    """

    kind: str = "agent"
    stateful: bool = False
    batchable: bool = False
    preemptable: bool = False
    min_instances: int = 1
    max_instances: int | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    idempotent: bool = False
    max_concurrency: int | None = None

    def validate(self, name: str) -> None:
        """Raise :class:`DirectiveError` naming ``name`` if a value is bad."""

        def bad(directive: str, why: str) -> DirectiveError:
            return DirectiveError(f"@{self.kind} {name!r}: directive {directive}={getattr(self, directive)!r} {why}")

        for flag in ("stateful", "batchable", "preemptable", "idempotent"):
            if not isinstance(getattr(self, flag), bool):
                raise bad(flag, "must be True or False")
        for flag in ("batchable", "preemptable"):
            # A directive must act or be refused: these are not carried out yet.
            if getattr(self, flag):
                raise bad(flag, "is not supported by this version of nalar-plugin (calls are neither batched "
                                "nor preempted); leave it False")
        if not _is_int(self.min_instances) or self.min_instances < 1:
            raise bad("min_instances", "must be an integer >= 1 (a component needs an instance to run on)")
        if self.max_instances is not None:
            if not _is_int(self.max_instances) or self.max_instances < 1:
                raise bad("max_instances", "must be an integer >= 1 or None")
            if self.max_instances < self.min_instances:
                raise bad("max_instances", f"is below min_instances={self.min_instances}")
        if self.max_concurrency is not None and (not _is_int(self.max_concurrency) or self.max_concurrency < 1):
            raise bad("max_concurrency", "must be an integer >= 1 or None")
        if not isinstance(self.resources, Mapping):
            raise bad("resources", "must be a mapping such as {'GPU': 1}")
        for key, amount in self.resources.items():
            if not isinstance(key, str) or not key:
                raise bad("resources", f"has a key {key!r} that is not a resource name")
            if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or amount <= 0:
                raise bad("resources", f"asks for {amount!r} of {key!r}; amounts must be numbers > 0")


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class Stub:
    """A decorated function. Calling it makes a call; see :func:`agent`."""

    def __init__(self, fn: Callable[..., Any], name: str, directives: Directives, method: str = "__call__") -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name
        self.method = method
        self.directives = directives
        self.is_async = inspect.iscoroutinefunction(fn)
        self._options: dict[str, Any] = {}
        self._origin: Stub | None = None  # the module-level stub this one was derived from

    def options(self, **options: Any) -> Stub:
        """Return this stub with call options: ``priority``, ``deadline``, ``session``."""
        allowed = {"priority", "deadline", "session", "idempotency_key", "expected_s"}
        unknown = set(options) - allowed
        if unknown:
            raise DirectiveError(f"{self.name}: unknown call option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        clone = Stub(self.fn, self.name, self.directives, self.method)
        clone._options = {**self._options, **options}
        clone._origin = self.__origin__()
        return clone

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        rt = active_runtime()
        if rt is None:
            if self.is_async and not _loop_running():
                # Sync code calling an async stub gets its value, as it would
                # from a future's value(): the same workflow runs either way.
                return asyncio.run(self.fn(*args, **kwargs))
            return self.fn(*args, **kwargs)
        return rt.submit_call(self, args, kwargs, **self._options)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        # A stub defined on a plain class behaves like a method.
        if obj is None:
            return self
        return functools.partial(self, obj)

    def __repr__(self) -> str:
        return f"<nalar {self.directives.kind} {self.name}>"

    def __reduce__(self) -> Any:
        # A stub importable by name travels by reference, so the worker runs the
        # module's own code (tracebacks name the real file); one defined in
        # __main__ or a closure travels by value.
        module = getattr(self.fn, "__module__", None)
        qualname = getattr(self.fn, "__qualname__", "")
        if module and module != "__main__" and "<locals>" not in qualname and _lookup(module, qualname) is self.__origin__():
            return (_import_stub, (module, qualname, self.method, self._options))
        return (_rebuild_stub, (self.fn, self.name, self.directives, self.method, self._options))

    def __origin__(self) -> Any:
        return self._origin or self


def _lookup(module: str, qualname: str) -> Any:
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def _import_stub(module: str, qualname: str, method: str, options: dict[str, Any]) -> Stub:
    importlib.import_module(module)
    stub = _lookup(module, qualname)
    if options:
        stub = stub.options(**options)
    return stub


def _rebuild_stub(fn: Callable[..., Any], name: str, directives: Directives, method: str, options: dict[str, Any]) -> Stub:
    stub = Stub(fn, name, directives, method)
    stub._options = options
    return stub


class CreateTarget:
    """Instantiate a class and host the object on the executor that runs the call."""

    is_async = False

    def __init__(self, cls: type, object_id: str) -> None:
        self.cls = cls
        self.object_id = object_id


class MethodTarget:
    """Call a method of a hosted object."""

    def __init__(self, object_id: str, method: str, is_async: bool) -> None:
        self.object_id = object_id
        self.method = method
        self.is_async = is_async


class EndpointTarget:
    """Run ``method`` on the endpoint object the call was admitted to (its first argument)."""

    def __init__(self, method: str, is_async: bool) -> None:
        self.method = method
        self.is_async = is_async

    def __call__(self, endpoint: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(endpoint, self.method)(*args, **kwargs)


class HostedAddress:
    """Where a factory-made instance lives: its object id and its worker."""

    def __init__(self, object_id: str, worker: str) -> None:
        self.object_id = object_id
        self.worker = worker

    def __repr__(self) -> str:
        return f"<hosted {self.object_id} on {self.worker}>"


class HostedObject:
    """The handle on an object hosted on a worker; its public methods are stubs.

    Args:
        sink: Where its method calls go (the Runtime, or a worker's link to it).
        stub: The class stub.
        object_id: The hosted object's id.
        worker: The worker that holds it.
        created: The future of its creation (method calls wait for it).
    """

    def __init__(self, sink: Any, stub: ClassStub, object_id: str, worker: str, created: Any) -> None:
        self._sink = sink
        self._stub = stub
        self.object_id = object_id
        self.worker = worker
        self.created = created

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._stub.methods:
            raise AttributeError(f"{self._stub.name} has no public method {name!r}")
        is_async = inspect.iscoroutinefunction(getattr(self._stub.cls, name))
        method = Stub(MethodTarget(self.object_id, name, is_async), self._stub.name, self._stub.directives, name)  # type: ignore[arg-type]
        method.is_async = is_async
        sink, created, worker = self._sink, self.created, self.worker

        def call(*args: Any, **kwargs: Any) -> Any:
            return sink.submit_call(method, args, kwargs, after=[created], workers=[worker])

        call.__name__ = name
        return call

    def __reduce__(self) -> Any:
        raise TypeError(f"a hosted {self._stub.name} handle cannot be sent to another process")

    def __repr__(self) -> str:
        return f"<nalar hosted {self._stub.name} {self.object_id} on {self.worker}>"


class ClassStub:
    """A decorated class. Instantiating it under a Runtime hosts the object on a worker.

    Each public method of the object becomes a stub: calling it returns a future,
    and the call runs against the one hosted object, so its attributes persist
    between calls. With no Runtime active the class is instantiated normally.
    """

    def __init__(self, cls: type, name: str, directives: Directives) -> None:
        functools.update_wrapper(self, cls, updated=())
        self.cls = cls
        self.name = name
        self.directives = directives
        self.methods = sorted(
            n for n, v in inspect.getmembers(cls) if callable(v) and not n.startswith("_")
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        rt = active_runtime()
        if rt is None:
            return self.cls(*args, **kwargs)
        return rt.host_object(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<nalar {self.directives.kind} class {self.name}>"


def _decorate(kind: str, target: Any, name: str | None, directives: dict[str, Any]) -> Any:
    if not callable(target):
        raise DirectiveError(f"@{kind} decorates functions and classes, not {type(target).__name__}")
    label: str = name or str(getattr(target, "__qualname__", getattr(target, "__name__", repr(target))))
    try:
        d = Directives(kind=kind, **directives)
    except TypeError as exc:
        raise DirectiveError(f"@{kind} {label!r}: {exc}") from exc
    d.validate(label)
    if inspect.isclass(target):
        return ClassStub(target, label, d)
    return Stub(target, label, d)


@overload
def agent(fn: F, /) -> F: ...
@overload
def agent(fn: None = None, /, *, name: str | None = None, **directives: Any) -> Callable[[F], F]: ...
def agent(fn: Any = None, /, *, name: str | None = None, **directives: Any) -> Any:
    """Declare an agent component: a function (sync or async) or a class.

    Args:
        fn: The function or class, when used as a bare ``@agent``.
        name: Component name (default: the qualified name).
        **directives: ``stateful``, ``batchable``, ``preemptable``, ``min_instances``,
            ``max_instances``, ``resources``, ``max_concurrency``.

    Returns:
        A stub (or a decorator making one).

    Raises:
        DirectiveError: A directive is unknown or has a bad value.
    """
    if fn is None:
        return lambda f: _decorate("agent", f, name, directives)
    return _decorate("agent", fn, name, directives)


@overload
def tool(fn: F, /) -> F: ...
@overload
def tool(fn: None = None, /, *, name: str | None = None, **directives: Any) -> Callable[[F], F]: ...
def tool(fn: Any = None, /, *, name: str | None = None, **directives: Any) -> Any:
    """Declare a tool component; the same as :func:`agent` plus ``idempotent``.

    A tool's committed effects are never repeated on retry or replay unless it
    declares ``idempotent=True``.
    """
    if fn is None:
        return lambda f: _decorate("tool", f, name, directives)
    return _decorate("tool", fn, name, directives)
