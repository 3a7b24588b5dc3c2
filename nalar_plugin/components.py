"""Components deployed by name, their instances, and the objects of class stubs.

``rt.deploy(name, instances)`` declares a component whose instances are either
given objects (external endpoints: chat models, engines, HTTP clients) or
objects a factory makes on Dask workers. ``rt.call(name, method, ...)`` (or
``rt.component(name).method(...)``) makes a call; the instance is chosen when
the call is admitted, and what the call needs to reach it is passed to it
then. A plugin may say what an object becomes as an instance through the
``nalar_endpoint`` hook (the adapters wrap chat models that way).

A deployed component gets more instances later with :meth:`Components.add_instance`
(``rt.add_instance``): an endpoint object, or one more object of its factory on a
worker. :class:`WorkerProvisioner`, which every Runtime registers, carries out the
``provision``/``kill`` decisions of the instances the Runtime hosts on its workers
(factory components, and the function and tool components of stubs).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from .calls import CallPath
from .config import slo_mode, slo_seconds
from .context import CallContext, CallSink, new_id
from .dispatch import Dispatcher
from .errors import ClusterError, ConfigError, RuntimeStateError
from .future import FINISHED, Future
from .hookspecs import hookimpl
from .links import FutureRef, LinkHandlers, loads
from .plugins import PluginManager
from .scheduler.controller import ControlPlane
from .scheduler.leases import RateLimiter
from .scheduler.limits import RateLimit
from .stubs import ClassStub, CreateTarget, Directives, EndpointTarget, HostedAddress, HostedObject

__all__ = ["ComponentHandle", "ComponentStub", "Components", "DriverRequests", "LocalSink", "WorkerProvisioner",
           "method_is_async"]

logger = logging.getLogger(__name__)


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
        self._factories: dict[str, Any] = {}  # factory components: name -> the class or callable
        self._planned: dict[str, str] = {}  # hosted instances still waiting for a worker: id -> component
        self._indices: dict[str, int] = {}  # name -> the index of its next endpoint
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
            self._indices[name] = len(addresses)
            if callable(instances) and not isinstance(instances, (list, tuple)):
                self._factories[name] = instances
        ids: list[str] = self._plane.add_component(name, len(addresses), capacity, addresses=addresses)
        if slo is not None:
            self._plane.set_slo(name, slo, mode)
        return ids

    # -- instances added later ----------------------------------------------------------
    def is_factory(self, name: str) -> bool:
        """Whether ``name`` was deployed with a factory (its objects live on workers)."""
        with self._lock:
            return name in self._factories

    def add_instance(self, name: str, instance: Any = None, *, worker: str | None = None,
                     ready_at: float | None = None, planned: bool = False) -> str:
        """Add one instance to the deployed component ``name``; return its id.

        An endpoint component takes the object ``instance`` (what the ``nalar_endpoint``
        hook makes of it), admitting from ``ready_at`` (``time.monotonic()``; default
        now). A factory component makes one more object of its factory on ``worker``
        (default: the worker hosting the fewest of its instances); the instance admits
        once the object exists. With ``planned``, a factory's instance is added with no
        worker yet: it admits nothing until :meth:`place` gives it one.

        Raises:
            ConfigError: No such component, an object given to a factory component (or
                none to an endpoint one), or the component is at its ``max_instances``.
            ClusterError: No worker to host the object on.
        """
        self.deployed(name)
        factory = self._factories.get(name)
        if factory is None:
            if instance is None:
                raise ConfigError(f"component {name!r} has endpoint instances: add_instance needs the object")
            with self._lock:
                index = self._indices[name]
                self._indices[name] = index + 1
            address = self.endpoint(name, instance, index)
            iid: str = self._plane.add_instance(name, address=address, ready_at=ready_at or 0.0)
            return iid
        if instance is not None:
            raise ConfigError(f"component {name!r} makes its instances with a factory: add_instance takes no object")
        hosted = HostedAddress(new_id("o"), "")
        iid = self._plane.add_instance(name, address=hosted, ready_at=math.inf)
        if planned:
            with self._lock:
                self._planned[iid] = name
            return iid
        self._make(name, iid, hosted, worker or self.least_hosting(name, self._dispatcher.wait_for_workers()))
        return iid

    def place(self, instance: str, worker: str) -> bool:
        """Make the object of a planned instance on ``worker``; False if it is not planned (any more)."""
        with self._lock:
            name = self._planned.pop(instance, None)
        ctl = self._plane.instances.get(instance)
        if name is None or ctl is None or ctl.draining:
            return False
        self._make(name, instance, ctl.address, worker)
        return True

    def planned(self) -> dict[str, str]:
        """Hosted instances waiting for a worker: id -> component."""
        with self._lock:
            return dict(self._planned)

    def hosting(self, name: str | None = None) -> dict[str, int]:
        """Instances of factory components (of ``name`` only, if given) per worker, draining ones excluded."""
        with self._lock:
            names = [name] if name is not None else list(self._factories)
        out: dict[str, int] = {}
        for comp in names:
            for iid in self._plane.components.get(comp, []):
                ctl = self._plane.instances.get(iid)
                address = getattr(ctl, "address", None)
                if ctl is not None and isinstance(address, HostedAddress) and address.worker:
                    out[address.worker] = out.get(address.worker, 0) + 1
        return out

    def least_hosting(self, name: str, workers: list[str]) -> str:
        """Of ``workers``, the one hosting the fewest instances of ``name`` (then of every factory component)."""
        mine, every = self.hosting(name), self.hosting()
        return min(workers, key=lambda w: (mine.get(w, 0), every.get(w, 0), w))

    def _make(self, name: str, iid: str, hosted: HostedAddress, worker: str) -> None:
        """Create the object of instance ``iid`` on ``worker``; it admits once the object exists."""
        with self._lock:
            factory = self._factories[name]
        hosted.worker = worker
        made = self._create(factory, hosted.object_id, f"{name}#init", Directives(), (), {}, worker)

        def done(f: Future) -> None:
            if f.status == FINISHED:
                ctl = self._plane.instances.get(iid)
                if ctl is None or ctl.draining:  # removed while its object was made: drop the object
                    self._dispatcher.drop_objects(worker, [hosted.object_id])
                else:
                    self._plane.set_ready_at(iid, time.monotonic())
                return
            logger.error("instance %s of %s could not be made on %s: %s", iid, name, worker, f.exception())
            if iid in self._plane.instances:
                self._plane.remove_instance(iid)

        made.add_done_callback(done)

    def remove_instance(self, instance: str) -> None:
        """Remove ``instance``: it admits nothing more, and its hosted object is dropped once its calls finish.

        Queued calls go back to the component's shared queue; admitted ones finish (it
        drains), so no call is lost.
        """
        with self._lock:
            self._planned.pop(instance, None)
        ctl = self._plane.instances[instance]
        address = ctl.address

        def drained() -> None:
            if isinstance(address, HostedAddress) and address.worker:
                self._dispatcher.drop_objects(address.worker, [address.object_id])

        self._plane.remove_instance(instance, on_drained=drained)

    def endpoint(self, name: str, obj: Any, index: int) -> Any:
        """What ``obj`` becomes as instance ``index`` of ``name`` (a plugin may wrap it)."""
        if self._plugins.implemented("nalar_endpoint"):
            wrapped = self._plugins.hook.nalar_endpoint(obj=obj, component=name, index=index)
            if wrapped is not None:
                return wrapped
        return obj

    def directives_of(self, name: str) -> Directives | None:
        """The directives of the deployed component ``name``, ``None`` if there is none."""
        with self._lock:
            found = self._deployed.get(name)
        return None if found is None else found[1]

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


class WorkerProvisioner:
    """Carries out ``provision`` and ``kill`` for the instances a Runtime hosts on its workers.

    - A factory component (``rt.deploy(name, Factory, n=...)``):
      ``Provision(component, where=None)`` makes one more object, on a worker that
      hosts none of the component's instances. When every worker hosts one and the
      cluster can still grow (``can_grow``, set by
      :class:`~nalar_plugin.cluster.NalarAdaptive`), the instance waits, *planned*
      and admitting nothing, for the next worker (:meth:`place_planned`); otherwise
      it goes to the worker hosting the fewest.
    - A function or tool component of stubs (calls that run on any worker): one
      more instance of the same capacity.
    - ``Kill(instance)`` of either: the instance drains (its queued calls go back to
      the shared queue, its admitted calls finish), then its object is dropped. The
      last instance of a component stays (``False``).

    Moves (``where`` an instance) and endpoint components are left to the
    deployment's own provisioners (``None``).

    Args:
        plane: The local controllers.
        components: The deployed components.
        dispatcher: The workers.
    """

    def __init__(self, plane: ControlPlane, components: Components, dispatcher: Dispatcher) -> None:
        self._plane = plane
        self._components = components
        self._dispatcher = dispatcher
        self._lock = threading.Lock()
        self.can_grow: Callable[[], bool] | None = None  # whether a new worker may come (adaptive scaling)

    def _workers(self) -> list[str]:
        retiring = self._dispatcher.retiring()
        return [w for w in self._dispatcher.workers() if w not in retiring]

    def _stub_component(self, component: str) -> bool:
        try:
            self._components.deployed(component)
        except ConfigError:
            return component in self._plane.components and not component.endswith("#init")
        return False

    @hookimpl
    def nalar_provision(self, component: str, where: Any) -> str | None:
        """Add an instance of a factory or stub component (``where=None`` only)."""
        if where is not None:
            return None
        if self._stub_component(component):
            iid: str = self._plane.add_instance(component)
            return iid
        if not self._components.is_factory(component):
            return None
        with self._lock:
            workers = self._workers()
            mine = self._components.hosting(component)
            free = [w for w in workers if not mine.get(w)]
            if free:
                return self._components.add_instance(component, worker=self._components.least_hosting(component, free))
            if workers and not (self.can_grow is not None and self.can_grow()):
                return self._components.add_instance(component,
                                                     worker=self._components.least_hosting(component, workers))
            return self._components.add_instance(component, planned=True)

    def place_planned(self) -> list[str]:
        """Give planned instances a worker: one hosting none of their component, or, when the cluster cannot grow, the least busy.

        Returns:
            The instances placed.
        """
        placed: list[str] = []
        with self._lock:
            planned = self._components.planned()
            if not planned:
                return placed
            workers = self._workers()
            if not workers:
                return placed
            grow = self.can_grow is not None and self.can_grow()
            for iid, component in planned.items():
                mine = self._components.hosting(component)
                free = [w for w in workers if not mine.get(w)]
                if not free and grow:
                    continue
                worker = self._components.least_hosting(component, free or workers)
                if self._components.place(iid, worker):
                    placed.append(iid)
        return placed

    @hookimpl
    def nalar_kill(self, instance: str) -> bool | None:
        """Remove an instance of a factory or stub component once its calls finish."""
        ctl = self._plane.instances.get(instance)
        if ctl is None:
            return None
        component = ctl.component
        factory = self._components.is_factory(component)
        if not factory and not self._stub_component(component):
            return None
        if ctl.draining or len(self._plane.components.get(component, [])) <= 1:
            logger.warning("not removing %s: it is draining or the last instance of %s", instance, component)
            return False
        if factory:
            self._components.remove_instance(instance)
        else:
            self._plane.remove_instance(instance)
        return True
