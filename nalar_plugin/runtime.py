"""The Runtime: the Dask cluster, the controllers, the plugins and the stores.

``with Runtime() as rt:`` starts an embedded Dask ``LocalCluster`` in this process
(scheduler and dashboard on 127.0.0.1 only); ``Runtime(processes=True)`` uses
worker processes; ``Runtime(address="tcp://host:port")`` joins a running cluster.
While a Runtime is open, stub calls return futures scheduled by its controllers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import dask.config

from . import _task, config as _config
from ._calls import CallMaker, fail, replace_futures
from .context import _options_var, _session_var, new_id
from .errors import (
    CallVetoedError,
    ClusterError,
    ConfigError,
    RuntimeStateError,
    UnsatisfiableResourcesError,
)
from .future import CANCELLED, ERROR, FINISHED, Future
from .graph import SessionGraph
from .plugins import PluginManager
from .scheduler.controller import Call, ControlPlane, LocalController
from .scheduler.global_controller import GlobalController
from .scheduler.shared import ReportingController, snapshot_to_dict
from .adapters.mixin import AdapterMixin
from .state.runtime_state import StateMixin
from .scheduler.components import ComponentHandle, ComponentStub, HostedAddress, method_is_async
from .stubs import ClassStub, Directives, Stub

__all__ = ["Runtime", "active_runtime"]

logger = logging.getLogger(__name__)

_ACTIVE: list[Runtime] = []
_ACTIVE_LOCK = threading.Lock()


def active_runtime() -> Any:
    """Return the Runtime that stub calls here go to, or ``None`` (plain Python)."""
    rt = _task.task_runtime.get()
    if rt is not None:
        return rt
    with _ACTIVE_LOCK:
        return _ACTIVE[-1] if _ACTIVE else None


class Runtime(AdapterMixin, StateMixin, CallMaker):
    """Serve stub and adapter calls as futures on a Dask cluster.

    Args:
        address: Scheduler address of an existing cluster; ``None`` starts an
            embedded ``LocalCluster`` in this process.
        processes: Embedded cluster with worker processes instead of threads.
        n_workers: Workers of the embedded cluster.
        worker_slots: Dask ``nthreads`` per embedded worker (see :mod:`nalar_plugin.config`).
        policy: Name of the active policy.
        tick_interval: Global controller period, seconds or a string such as ``"100ms"``.
        security: A ``distributed.security.Security`` (TLS), passed to Dask.
        state_dir: Directory of the managed state store.
        **settings: Any other ``nalar`` setting, with ``_`` for ``-``.

    Raises:
        ConfigError: A bad setting.
        PolicyNotFoundError: No installed policy has that name.
        ClusterError: The cluster could not be started or reached.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        processes: bool | None = None,
        n_workers: int | None = None,
        worker_slots: int | None = None,
        policy: str | None = None,
        tick_interval: float | str | None = None,
        security: Any = None,
        state_dir: str | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.config = _config.resolve(
            processes=processes, n_workers=n_workers, worker_slots=worker_slots, policy=policy,
            tick_interval=tick_interval, state_dir=state_dir, **settings,
        )
        self.token = new_id("rt")
        self.closed = False
        self.plugins = PluginManager()
        self.policy_name = str(self.config["policy"])
        self.policy = self.plugins.policy(self.policy_name)
        self.policy.name = self.policy_name
        self.cluster: Any = None
        self.client: Any = self._connect(address, security)
        self.plane = ControlPlane(self._dispatch, seed=self.config["seed"])
        local = GlobalController(self.plane, self.policy, interval=self.config["tick-interval"], plugins=self.plugins)
        mode = self.config["global-controller"]
        if mode == "auto":
            mode = "scheduler" if address is not None else "local"
        self.controller: Any = local
        if mode == "scheduler":
            # Several drivers on one cluster share one global controller in the
            # scheduler; this driver reports its snapshot and applies what it is sent.
            self.controller = ReportingController(
                self.plane, self.client, self.token, local, interval=self.config["tick-interval"], policy=self.policy_name
            )
        self.plane.chooser = self.policy.choose
        self._worker_pick = 0
        self._deployed: dict[str, tuple[Any, Directives]] = {}  # name -> (probe object, directives)
        self._init_state()
        _task.RUNTIMES[self.token] = self
        with _ACTIVE_LOCK:
            _ACTIVE.append(self)
        self.client.subscribe_topic(_task.EVENT_TOPIC, self._on_event)
        self.controller.start()
        self._init_adapters()
        self.plugins.notify("nalar_runtime_started", runtime=self)

    # -- cluster ---------------------------------------------------------------
    def _connect(self, address: str | None, security: Any) -> Any:
        from distributed import Client, LocalCluster

        try:
            if address is not None:
                return Client(address, security=security, set_as_default=False, timeout="30s")
            processes = self.config["processes"]
            n = self.config["n-workers"] or (2 if processes else 1)
            with dask.config.set({"distributed.scheduler.worker-saturation": self.config["worker-saturation"]}):
                self.cluster = LocalCluster(
                    n_workers=n,
                    threads_per_worker=self.config["worker-slots"],
                    processes=processes,
                    # Threads mode talks in-process (inproc://) and opens no port;
                    # processes mode listens on loopback only.
                    **({"host": "127.0.0.1", "scheduler_port": 0} if processes else {}),
                    # Dask's HTTP servers (metrics, and the dashboard when asked for)
                    # would otherwise bind the host's address; keep them on loopback.
                    dashboard_address="127.0.0.1:0" if self.config["dashboard"] else None,
                    scheduler_kwargs={"dashboard": self.config["dashboard"], "dashboard_address": "127.0.0.1:0"},
                    worker_dashboard_address="127.0.0.1:0",
                    security=security,
                    memory_limit=self.config["memory-limit"],
                )
                return Client(self.cluster, set_as_default=False)
        except (OSError, RuntimeError) as exc:
            if self.cluster is not None:
                self.cluster.close()
            raise ClusterError(f"could not reach the Dask cluster at {address or 'the embedded LocalCluster'}: {exc}") from exc

    @property
    def dashboard_link(self) -> str | None:
        """The Dask dashboard's address, when one runs."""
        return self.client.dashboard_link if self.config["dashboard"] or self.cluster is None else None

    def _on_event(self, event: Any) -> None:
        _, msg = event
        if isinstance(msg, dict) and msg.get("token") == self.token:
            data = dict(msg)
            data.pop("token")
            self.record_remote(data)

    # -- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        """Stop the controllers and release the client and the embedded cluster."""
        if self.closed:
            return
        self.closed = True
        self.plugins.notify("nalar_runtime_closing", runtime=self)
        self.controller.stop()
        self._close_adapters()
        self._close_state()
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)
        _task.RUNTIMES.pop(self.token, None)
        # Closing an embedded cluster with results still held makes Dask log that
        # it "lost computed tasks"; nothing is lost that anyone can still ask for.
        quiet = [logging.getLogger(n) for n in ("distributed.scheduler", "distributed.core", "distributed.worker")]
        levels = [q.level for q in quiet]
        if self.cluster is not None:
            for q in quiet:
                q.setLevel(logging.CRITICAL)
        try:
            self.client.close()
        finally:
            try:
                if self.cluster is not None:
                    self.cluster.close()
            finally:
                for q, lvl in zip(quiet, levels):
                    q.setLevel(lvl)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def set_policy(self, policy: Any) -> None:
        """Switch the active policy (a name or a policy object) without stopping."""
        obj = self.plugins.policy(policy) if isinstance(policy, str) else policy
        if isinstance(policy, str):
            obj.name = policy
        self.policy, self.policy_name = obj, getattr(obj, "name", type(obj).__name__)
        self.controller.policy = obj
        self.plane.chooser = obj.choose

    def register_plugin(self, plugin: Any, name: str | None = None) -> str:
        """Register a pluggy plugin (validated now; see :mod:`nalar_plugin.hookspecs`)."""
        return self.plugins.register(plugin, name)

    # -- sessions ------------------------------------------------------------------
    def session(
        self,
        session_id: str | None = None,
        *,
        priority: float | None = None,
        deadline: float | None = None,
        expected_s: float | None = None,
    ) -> _SessionScope:
        """Set the session (and default priority, deadline, expected service) of calls made inside.

        ``expected_s`` hints the session's total service time, for ``srtf``/``lpt``.

        Works as ``with rt.session("s1"):`` and ``async with rt.session("s1"):``.
        """
        return _SessionScope(session_id or new_id("s"), priority, deadline, expected_s)

    # -- calls ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeStateError("this Runtime is closed")

    def submit_call(self, stub: Stub, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Future:
        """Make a call of ``stub`` and return its future at once."""
        self._check_open()
        call, deps = self.prepare(stub, stub.name, stub.method, args, kwargs, options)
        d = stub.directives
        call.resources = dict(d.resources)
        call.stateful = d.stateful
        call.extra.update(options.get("extra") or {})
        hint = options.get("expected_s", (_options_var.get() or {}).get("expected_s"))
        if hint is not None:
            call.extra["expected_s"] = hint
        self.plane.ensure_component(stub.name, d.max_concurrency)
        self.plugins.notify("nalar_call_created", call=call)
        reason = None
        try:
            reason = self.plugins.hook.nalar_call_veto(call=call)
            if call.resources:
                self._check_resources(call.resources, stub.name)
        except Exception as exc:
            fail(call, exc)
            return call.future
        if reason is not None:
            fail(call, CallVetoedError(f"call {call.context.call_id} of {stub.name} vetoed: {reason}"))
            return call.future
        self.when_ready(call, deps, self._release)
        return call.future

    def _release(self, call: Call) -> None:
        if self.closed:
            fail(call, RuntimeStateError("the Runtime closed before the call was admitted"))
            return
        deps: list[Future] = []
        from ._calls import collect_futures

        collect_futures(call.args, deps)
        collect_futures(call.kwargs, deps)
        exc = self.failed_input(deps)
        if exc is not None:
            fail(call, exc)
            return
        self.plane.enqueue(call)

    def _check_resources(self, needs: dict[str, float], component: str) -> None:
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        offered = {addr: w.get("resources", {}) or {} for addr, w in workers.items()}
        if any(all(res.get(k, 0) >= v for k, v in needs.items()) for res in offered.values()):
            return
        raise UnsatisfiableResourcesError(
            f"{component} needs resources {needs}, which no worker offers; "
            f"workers offer {list(offered.values()) or 'nothing (no workers)'}. "
            "Start workers with --resources (or LocalCluster(resources=...)), or change the directive."
        )

    def _dispatch(self, call: Call, ctl: LocalController) -> None:
        """Admit ``call`` on ``ctl``'s instance: submit its Dask task."""
        ctx = call.context
        self.plugins.notify("nalar_call_admitted", call=call, instance=ctl.instance)
        self._mark(ctx, "running")
        target = call.target
        args = replace_futures(call.args, lambda f: f._dask_future)
        kwargs = replace_futures(call.kwargs, lambda f: f._dask_future)
        workers = call.extra.get("workers")
        if call.extra.get("component_call"):
            # Late binding: only now is the instance known, so only now does the
            # call learn how to reach it.
            address = ctl.address
            if isinstance(address, HostedAddress):
                method = _task.MethodTarget(address.object_id, ctx.method, target.is_async)
                target = Stub(method, ctx.component, target.directives, ctx.method)
                target.is_async = method.is_async
                workers = [address.worker]
            else:
                args = (address, *args)
        fn = _task.run_call_async if getattr(target, "is_async", False) else _task.run_call
        dask_future = self.client.submit(
            fn, target, args, kwargs, ctx, self.token,
            # A retry (attempt > 0) needs a fresh Dask key: the failed one is still known.
            key=f"{ctx.component}-{ctx.call_id}" + (f"-{ctx.attempt}" if ctx.attempt else ""),
            pure=False,
            priority=int(ctx.priority),
            resources=call.resources or None,
            workers=workers,
            allow_other_workers=False if workers else None,
            retries=0,
        )
        call.future._attach(dask_future)
        dask_future.add_done_callback(lambda df: self._on_done(call, df))

    def _on_done(self, call: Call, dask_future: Any) -> None:
        state = {"finished": FINISHED, "error": ERROR}.get(dask_future.status, CANCELLED)
        if state != FINISHED and self._maybe_retry(call, dask_future):
            return
        self.plane.complete(call)
        call.future._finish(state)
        self.plugins.notify("nalar_call_finished", call=call, status=state, error=None)

    def _mark(self, ctx: Any, status: str) -> None:
        with self._graph_lock:
            node = self._graphs.get(ctx.session, {}).get(ctx.call_id)
            if node is not None:
                node.status = status

    # -- components ---------------------------------------------------------------------
    def deploy(
        self,
        name: str,
        instances: Any,
        *,
        n: int | None = None,
        capacity: int | None = None,
        stateful: bool = True,
        resources: dict[str, float] | None = None,
    ) -> list[str]:
        """Declare the component ``name`` and its instances.

        Args:
            name: Component name; calls reach it with ``rt.call(name, method, ...)``.
            instances: A list of objects (external endpoints such as chat models or
                engines; each object is one instance and is sent with each call
                admitted to it), or a factory (a class or callable) that makes one
                object per instance, hosted on Dask workers.
            n: Instances to make with a factory (default 1).
            capacity: Concurrent calls per instance (``None``: no bound).
            stateful: Sessions keep affinity to the instance that served them.
            resources: Dask worker resources each call needs.

        Returns:
            The instance ids.

        Raises:
            ConfigError: The name is taken, or no instance was given.
        """
        self._check_open()
        if name in self._deployed:
            raise ConfigError(f"component {name!r} is already deployed")
        directives = Directives(kind="agent", stateful=stateful, resources=dict(resources or {}), max_concurrency=capacity)
        directives.validate(name)
        if isinstance(instances, (list, tuple)):
            if not instances:
                raise ConfigError(f"component {name!r} needs at least one instance")
            # Chat models are wrapped so they travel to workers (Dask pickles every
            # argument); other objects go as they are.
            addresses: list[Any] = self._endpoint_addresses(name, list(instances))
            probe = addresses[0]
        elif callable(instances):
            if isinstance(instances, ClassStub):
                instances = instances.cls  # the hosted object is the plain class's instance
            workers = sorted(self.client.scheduler_info(n_workers=-1).get("workers", {}))
            if not workers:
                raise ClusterError("the cluster has no workers to host instances on")
            addresses = []
            made = []
            for i in range(n or 1):
                object_id = new_id("o")
                create = Stub(_task.CreateTarget(instances, object_id), f"{name}#init", Directives(), "__init__")
                made.append(self.submit_call(create, (), {}, extra={"workers": [workers[i % len(workers)]]}))
                addresses.append(HostedAddress(object_id, workers[i % len(workers)]))
            for fut in made:
                fut.result()
            probe = instances
        else:
            raise ConfigError(f"component {name!r}: instances must be a list of objects or a factory")
        self._deployed[name] = (probe, directives)
        return self.plane.add_component(name, len(addresses), capacity, addresses=addresses)

    def call(self, name: str, method: str, *args: Any, **kwargs: Any) -> Future:
        """Call ``method`` of the deployed component ``name``; the instance is chosen at admission."""
        return self.call_with(name, method, args, kwargs)

    def call_with(self, name: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Future:
        """Like :meth:`call`, with call options (``priority``, ``session``, ``extra``, ...)."""
        if name not in self._deployed:
            raise ConfigError(f"no component named {name!r}; deployed: {sorted(self._deployed) or 'none'}")
        probe, directives = self._deployed[name]
        stub = ComponentStub(name, method, method_is_async(probe, method), directives)
        extra = {"component_call": True, **(options.pop("extra", None) or {})}
        return self.submit_call(stub, args, kwargs, extra=extra, **options)  # type: ignore[arg-type]

    def component(self, name: str) -> ComponentHandle:
        """A handle whose attributes make calls: ``rt.component("llm").generate(...)``."""
        if name not in self._deployed:
            raise ConfigError(f"no component named {name!r}; deployed: {sorted(self._deployed) or 'none'}")
        return ComponentHandle(self, name)

    def instances(self, name: str) -> dict[str, Any]:
        """The instances of component ``name``: id -> address (endpoint object or hosted address)."""
        return {i: self.plane.instances[i].address for i in self.plane.components.get(name, []) if i in self.plane.instances}

    # -- hosted objects ---------------------------------------------------------------
    def host_object(self, stub: ClassStub, args: tuple[Any, ...], kwargs: dict[str, Any]) -> HostedObject:
        """Create a class stub's object on one worker; its methods become stubs."""
        self._check_open()
        workers = sorted(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        if not workers:
            raise ClusterError("the cluster has no workers to host an object on")
        worker = workers[self._worker_pick % len(workers)]
        self._worker_pick += 1
        object_id = new_id("o")
        create = Stub(_task.CreateTarget(stub.cls, object_id), stub.name, stub.directives, "__init__")
        created = self.submit_call(create, args, kwargs, extra={"workers": [worker]})
        return HostedObject(self, stub, object_id, worker, created)

    # -- views ---------------------------------------------------------------------
    def graph(self, session: str) -> SessionGraph:
        """The dynamic dependency graph of ``session`` (``.to_json()``, ``.to_dot()``)."""
        return super().graph(session)

    def cluster_view(self) -> dict[str, Any]:
        """One view of every instance: all drivers' when the global controller is shared."""
        if isinstance(self.controller, ReportingController):
            return self.controller.view()
        snap = self.plane.snapshot(self.controller.ticks)
        return {"drivers": [self.token], "ticks": self.controller.ticks, "policy": self.policy_name, **snapshot_to_dict(snap)}

    def stats(self) -> dict[str, Any]:
        """The controllers' metrics: per-instance stats and the global controller's ticks."""
        snap = self.plane.snapshot()
        return {"instances": {k: vars(v) for k, v in snap.instances().items()}, "control": self.controller.stats()}

    def __repr__(self) -> str:
        where = "closed" if self.closed else getattr(self.client, "scheduler", None) and self.client.scheduler.address
        return f"<nalar.Runtime policy={self.policy_name} {where}>"


class HostedObject:
    """The driver's handle on an object hosted on a worker; its public methods are stubs."""

    def __init__(self, rt: Runtime, stub: ClassStub, object_id: str, worker: str, created: Future) -> None:
        self._rt = rt
        self._stub = stub
        self.object_id = object_id
        self.worker = worker
        self.created = created

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._stub.methods:
            raise AttributeError(f"{self._stub.name} has no public method {name!r}")
        import inspect

        is_async = inspect.iscoroutinefunction(getattr(self._stub.cls, name))
        target = _task.MethodTarget(self.object_id, name, is_async)
        method = Stub(target, self._stub.name, self._stub.directives, name)
        method.is_async = is_async
        rt, created, worker = self._rt, self.created, self.worker

        def call(*args: Any, **kwargs: Any) -> Future:
            return rt.submit_call(method, args, kwargs, after=[created], extra={"workers": [worker]})

        call.__name__ = name
        return call

    def __repr__(self) -> str:
        return f"<nalar hosted {self._stub.name} {self.object_id} on {self.worker}>"


class _SessionScope:
    def __init__(self, session: str, priority: float | None, deadline: float | None, expected_s: float | None) -> None:
        self.session = session
        pairs = (("priority", priority), ("deadline", deadline), ("expected_s", expected_s))
        self._opts = {k: v for k, v in pairs if v is not None}
        self._tokens: list[tuple[Any, Any]] = []

    def __enter__(self) -> str:
        self._tokens.append((_session_var.set(self.session), _options_var.set(self._opts or None)))
        return self.session

    def __exit__(self, *exc: Any) -> None:
        s, o = self._tokens.pop()
        _session_var.reset(s)
        _options_var.reset(o)

    async def __aenter__(self) -> str:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__()
