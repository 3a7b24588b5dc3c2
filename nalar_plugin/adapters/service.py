"""The adapter service of a Runtime: ``callback()``, ``middleware()``, ToolNode hooks, model components.

Made by the Runtime with the services it needs (the call path, the
components, the plugin manager). The first use of an adapter installs the
intercepted paths (:mod:`.interception`), reference-counted across Runtimes;
closing the service releases them.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel

from ..calls import CallPath
from ..components import Components, DriverRequests
from ..config import slo_mode
from ..errors import ConfigError, DirectiveError
from ..hookspecs import hookimpl
from ..plugins import PluginManager
from ..stubs import Directives
from . import interception
from .activation import Switch, awrap_with_switch, wrap_with_switch
from .callback import NalarCallbackHandler
from .events import Channels
from .recorder import Recorder, RunRecord
from .remote import ModelEndpoint
from .shipping import sendable

__all__ = ["AdapterService"]

_OPTION_NAMES = ("session", "priority", "deadline", "expected_s", "on_slo", "directives", "ship")


def _max_tokens(model: Any) -> int | None:
    """A chat model's own bound on its output, if it has one (``max_tokens`` and its aliases)."""
    for attr in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = getattr(model, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class _EndpointPlugin:
    """Makes chat models deployed as instances into :class:`ModelEndpoint` objects."""

    def __init__(self, service: AdapterService) -> None:
        self._service = service

    @hookimpl
    def nalar_endpoint(self, obj: Any, component: str, index: int) -> Any:
        """Wrap a chat model; other objects stay as they are."""
        if isinstance(obj, BaseChatModel):
            return self._service.endpoint(obj, component, index)
        return None


class AdapterService:
    """LangChain and LangGraph adapters of one Runtime.

    Args:
        calls: The call path.
        components: The components (deployed models).
        plugins: The plugin manager.
        token: The Runtime's token.
        by_ref: Every worker lives in this process (calls never need to travel).
        requests: The driver's handler of workers' requests (events of shipped calls).
    """

    def __init__(self, *, calls: CallPath, components: Components, plugins: PluginManager, token: str,
                 by_ref: bool, requests: DriverRequests) -> None:
        self.calls = calls
        self.components = components
        self.plugins = plugins
        self.token = token
        self.ships_models = not by_ref
        self.recorder = Recorder()
        self.channels = Channels()
        requests.on_event = self.channels.deliver
        self.closed = False
        self._lock = threading.Lock()
        self._models: dict[int, tuple[Any, str]] = {}  # id(model) -> (model, component)
        self._directives: dict[tuple[str, str, int, str, str], tuple[Directives, Directives | None]] = {}
        self._warned: set[int] = set()
        self._installed = False
        self._default: Switch | None = None
        plugins.register(_EndpointPlugin(self), name=f"nalar-adapters-{token}")

    def _install(self) -> None:
        with self._lock:
            if self.closed:
                return
            if not self._installed:
                interception.install()
                self._installed = True

    # -- switches ----------------------------------------------------------------
    def _switch(self, options: dict[str, Any]) -> Switch:
        unknown = sorted(set(options) - set(_OPTION_NAMES))
        if unknown:
            raise ConfigError(f"unknown adapter option(s) {unknown}; known: {list(_OPTION_NAMES)}")
        extra: dict[str, Any] = {}
        if options.get("expected_s") is not None:
            extra["expected_s"] = options["expected_s"]
        if options.get("on_slo") is not None:
            extra["on_slo"] = slo_mode(options["on_slo"])
        directives = options.get("directives")
        if directives:
            if not isinstance(directives, dict):
                raise DirectiveError(f"directives must map component names to directives, got {directives!r}")
            for component, given in directives.items():
                try:
                    Directives(**given).validate(component)  # fail now, not at the first call
                except TypeError as exc:
                    raise DirectiveError(f"{component!r}: {exc}") from exc
            extra["directives"] = dict(directives)
        ship = options.get("ship")
        if ship is not None:
            if not isinstance(ship, bool) and not (isinstance(ship, (list, tuple, set, frozenset))
                                                   and all(isinstance(n, str) for n in ship)):
                raise ConfigError(f"ship must be True, False or a collection of tool names, got {ship!r}")
            extra["ship"] = ship if isinstance(ship, bool) else frozenset(ship)
        for name in ("priority", "deadline"):
            value = options.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or value != value or value in (float("inf"), float("-inf"))):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        self._install()
        return Switch(self, session=options.get("session"), priority=options.get("priority"),
                      deadline=options.get("deadline"), options=extra)

    def callback(self, **options: Any) -> NalarCallbackHandler:
        """Return a LangChain callback handler that routes a run's calls through nalar.

        Add it to a run's ``config["callbacks"]``: every tool call and chat-model
        call of that run, nested ones included, is then a nalar call, scheduled
        by the controllers. Each runs where it lives (in the caller, once
        admitted) unless it is shipped: calls of models deployed with
        :meth:`deploy_model` on a cluster of worker processes, and tools named
        by ``ship``. The session is the run's ``thread_id``; ``nalar_priority``,
        ``nalar_deadline``, ``nalar_session`` and ``nalar_expected_s`` in
        ``config["metadata"]`` or ``config["configurable"]`` set a run's context.

        Args:
            **options: ``session`` (of every call; default the thread id),
                ``priority``, ``deadline`` (absolute, ``time.time()`` seconds),
                ``expected_s`` (a session's expected service, for size-based
                policies), ``on_slo`` (``"reject"`` or ``"defer"``: what admission does
                with a call expected to break its component's SLO or the deadline), ``directives`` (per component, e.g.
                ``{"search": {"max_concurrency": 4}}``; ``{"tool": {"idempotent":
                True}}`` runs a tool without the journal), ``ship`` (``True``,
                or tool names: run those tools' bodies on the cluster's workers).

        Returns:
            The handler (it also keeps the run tree: ``.runs()``, ``.tree()``).

        Raises:
            ConfigError: An unknown option or a bad value.
        """
        return NalarCallbackHandler(self._switch(options), self.recorder, self.plugins)

    def middleware(self, **options: Any) -> Any:
        """Return an ``AgentMiddleware`` for ``langchain.agents.create_agent``.

        It implements ``wrap_model_call``, ``wrap_tool_call`` and their async
        twins: the agent's model and tool calls become nalar calls. The options
        are those of :meth:`callback`. Needs the ``langchain`` package.
        """
        from .middleware import NalarMiddleware  # noqa: PLC0415 - langchain is an optional dependency

        return NalarMiddleware(self._switch(options))

    def _default_switch(self) -> Switch:
        if self._default is None:
            self._default = self._switch({})
        return self._default

    def wrap_tool_call(self, request: Any, execute: Callable[[Any], Any]) -> Any:
        """A ``ToolNode(tools, wrap_tool_call=...)`` hook: the call runs on nalar."""
        return wrap_with_switch(self._default_switch(), request, execute)

    async def awrap_tool_call(self, request: Any, execute: Callable[[Any], Awaitable[Any]]) -> Any:
        """A ``ToolNode(tools, awrap_tool_call=...)`` hook (async)."""
        return await awrap_with_switch(self._default_switch(), request, execute)

    # -- what a call needs ---------------------------------------------------------
    def directives(self, switch: Switch, kind: str, component: str, forced: dict[str, Any]) -> Directives:
        """The directives of one component's calls in runs of ``switch`` (cached).

        Tool calls are journaled: a resumed run gets a finished tool's result
        from the journal instead of running its effects again. Model calls have
        no effects to protect, so they are not, unless their directives say
        ``idempotent=False``.
        """
        given = (switch.options.get("directives") or {}).get(component) or {}
        # A deployed model's calls keep its component's affinity, capacity and resources.
        deployed = self.components.directives_of(component) if kind == "model" else None
        # Keyed by what they are made of, not by the switch: a run's handler is made per run.
        key = (kind, component, id(deployed), repr(sorted(given.items())), repr(sorted(forced.items())))
        found = self._directives.get(key)
        if found is not None and found[1] is deployed:
            return found[0]
        defaults: dict[str, Any] = {"idempotent": True} if kind == "model" else {}
        if deployed is not None:
            defaults.update(stateful=deployed.stateful, resources=dict(deployed.resources),
                            max_concurrency=deployed.max_concurrency)
        made = Directives(kind="tool" if kind == "tool" else "agent", **{**defaults, **given, **forced})
        made.validate(component)
        with self._lock:
            if len(self._directives) > 4096:
                self._directives.clear()
            self._directives[key] = (made, deployed)
        return made

    def ships_tool(self, switch: Switch, name: str) -> bool:
        """Whether runs of ``switch`` ship the tool ``name`` to worker processes."""
        if not self.ships_models:  # every worker lives in this process: nothing travels
            return False
        ship = switch.options.get("ship")
        return bool(ship is True or (isinstance(ship, frozenset) and name in ship))

    def first_warning(self, obj: Any) -> bool:
        """True the first time an object is reported as staying where it lives."""
        with self._lock:
            if id(obj) in self._warned:
                return False
            self._warned.add(id(obj))
            return True

    # -- model components -------------------------------------------------------------
    def endpoint(self, model: Any, component: str, index: int) -> ModelEndpoint:
        """Make ``model`` instance ``index`` of ``component`` (the ``nalar_endpoint`` hook).

        Raises:
            NotSendable: The cluster's workers are other processes and the model cannot travel.
        """
        sent = sendable(model, f"chat model {index} of component {component!r}") if self.ships_models else None
        with self._lock:
            self._models[id(model)] = (model, component)
        return ModelEndpoint(model, sent, f"{component}/{index}")

    def component_of(self, model: Any) -> str | None:
        """The deployed component a model object is an instance of, if any."""
        hit = self._models.get(id(model))
        return hit[1] if hit is not None and hit[0] is model else None

    def deploy_model(self, name: str, models: Sequence[Any], *, capacity: int | None = None,
                     stateful: bool = True, slo_s: float | str | None = None, on_slo: str = "reject",
                     rpm: float | None = None, tpm: float | None = None, burst_s: float = 1.0) -> list[str]:
        """Declare the replicas of a chat model as the component ``name``.

        Each model object (several ``ChatOpenAI`` endpoints, simulated engines)
        is one instance. An intercepted call to any of these objects goes to the
        component: the controllers pick its instance at admission, with session
        affinity (``stateful``) and migration. In threads mode the call then
        runs in the caller on that instance's model; with worker processes it
        is shipped to a worker, which runs it on its copy of that model.

        Args:
            name: Component name.
            models: The chat model objects, one per instance.
            capacity: Concurrent calls per instance (``None``: no bound).
            stateful: Sessions keep affinity to the instance that served them.
            slo_s: Admission SLO of each model call (seconds): a call expected to take
                longer, queueing and service, is shed (see :meth:`nalar_plugin.Runtime.deploy`).
            on_slo: ``"reject"`` (the app's model call raises
                :class:`~nalar_plugin.errors.AdmissionRejectedError`) or ``"defer"``.
            rpm: Model calls started per minute, over every driver of the cluster
                (see :meth:`nalar_plugin.Runtime.deploy`).
            tpm: Tokens (input plus output) per minute: a call reserves its prompt's
                characters / 4 plus its ``max_tokens`` (else the first model's
                ``max_tokens``, else ``nalar.rate-output-tokens``) and is settled with its
                ``usage_metadata`` when it completes.
            burst_s: Seconds of each rate a full bucket holds.

        Returns:
            The instance ids.

        Raises:
            NotSendable: A model cannot be sent to the workers of this cluster.
            ConfigError: The name is taken, no model was given, one is not a chat model,
                or the SLO, ``on_slo`` or a rate limit is invalid.
            ClusterError: The scheduler cannot hold the rate limits.
        """
        models = list(models)
        for i, m in enumerate(models):
            if not isinstance(m, BaseChatModel):
                raise ConfigError(f"deploy_model({name!r}): model {i} is a {type(m).__name__}, not a chat model")
        self._install()
        return self.components.deploy(name, models, capacity=capacity, stateful=stateful, slo_s=slo_s,
                                      on_slo=on_slo, rpm=rpm, tpm=tpm, burst_s=burst_s,
                                      output_tokens=_max_tokens(models[0]) if models else None)

    # -- views and lifecycle --------------------------------------------------------------
    def runs(self, session: str | None = None) -> list[RunRecord]:
        """The LangChain runs recorded (of one session if given), oldest first."""
        return self.recorder.runs(session)

    def forget_session(self, session: str) -> None:
        """Drop what the adapters keep of ``session``."""
        self.recorder.forget(session)

    def close(self) -> None:
        """Release the intercepted paths (the last service to close restores LangChain)."""
        with self._lock:
            self.closed = True
            installed, self._installed = self._installed, False
        if installed:
            interception.uninstall()
