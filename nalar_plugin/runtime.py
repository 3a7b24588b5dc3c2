"""The Runtime: the composition of nalar's services over one Dask cluster.

``with Runtime() as rt:`` starts an embedded Dask ``LocalCluster`` in this process
(scheduler and dashboard on 127.0.0.1 only); ``Runtime(processes=True)`` uses
worker processes; ``Runtime(address="tcp://host:port")`` joins a running cluster.
While a Runtime is open, stub calls return futures scheduled by its controllers.

The Runtime owns its services and hands each the few others it needs when it
makes them; no service reaches back through the Runtime:

* the cluster (:mod:`nalar_plugin.cluster`) and the executors on its workers
  (:mod:`nalar_plugin.execution`, :mod:`nalar_plugin.links`);
* the state service (:mod:`nalar_plugin.state.service`): store, journal, lock;
* the local controllers (:class:`~nalar_plugin.scheduler.ControlPlane`) and the
  global controller (:class:`~nalar_plugin.scheduler.GlobalController`);
* the dispatcher (:mod:`nalar_plugin.dispatch`), the call path
  (:mod:`nalar_plugin.calls`), the components (:mod:`nalar_plugin.components`);
* the LangChain adapters (:mod:`nalar_plugin.adapters`);
* the operators' view (:mod:`nalar_plugin.monitor`): the call counters, and the
  nalar page and metrics in the scheduler's dashboard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dask.utils import parse_timedelta

from . import config as _config
from . import heap
from .adapters.service import AdapterService
from .calls import CallPath
from .cluster import check_main_guard, close_cluster, connect
from .components import ComponentHandle, Components, DriverRequests, LocalSink, WorkerProvisioner
from .context import _options_var, _session_var, active_runtime, new_id, register_runtime, unregister_runtime
from .dispatch import Dispatcher
from .errors import ClusterError, RuntimeStateError, StateError
from .future import Future
from .graph import CallGraph, SessionGraph
from .links import ExecutorPlugin
from .monitor import HISTORY_STEP, DashboardLink, Monitor, page_url
from .plugins import PluginManager
from .scheduler.controller import ControlPlane
from .scheduler.global_controller import GlobalController
from .scheduler.leases import RateLimiter
from .scheduler.compose import compose
from .scheduler.shared import SharedDecisions, snapshot_to_dict
from .state.checkpoint import DiskcacheSaver
from .state.journal import Journal, JournalRecord, Retention
from .state.retry import RetryPolicy
from .state.service import StateService
from .state.store import Store
from .stubs import ClassStub, HostedObject, Stub

__all__ = ["Runtime", "active_runtime"]

logger = logging.getLogger(__name__)


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return float(parse_timedelta(value, default="seconds"))


class Runtime:
    """Serve stub and adapter calls as futures on a Dask cluster.

    Args:
        address: Scheduler address of an existing cluster; ``None`` starts an
            embedded ``LocalCluster`` in this process.
        processes: Embedded cluster with worker processes instead of threads.
        n_workers: Workers of the embedded cluster.
        worker_slots: Synchronous call bodies one worker runs at once (see
            :mod:`nalar_plugin.config`).
        policy: Name of the active policy, or names joined by ``+`` with arguments, such as
            ``"least_loaded+autoscale:max_instances=4"`` (see
            :func:`~nalar_plugin.scheduler.compose.compose`).
        tick_interval: Global controller period, seconds or a string such as ``"100ms"``.
        security: A ``distributed.security.Security`` (TLS), passed to Dask.
        state_dir: Directory of the managed state store.
        **settings: Any other ``nalar`` setting, with ``_`` for ``-``.

    Raises:
        ConfigError: A bad setting.
        PolicyNotFoundError: No installed policy has that name.
        ClusterError: The cluster could not be started or reached.
        StateError: The state directory cannot be used (corrupted, foreign,
            read-only, or owned by another Runtime).
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
        self.config = _config.resolve(
            processes=processes, n_workers=n_workers, worker_slots=worker_slots, policy=policy,
            tick_interval=tick_interval, state_dir=state_dir, **settings,
        )
        cfg = self.config
        if cfg["processes"] and address is None:
            check_main_guard()  # before anything else: a spawned worker importing the script stops here
        self.token = new_id("rt")
        self.closed = False
        self.plugins = PluginManager()
        self.policy_name = str(cfg["policy"])
        self.policy = compose(self.plugins, self.policy_name)
        self.policy.name = self.policy_name
        self.retry_policy = RetryPolicy.from_config(cfg)
        retention = Retention(_seconds(cfg["journal-max-age"]), cfg["journal-max-sessions"])
        # The state directory is checked first: a bad one fails before any cluster starts.
        self.plane = ControlPlane(self._dispatch, seed=cfg["seed"], session_cap=cfg["session-cache"],
                                  affinity_slack=getattr(self.policy, "affinity_slack", None),
                                  request_gap_s=cfg["request-gap"],
                                  fail=lambda call, exc: self.calls.fail(call, exc))
        try:
            self.state = StateService(cfg["state-dir"], allowed_types=cfg["state-allowed-types"],
                                      retention=retention, gc_interval=_seconds(cfg["journal-gc-interval"]),
                                      active=self.plane.is_active)
        except StateError as exc:
            # Same class, so callers can tell a foreign directory from a read-only one.
            raise type(exc)(f"the Runtime cannot use its state directory "
                            f"(nalar.state-dir={cfg['state-dir']!r}): {exc}") from exc
        try:
            self.cluster, self.client = connect(cfg, address, security)
        except BaseException:
            self.state.close()
            raise
        try:
            self._start(cfg, address)
        except BaseException:
            self._teardown()
            raise
        register_runtime(self)
        # What the cluster brought lives as long as the Runtime: full GC passes skip it.
        self._frozen = bool(cfg["gc-freeze"]) and heap.freeze()
        self.plugins.notify("nalar_runtime_started", runtime=self)

    def _start(self, cfg: dict[str, Any], address: str | None) -> None:
        self.graph_store = CallGraph(cfg["graph-sessions"])
        # Bodies that run in this process see this Runtime as theirs (``active_runtime()``).
        sink = LocalSink()
        self._sink = sink
        requests = DriverRequests(self.state.journal)
        try:
            self.client.register_plugin(ExecutorPlugin(cfg["worker-slots"], cfg["worker-threads-max"],
                                                       cfg["worker-thread-idle"]))
        except Exception as exc:
            raise ClusterError(
                f"the Dask workers could not start nalar's executor: {exc}. Every worker's environment "
                "needs nalar-plugin installed"
            ) from exc
        in_process = self.cluster is not None and not cfg["processes"]
        self.dispatcher = Dispatcher(self.client, self.cluster, in_process=in_process, token=self.token,
                                     allowed_types=self.state.allowed_types, handlers=requests, sink=self,
                                     access=lambda: self.state.journal)
        self.calls = CallPath(token=self.token, plane=self.plane, plugins=self.plugins, state=self.state,
                              graph=self.graph_store, retry=self.retry_policy, send=self.dispatcher.send,
                              cancel_remote=self.dispatcher.cancel, check_resources=self.dispatcher.check_resources,
                              sink=self)
        # Rate limits: buckets in the scheduler (shared by every driver), leases spent here.
        self.limits = RateLimiter(self.client, self.token, self.plane.refresh, output_tokens=cfg["rate-output-tokens"])
        self.plane.limiter = self.limits
        self.components = Components(self.plane, self.calls, self.dispatcher, self.plugins, sink, self.limits)
        sink.bind(self.calls, self.components)
        # provision/kill of the instances hosted on the workers (factory and stub components).
        self.provisioner = WorkerProvisioner(self.plane, self.components, self.dispatcher)
        self.plugins.register(self.provisioner, "nalar-worker-provisioner")
        requests.bind(self.calls, self.components)
        self.controller = GlobalController(self.plane, self.policy, interval=cfg["tick-interval"], plugins=self.plugins)
        self.controller.every(1.0, self.dispatcher.refresh)
        # The operators' view: counts on the call path, the page and metrics in the scheduler.
        self.monitor = Monitor(self.token, self.controller, self.state.journal, in_flight=self.calls.in_flight,
                               policy=lambda: self.policy_name, rate_limits=self.limits.stats)
        self.plugins.register(self.monitor, "nalar-monitor")
        self.controller.every(HISTORY_STEP, self.monitor.sample)
        self.dashboard = DashboardLink(self.client, getattr(self.cluster, "scheduler", None), self.monitor,
                                       self.controller.every)
        mode = cfg["global-controller"]
        if mode == "auto":
            mode = "scheduler" if address is not None else "local"
        self._shared: SharedDecisions | None = None
        if mode == "scheduler":
            # Several drivers on one cluster share one global controller in the
            # scheduler; this driver reports its snapshot and applies what it is sent.
            self._shared = SharedDecisions(self.controller, self.client, self.token, policy=self.policy_name)
        self.plane.chooser = self.policy.choose
        self.adapters = AdapterService(calls=self.calls, components=self.components, plugins=self.plugins,
                                       token=self.token, by_ref=in_process, requests=requests)
        self.controller.start()
        self.dispatcher.wait_for_workers()

    def _dispatch(self, call: Any, ctl: Any) -> None:
        self.calls.dispatch(call, ctl)

    # -- lifecycle ---------------------------------------------------------------
    @property
    def dashboard_link(self) -> str | None:
        """The nalar page in Dask's dashboard (``<dashboard>/nalar``), when a dashboard runs.

        Until this version it was the Dask dashboard's own address, which is now
        :attr:`dask_dashboard_link`. ``None`` also when the cluster's scheduler could
        not start the page (its environment lacks nalar-plugin).
        """
        link = self.dask_dashboard_link
        return None if link is None or not self.dashboard.available else page_url(link)

    @property
    def dask_dashboard_link(self) -> str | None:
        """The Dask dashboard's address (its ``/status`` page), when one runs.

        Embedded, it is the address the dashboard listens on (127.0.0.1).
        """
        if not (self.config["dashboard"] or self.cluster is None):
            return None
        link: str | None = self.client.dashboard_link
        server = getattr(getattr(self.cluster, "scheduler", None), "http_server", None)
        if link is not None and server is not None and getattr(server, "port", None):
            parts = urlsplit(link)
            link = urlunsplit((parts.scheme, f"{server.address}:{server.port}", parts.path, parts.query, ""))
        return link

    def close(self) -> None:
        """Stop making calls, let running ones finish and commit, then release everything.

        Calls still queued fail with :class:`~nalar_plugin.errors.RuntimeStateError`;
        running calls get ``nalar.close-timeout`` to finish (their results are
        journaled), then fail the same way.
        """
        if self.closed:
            return
        self.closed = True
        self.plugins.notify("nalar_runtime_closing", runtime=self)
        unregister_runtime(self)
        try:
            self._teardown()
        finally:
            if self._frozen:
                heap.thaw()

    def _teardown(self) -> None:
        for step in (
            lambda: self.controller.stop(),
            lambda: self.dashboard.close(),
            lambda: self.adapters.close(),
            lambda: self.calls.close(_seconds(self.config["close-timeout"]) or 0.0),
            lambda: self.limits.close(),
            lambda: self.dispatcher.close(),
        ):
            try:
                step()
            except AttributeError:  # a service that was never made
                pass
            except Exception:
                logger.exception("closing the Runtime: a step failed")
        try:
            self.state.close()
        finally:
            close_cluster(self.cluster, self.client)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def set_policy(self, policy: Any) -> None:
        """Switch the active policy (a name or a policy object) without stopping."""
        obj = compose(self.plugins, policy) if isinstance(policy, str) else policy
        if isinstance(policy, str):
            obj.name = policy
        self.policy, self.policy_name = obj, getattr(obj, "name", type(obj).__name__)
        self.controller.policy = obj
        self.plane.chooser = obj.choose
        self.plane.affinity_slack = getattr(obj, "affinity_slack", None)

    def register_plugin(self, plugin: Any, name: str | None = None) -> str:
        """Register a pluggy plugin (validated now; see :mod:`nalar_plugin.hookspecs`)."""
        return self.plugins.register(plugin, name)

    # -- sessions ------------------------------------------------------------------
    def session(self, session_id: str | None = None, *, priority: float | None = None,
                deadline: float | None = None, expected_s: float | None = None,
                on_slo: str | None = None) -> _SessionScope:
        """Set the session (and default priority, deadline, expected service) of calls made inside.

        ``expected_s`` hints the session's total service time, for ``srtf``/``lpt``.
        ``on_slo`` says what admission does with a call expected to break its SLO (its
        component's ``slo_s``, and with ``on_slo`` given, its deadline too):
        ``"reject"`` fails it at once with :class:`~nalar_plugin.errors.AdmissionRejectedError`,
        ``"defer"`` queues it behind the calls that can still make theirs.

        Works as ``with rt.session("s1"):`` and ``async with rt.session("s1"):``.

        Raises:
            ConfigError: A priority, deadline or hint that is not a finite number, or
                an ``on_slo`` other than ``"reject"`` and ``"defer"``.
        """
        opts = _config.call_options(priority=priority, deadline=deadline, expected_s=expected_s, on_slo=on_slo)
        return _SessionScope(session_id or new_id("s"), opts)

    def forget_session(self, session: str) -> int:
        """Delete the journal records, the managed state and the in-memory records of ``session``.

        Its calls run again when made again. Returns the number of keys deleted.
        """
        self.calls.forget_session(session)
        self.plane.forget_session(session)
        self.graph_store.forget(session)
        self.adapters.forget_session(session)
        return self.state.forget_session(session)

    def sessions(self) -> list[str]:
        """The sessions whose call graphs are kept, oldest first."""
        return self.graph_store.sessions()

    # -- calls ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeStateError("this Runtime is closed")

    def submit_call(self, stub: Stub, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Future:
        """Make a call of ``stub`` and return its future at once."""
        self._check_open()
        return self._sink.submit_call(stub, args, kwargs, **_config.checked_options(options))

    def host_object(self, stub: ClassStub, args: tuple[Any, ...], kwargs: dict[str, Any]) -> HostedObject:
        """Create a class stub's object on one worker; its methods become stubs."""
        self._check_open()
        return self._sink.host_object(stub, args, kwargs)

    # -- components ---------------------------------------------------------------------
    def deploy(self, name: str, instances: Any, *, n: int | None = None, capacity: int | None = None,
               stateful: bool = True, resources: dict[str, float] | None = None, slo_s: float | str | None = None,
               on_slo: str = "reject", rpm: float | None = None, tpm: float | None = None,
               burst_s: float = 1.0) -> list[str]:
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
            slo_s: Admission SLO of each call (seconds, or ``"2s"``): a call expected to
                take longer, queueing and service, is shed at admission (see ``on_slo``).
                Shed calls are counted in ``rt.stats()["admission"]``.
            on_slo: ``"reject"`` (fail at once with
                :class:`~nalar_plugin.errors.AdmissionRejectedError`) or ``"defer"`` (queue
                it behind the calls that can make it); a call's own ``on_slo`` wins.
            rpm: Calls started per minute, summed over every driver of the cluster that
                deploys ``name``. A call over the limit waits in its queue until the
                budget refills; it is never dropped.
            tpm: Tokens (input plus output) per minute, likewise: a call reserves an
                estimate (its text's characters / 4 plus its ``max_tokens``, else
                ``nalar.rate-output-tokens``) and is settled with the ``usage_metadata``
                its value reports when it completes.
            burst_s: Seconds of each rate a full bucket holds: over any window of ``W``
                seconds, calls started are at most ``max(1, rpm / 60 x burst_s) + rpm / 60 x W``
                (tokens charged likewise). Waits show in ``rt.stats()["rate_limits"]``.

        Returns:
            The instance ids.

        Raises:
            ConfigError: The name is taken, no instance was given, ``n`` is not an integer >= 1,
                or the SLO, ``on_slo`` or a rate limit (not a number > 0) is invalid.
            ClusterError: The scheduler cannot hold the rate limits.
        """
        self._check_open()
        return self.components.deploy(name, instances, n=n, capacity=capacity, stateful=stateful,
                                      resources=resources, slo_s=slo_s, on_slo=on_slo, rpm=rpm, tpm=tpm,
                                      burst_s=burst_s)

    def add_instance(self, name: str, instance: Any = None, *, worker: str | None = None,
                     ready_at: float | None = None) -> str:
        """Add one instance to the deployed component ``name`` (what a provisioner does); return its id.

        Args:
            name: The component.
            instance: For a component of endpoint objects, the new object (a chat
                model, an engine, a client).
            worker: For a factory component, the worker its new object is made on
                (default: the one hosting the fewest of its instances).
            ready_at: ``time.monotonic()`` before which the instance admits nothing
                (its warm-up); a factory's instance admits once its object exists.

        Raises:
            ConfigError: No such component, the wrong kind of instance, or the component
                is at its ``max_instances``.
        """
        self._check_open()
        return self.components.add_instance(name, instance, worker=worker, ready_at=ready_at)

    def call(self, name: str, method: str, *args: Any, **kwargs: Any) -> Future:
        """Call ``method`` of the deployed component ``name``; the instance is chosen at admission."""
        self._check_open()
        return self.components.call(name, method, args, kwargs)

    def call_with(self, name: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any) -> Future:
        """Like :meth:`call`, with call options (``priority``, ``session``, ``extra``, ...)."""
        self._check_open()
        return self.components.call(name, method, args, kwargs, **_config.checked_options(options))

    def component(self, name: str) -> ComponentHandle:
        """A handle whose attributes make calls: ``rt.component("llm").generate(...)``."""
        return self.components.handle(name)

    def instances(self, name: str) -> dict[str, Any]:
        """The instances of component ``name``: id -> address (endpoint object or hosted address)."""
        return self.components.instances(name)

    # -- LangChain and LangGraph --------------------------------------------------------
    def callback(self, **options: Any) -> Any:
        """A LangChain callback handler that routes a run's calls through nalar.

        See :meth:`nalar_plugin.adapters.service.AdapterService.callback`.
        """
        self._check_open()
        return self.adapters.callback(**options)

    def middleware(self, **options: Any) -> Any:
        """An ``AgentMiddleware`` for ``langchain.agents.create_agent``.

        See :meth:`nalar_plugin.adapters.service.AdapterService.middleware`.
        """
        self._check_open()
        return self.adapters.middleware(**options)

    def wrap_tool_call(self, request: Any, execute: Callable[[Any], Any]) -> Any:
        """A ``ToolNode(tools, wrap_tool_call=rt.wrap_tool_call)`` hook: the call runs on nalar."""
        return self.adapters.wrap_tool_call(request, execute)

    async def awrap_tool_call(self, request: Any, execute: Callable[[Any], Awaitable[Any]]) -> Any:
        """A ``ToolNode(tools, awrap_tool_call=rt.awrap_tool_call)`` hook (async)."""
        return await self.adapters.awrap_tool_call(request, execute)

    def deploy_model(self, name: str, models: Sequence[Any], *, capacity: int | None = None,
                     stateful: bool = True, slo_s: float | str | None = None, on_slo: str = "reject",
                     rpm: float | None = None, tpm: float | None = None, burst_s: float = 1.0) -> list[str]:
        """Declare the replicas of a chat model as the component ``name``.

        ``slo_s`` and ``on_slo`` are admission's, and ``rpm``, ``tpm`` and ``burst_s`` its
        rate limits, as in :meth:`deploy`. See
        :meth:`nalar_plugin.adapters.service.AdapterService.deploy_model`.
        """
        self._check_open()
        return self.adapters.deploy_model(name, models, capacity=capacity, stateful=stateful, slo_s=slo_s,
                                          on_slo=on_slo, rpm=rpm, tpm=tpm, burst_s=burst_s)

    def adapter_runs(self, session: str | None = None) -> list[Any]:
        """The LangChain runs the adapters recorded (of one session if given), oldest first."""
        return self.adapters.runs(session)

    # -- state ---------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The Runtime's state :class:`~nalar_plugin.state.Store`."""
        return self.state.store

    @property
    def journal(self) -> Journal:
        """The call journal and managed state over :attr:`store`."""
        return self.state.journal

    def checkpointer(self, **kwargs: Any) -> DiskcacheSaver:
        """Return a LangGraph checkpointer bound to the Runtime's store.

        ``graph = builder.compile(checkpointer=rt.checkpointer())``; a driver
        restarted with the same state directory resumes each thread from its
        last checkpoint, and the journal keeps committed tool effects from
        running twice.

        Args:
            **kwargs: Passed to :class:`~nalar_plugin.state.DiskcacheSaver` (``serde=``).
        """
        return DiskcacheSaver(self.store, **kwargs)

    def journal_records(self, session: str) -> list[JournalRecord]:
        """The committed calls of ``session``, oldest first."""
        return self.journal.records(session)

    # -- views ---------------------------------------------------------------------
    def graph(self, session: str) -> SessionGraph:
        """The dynamic dependency graph of ``session`` (``.to_json()``, ``.to_dot()``)."""
        return self.graph_store.graph(session)

    def cluster_view(self) -> dict[str, Any]:
        """One view of every instance: all drivers' when the global controller is shared."""
        if self._shared is not None:
            return self._shared.view()
        snap = self.plane.snapshot(self.controller.ticks)
        return {"drivers": [self.token], "ticks": self.controller.ticks, "policy": self.policy_name,
                **snapshot_to_dict(snap)}

    def stats(self) -> dict[str, Any]:
        """The controllers' metrics: per-instance stats, the global controller's ticks, admission.

        ``admission`` has the calls shed at admission: ``rejected`` and ``deferred`` in
        all, and per component with an SLO (or a shed call) its SLO and counts.
        ``rate_limits`` has, per component deployed with ``rpm``/``tpm``, its limits and
        this driver's counts: calls ``admitted``, calls ``limited`` (that waited for budget)
        and ``wait_s`` (their waits, in all), tokens reserved, used, charged as debt and
        refunded (see :meth:`nalar_plugin.scheduler.leases.RateLimiter.stats`).
        """
        snap = self.plane.snapshot()
        control = self._shared.stats() if self._shared is not None else self.controller.stats()
        per = self.plane.admission_stats()
        admission = {"rejected": sum(c["rejected"] for c in per.values()),
                     "deferred": sum(c["deferred"] for c in per.values()), "components": per}
        return {"instances": {k: vars(v) for k, v in snap.instances().items()}, "control": control,
                "calls_in_flight": self.calls.in_flight(), "workers": self.dispatcher.busy(),
                "admission": admission, "rate_limits": self.limits.stats()}

    def __repr__(self) -> str:
        where = "closed" if self.closed else getattr(self.client, "scheduler", None) and self.client.scheduler.address
        return f"<nalar.Runtime policy={self.policy_name} {where}>"


class _SessionScope:
    def __init__(self, session: str, options: dict[str, Any]) -> None:
        self.session = session
        self._opts = options
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

