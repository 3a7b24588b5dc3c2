"""Components deployed by name, their instances, and the objects of class stubs.

``rt.deploy(name, instances)`` declares a component whose instances are either
given objects (external endpoints: chat models, engines, HTTP clients) or
objects a factory makes on Dask workers. ``rt.call(name, method, ...)`` (or
``rt.component(name).method(...)``) makes a call; the instance is chosen when
the call is admitted, and what the call needs to reach it is passed to it
then. A plugin may say what an object becomes as an instance through the
``nalar_endpoint`` hook (the adapters wrap chat models that way).
"""

from __future__ import annotations

import inspect
import itertools
import threading
from collections.abc import Callable
from typing import Any

from .calls import CallPath, HostedAddress
from .config import slo_mode, slo_seconds
from .context import CallContext, CallSink, new_id
from .dispatch import Dispatcher
from .errors import ClusterError, ConfigError, RuntimeStateError
from .future import Future
from .links import FutureRef, LinkHandlers, loads
from .plugins import PluginManager
from .scheduler.controller import ControlPlane
from .scheduler.leases import RateLimiter
from .scheduler.limits import RateLimit
from .stubs import ClassStub, CreateTarget, Directives, EndpointTarget, HostedObject

__all__ = ["ComponentHandle", "ComponentStub", "Components", "DriverRequests", "LocalSink", "method_is_async"]


class ComponentStub:
    """The stub of one method of a deployed component."""

    def __init__(self, name: str, method: str, is_async: bool, directives: Directives) -> None:
        self.name = name
        self.method = method
        self.is_async = is_async
        self.directives = directives
        self.fn = EndpointTarget(method, is_async)


def method_is_async(obj: Any, method: str) -> bool:
    """True when ``obj.method`` is a coroutine function.

    Raises:
        AttributeError: ``obj`` has no such method.
    """
    attr = getattr(obj, method, None)
    if attr is None:
        raise AttributeError(f"{type(obj).__name__} has no method {method!r}")
    return inspect.iscoroutinefunction(attr)


class ComponentHandle:
    """``rt.component(name)``: attribute access gives callables that make calls."""

    def __init__(self, components: Components, name: str) -> None:
        self._components = components
        self._name = name

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        components, name = self._components, self._name

        def call(*args: Any, **kwargs: Any) -> Any:
            return components.call(name, method, args, kwargs)

        call.__name__ = method
        return call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._components.call(self._name, "__call__", args, kwargs)

    def __repr__(self) -> str:
        return f"<nalar component {self._name}>"


class Components:
    """The deployed components of one Runtime, and the objects of its class stubs.

    Args:
        plane: The local controllers.
        calls: The call path.
        dispatcher: The workers (where factory instances and hosted objects live).
        plugins: The plugin manager (``nalar_endpoint``).
        sink: The Runtime (hosted objects' method calls go to it).
        limits: The rate limits (components deployed with ``rpm``/``tpm``).
    """

    def __init__(self, plane: ControlPlane, calls: CallPath, dispatcher: Dispatcher, plugins: PluginManager,
                 sink: CallSink, limits: RateLimiter) -> None:
        self._plane = plane
        self._limits = limits
        self._calls = calls
        self._dispatcher = dispatcher
        self._plugins = plugins
        self._sink = sink
        self._lock = threading.Lock()
        self._deployed: dict[str, tuple[Any, Directives]] = {}  # name -> (probe object, directives)
        self._pick = itertools.count()

    def names(self) -> list[str]:
        """The deployed components."""
        with self._lock:
            return sorted(self._deployed)

    def deploy(self, name: str, instances: Any, *, n: int | None = None, capacity: int | None = None,
               stateful: bool = True, resources: dict[str, float] | None = None, slo_s: float | str | None = None,
               on_slo: str = "reject", rpm: float | None = None, tpm: float | None = None,
               burst_s: float = 1.0, output_tokens: int | None = None) -> list[str]:
        """Declare the component ``name`` and its instances (see :meth:`nalar_plugin.Runtime.deploy`).

        ``output_tokens`` is the output estimate of its calls under a ``tpm`` limit
        (``None``: ``nalar.rate-output-tokens``).

        Raises:
            ConfigError: The name is taken, no instance was given, ``n`` is not a positive integer,
                or the SLO, ``on_slo`` or a rate limit is invalid.
            ClusterError: A factory has no worker to host its objects on, or the scheduler
                cannot hold the rate limits.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a component needs a non-empty str name, got {name!r}")
        slo = slo_seconds(slo_s)
        mode = slo_mode(on_slo)
        try:
            limit = RateLimit.checked(rpm, tpm, burst_s)
        except ConfigError as exc:
            raise ConfigError(f"component {name!r}: {exc}") from exc
        with self._lock:
            if name in self._deployed:
                raise ConfigError(f"component {name!r} is already deployed")
        directives = Directives(kind="agent", stateful=stateful, resources=dict(resources or {}),
                                max_concurrency=capacity)
        directives.validate(name)
        if isinstance(instances, (list, tuple)):
            if n is not None:
                raise ConfigError(f"component {name!r}: n= makes instances with a factory; a list gives them itself")
            if not instances:
                raise ConfigError(f"component {name!r} needs at least one instance")
            addresses: list[Any] = [self.endpoint(name, obj, i) for i, obj in enumerate(instances)]
            probe = addresses[0]
        elif callable(instances):
            count = 1 if n is None else n
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigError(f"component {name!r}: n must be an integer >= 1, got {n!r}")
            if isinstance(instances, ClassStub):
                instances = instances.cls  # the hosted object is the plain class's instance
            workers = self._dispatcher.wait_for_workers()
            addresses = []
            made = []
            for i in range(count):
                worker = workers[i % len(workers)]
                object_id = new_id("o")
                made.append(self._create(instances, object_id, f"{name}#init", Directives(), (), {}, worker))
                addresses.append(HostedAddress(object_id, worker))
            for fut in made:
                fut.result()
            probe = instances
        else:
            raise ConfigError(f"component {name!r}: instances must be a list of objects or a factory")
        if limit is not None:
            try:
                self._limits.configure(name, limit, output_tokens=output_tokens)
            except Exception as exc:
                raise ClusterError(f"component {name!r}: the Dask scheduler could not hold its rate limits "
                                   f"({exc}); its environment needs nalar-plugin installed") from exc
        with self._lock:
            self._deployed[name] = (probe, directives)
        ids: list[str] = self._plane.add_component(name, len(addresses), capacity, addresses=addresses)
        if slo is not None:
            self._plane.set_slo(name, slo, mode)
        return ids

    def endpoint(self, name: str, obj: Any, index: int) -> Any:
        """What ``obj`` becomes as instance ``index`` of ``name`` (a plugin may wrap it)."""
        if self._plugins.implemented("nalar_endpoint"):
            wrapped = self._plugins.hook.nalar_endpoint(obj=obj, component=name, index=index)
            if wrapped is not None:
                return wrapped
        return obj

    def deployed(self, name: str) -> tuple[Any, Directives]:
        """The probe object and the directives of ``name``.

        Raises:
            ConfigError: No such component.
        """
        with self._lock:
            found = self._deployed.get(name)
            if found is None:
                raise ConfigError(f"no component named {name!r}; deployed: {sorted(self._deployed) or 'none'}")
            return found

    def call(self, name: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Future:
        """Call ``method`` of the deployed component ``name``; the instance is chosen at admission."""
        probe, directives = self.deployed(name)
        stub = ComponentStub(name, method, method_is_async(probe, method), directives)
        extra = options.pop("extra", None) or {}
        call = self._calls.submit(stub, name, method, args, kwargs, directives,
                                  {**options, "extra": extra, "component_call": True})
        return call.future

    def handle(self, name: str) -> ComponentHandle:
        """``rt.component(name)``."""
        self.deployed(name)
        return ComponentHandle(self, name)

    def instances(self, name: str) -> dict[str, Any]:
        """The instances of ``name``: id -> address (endpoint object or hosted address)."""
        return {i: self._plane.instances[i].address for i in self._plane.components.get(name, [])
                if i in self._plane.instances}

    # -- class stubs ---------------------------------------------------------------------
    def _create(self, cls: type, object_id: str, component: str, directives: Directives,
                args: tuple[Any, ...], kwargs: dict[str, Any], worker: str) -> Future:
        target = CreateTarget(cls, object_id)
        call = self._calls.submit(target, component, "__init__", args, kwargs, directives, {"workers": [worker]})
        return call.future

    def host_object(self, stub: ClassStub, args: tuple[Any, ...], kwargs: dict[str, Any]) -> HostedObject:
        """Create a class stub's object on one worker; its methods become stubs."""
        workers = self._dispatcher.wait_for_workers()
        worker = workers[next(self._pick) % len(workers)]
        object_id = new_id("o")
        created = self._create(stub.cls, object_id, stub.name, stub.directives, args, kwargs, worker)
        return HostedObject(self._sink, stub, object_id, worker, created)


class LocalSink:
    """Where calls made in this process go: stubs, hosted objects, nested calls of in-process bodies.

    Bound to the call path and the components once both exist.
    """

    def __init__(self) -> None:
        self._calls: CallPath | None = None
        self._components: Components | None = None

    def bind(self, calls: CallPath, components: Components) -> None:
        """Attach the services the sink forwards to."""
        self._calls, self._components = calls, components

    def submit_call(self, stub: Any, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Future:
        """Make a call of ``stub`` and return its future at once."""
        assert self._calls is not None
        return self._calls.submit(stub, stub.name, stub.method, args, kwargs, stub.directives, options).future

    def host_object(self, stub: ClassStub, args: tuple[Any, ...], kwargs: dict[str, Any]) -> HostedObject:
        """Create a class stub's object on one worker."""
        assert self._components is not None
        return self._components.host_object(stub, args, kwargs)


class DriverRequests(LinkHandlers):
    """What the driver does with the requests of bodies running in worker processes.

    Args:
        journal: The journal (managed-state reads).

    Bound to the call path (nested calls) and the components (objects of class
    stubs made inside bodies) once they exist.
    """

    def __init__(self, journal: Any) -> None:
        self._journal = journal
        self._calls: Any = None
        self._components: Any = None
        self.on_event: Callable[[str, bytes], None] | None = None

    def bind(self, calls: CallPath, components: Components) -> None:
        """Attach the services the requests go to."""
        self._calls, self._components = calls, components

    def read(self, session: str, name: str, reply: Callable[[Any, BaseException | None], None]) -> None:
        journal = self._journal
        journal.run_async(lambda: journal.read_managed(session, name), reply)

    def _inputs(self, obj: Any) -> Any:
        if isinstance(obj, FutureRef):
            live = self._calls.live(obj.call_id)
            if live is None:
                raise RuntimeStateError(f"a nested call's input {obj.call_id} is not a live call of this driver")
            return live.future
        if type(obj) in (list, tuple, set, frozenset):
            return type(obj)(self._inputs(x) for x in obj)
        if type(obj) is dict:
            return {k: self._inputs(v) for k, v in obj.items()}
        return obj

    def nested(self, link: Any, call_id: str, payload: bytes) -> None:
        try:
            stub, args, kwargs, options, ctx, _ = loads(payload)
            args, kwargs = self._inputs(args), self._inputs(kwargs)
            fut = self._calls.submit(stub, stub.name, stub.method, args, kwargs, stub.directives,
                                     {**options, "context": ctx}).future
        except Exception as exc:
            failed = Future(CallContext(session="", call_id=call_id, component="?"))
            failed._finish("error", exception=exc)
            link.send_result(call_id, failed)
            return
        fut.add_done_callback(lambda f: link.send_result(call_id, f))

    def host(self, payload: bytes, reply: Callable[[Any, BaseException | None], None]) -> None:
        try:
            stub, args, kwargs = loads(payload)
            hosted = self._components.host_object(stub, self._inputs(args), self._inputs(kwargs))
        except Exception as exc:
            reply(None, exc)
            return

        def made(f: Future) -> None:
            error = f.exception() if f.status != "finished" else None
            reply(None if error else (hosted.object_id, hosted.worker, hosted.object_id), error)

        hosted.created.add_done_callback(made)

    def event(self, channel: str, event: bytes) -> None:
        if self.on_event is not None:
            self.on_event(channel, event)
