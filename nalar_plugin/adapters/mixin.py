"""The Runtime's adapter methods: ``callback()``, ``middleware()``, ToolNode hooks, model components.

LangChain and LangGraph are imported on first use, so a Runtime that serves only
stubs does not pay for them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from ._runtree import Recorder
    from ._switch import Switch
    from .callback import NalarCallbackHandler
    from .middleware import NalarMiddleware

__all__ = ["AdapterMixin", "AdapterState"]


class AdapterState:
    """The adapters' state on one Runtime: plugin, run tree, model components.

    Made on the first use of an adapter: it registers the
    :class:`~._seams.AdapterPlugin` (which installs the seams) once.
    """

    def __init__(self, rt: Any) -> None:
        from ._runtree import Recorder
        from ._seams import AdapterPlugin
        from ._switch import Switch

        self.token: str = rt.token
        self.recorder: Recorder = Recorder()
        self.plugin = AdapterPlugin()
        try:
            rt.register_plugin(self.plugin, name=f"nalar-adapters-{rt.token}")
        except Exception:
            self.plugin.close()
            raise
        self.default = Switch(rt.token)
        self._rt = weakref.ref(rt)
        self._models: dict[int, tuple[Any, str]] = {}  # id(model) -> (model, component)
        self._lock = threading.RLock()
        self.refs: list[Any] = []

    def component_of(self, model: Any) -> str | None:
        """The deployed component a model object is an instance of, if any.

        Chat models deployed with plain ``rt.deploy`` are found too: their
        instances are adopted, i.e. wrapped as :class:`~._jobs.ModelEndpoint`
        (which also forwards every other method to the model, so ``rt.call``
        keeps working on them).
        """
        with self._lock:
            hit = self._models.get(id(model))
            if hit is not None and hit[0] is model:
                self._adopt(hit[1])  # instances a policy provisioned since
                return hit[1]
            rt = self._rt()
            if rt is None:
                return None
            for name in list(getattr(rt, "_deployed", {})):
                if any(address is model for address in rt.instances(name).values()):
                    self._adopt(name)
                    return name
        return None

    def _adopt(self, name: str) -> None:
        from langchain_core.language_models import BaseChatModel

        rt = self._rt()
        if rt is None:
            return
        raw = {i: a for i, a in rt.instances(name).items() if isinstance(a, BaseChatModel)}
        if not raw:
            return
        endpoints = self.endpoints(rt, name, list(raw.values()))
        for (instance, model), endpoint in zip(raw.items(), endpoints):
            ctl = rt.plane.instances.get(instance)
            if ctl is not None:
                ctl.address = endpoint  # what a call admitted to this instance is given
        self.add_models(name, list(raw.values()))

    def endpoints(self, rt: Any, name: str, models: Sequence[Any]) -> list[Any]:
        """Wrap models as instances that travel to this Runtime's workers."""
        from ._jobs import ModelEndpoint
        from ._parcel import Ref, sendable, shares_process

        out = []
        for i, model in enumerate(models):
            if shares_process(rt):
                sent: Any = Ref(model)
                self.refs.append(sent)
            else:
                sent = sendable(model, f"chat model {i} of component {name!r}")
            out.append(ModelEndpoint(model, sent, f"{name}/{i}"))
        return out

    def add_models(self, name: str, models: Sequence[Any]) -> None:
        """Map model objects to their component."""
        with self._lock:
            for m in models:
                self._models[id(m)] = (m, name)

    def close(self, rt: Any) -> None:
        """Unregister the plugin (the last Runtime's close restores LangChain)."""
        from ._parcel import release

        try:
            rt.plugins.pm.unregister(self.plugin)
        except ValueError:  # already gone
            pass
        self.plugin.close()
        for ref in self.refs:
            release(ref)
        self.refs.clear()


def _switch(state: AdapterState, session: str | None, priority: float | None, deadline: float | None,
            expected_s: float | None, directives: dict[str, dict[str, Any]] | None) -> Switch:
    from ._switch import Switch

    options: dict[str, Any] = {}
    if expected_s is not None:
        options["expected_s"] = expected_s
    if directives:
        from ..stubs import Directives

        for component, given in directives.items():
            Directives(**given).validate(component)  # fail now, not at the first call
        options["directives"] = dict(directives)
    return Switch(state.token, session=session, priority=priority, deadline=deadline, options=options)


class AdapterMixin:
    """Mixed into :class:`~nalar_plugin.Runtime`: LangChain and LangGraph adapters."""

    _nalar_adapters: AdapterState | None

    def _init_adapters(self) -> None:
        """Called at the end of ``Runtime.__init__``."""
        self._nalar_adapters = None
        self._nalar_adapters_lock = threading.Lock()

    def _close_adapters(self) -> None:
        """Called when the Runtime closes."""
        state, self._nalar_adapters = self._nalar_adapters, None
        if state is not None:
            state.close(self)

    def _adapters(self) -> AdapterState:
        rt = cast(Any, self)
        rt._check_open()
        with self._nalar_adapters_lock:
            if self._nalar_adapters is None:
                self._nalar_adapters = AdapterState(rt)
            return self._nalar_adapters

    def callback(self, *, session: str | None = None, priority: float | None = None,
                 deadline: float | None = None, expected_s: float | None = None,
                 directives: dict[str, dict[str, Any]] | None = None) -> NalarCallbackHandler:
        """Return a LangChain callback handler that routes a run's calls through nalar.

        Add it to a run's ``config["callbacks"]``: every tool call and chat-model
        call of that run, nested ones included, then runs as a call on the Dask
        cluster, scheduled by the controllers. The session is the run's
        ``thread_id``; ``nalar_priority``, ``nalar_deadline``, ``nalar_session``
        and ``nalar_expected_s`` in ``config["metadata"]`` or
        ``config["configurable"]`` set a run's context.

        Args:
            session: Session of every call (default: the ``thread_id``).
            priority: Default priority of the calls (higher first).
            deadline: Default absolute deadline, ``time.time()`` seconds.
            expected_s: Expected service of a session, for size-based policies.
            directives: Directives per component (tool or model name), e.g.
                ``{"search": {"max_concurrency": 4}}``. Tool calls are journaled
                (a resumed run does not run a finished tool again; the key is
                ``{thread_id}/{tool_call_id}``); ``{"tool": {"idempotent": True}}``
                runs a tool without the journal, e.g. one whose results the
                state serde cannot store.

        Returns:
            The handler (it also keeps the run tree: ``.runs()``, ``.tree()``).
        """
        from .callback import NalarCallbackHandler

        state = self._adapters()
        switch = _switch(state, session, priority, deadline, expected_s, directives)
        return NalarCallbackHandler(switch, state.recorder, cast(Any, self).plugins)

    def middleware(self, *, session: str | None = None, priority: float | None = None,
                   deadline: float | None = None, expected_s: float | None = None,
                   directives: dict[str, dict[str, Any]] | None = None) -> NalarMiddleware:
        """Return an ``AgentMiddleware`` for ``langchain.agents.create_agent``.

        It implements ``wrap_model_call``, ``wrap_tool_call`` and their async
        twins: the agent's model and tool calls become nalar calls. The
        arguments are those of :meth:`callback`.
        """
        from .middleware import NalarMiddleware

        state = self._adapters()
        return NalarMiddleware(_switch(state, session, priority, deadline, expected_s, directives))

    def wrap_tool_call(self, request: Any, execute: Callable[[Any], Any]) -> Any:
        """A ``ToolNode(tools, wrap_tool_call=rt.wrap_tool_call)`` hook: the call runs on nalar."""
        from .middleware import wrap_with_switch

        return wrap_with_switch(self._adapters().default, request, execute)

    async def awrap_tool_call(self, request: Any, execute: Callable[[Any], Awaitable[Any]]) -> Any:
        """A ``ToolNode(tools, awrap_tool_call=rt.awrap_tool_call)`` hook (async)."""
        from .middleware import awrap_with_switch

        return await awrap_with_switch(self._adapters().default, request, execute)

    def deploy_model(self, name: str, models: Sequence[Any], *, capacity: int | None = None,
                     stateful: bool = True) -> list[str]:
        """Declare the replicas of a chat model as the component ``name``.

        Each model object (several ``ChatOpenAI`` endpoints, simulated engines)
        is one instance. An intercepted call to any of these objects goes to the
        component: the controllers pick its instance at admission, with session
        affinity (``stateful``) and migration, and the worker runs the call on that
        instance's model.

        Args:
            name: Component name.
            models: The chat model objects, one per instance.
            capacity: Concurrent calls per instance (``None``: no bound).
            stateful: Sessions keep affinity to the instance that served them.

        Returns:
            The instance ids.

        Raises:
            NotSendable: A model cannot be sent to the workers of this cluster.
            ConfigError: The name is taken or no model was given.
        """
        rt = cast(Any, self)
        state = self._adapters()
        endpoints = state.endpoints(rt, name, list(models))
        ids: list[str] = rt.deploy(name, endpoints, capacity=capacity, stateful=stateful)
        state.add_models(name, models)
        return ids

    def _endpoint_addresses(self, name: str, objects: Sequence[Any]) -> list[Any]:
        """The addresses ``rt.deploy`` should give the instances of ``name``.

        Chat models become :class:`~._jobs.ModelEndpoint` instances, which travel
        to any worker (by reference in threads mode, as their constructor fields
        otherwise) and still answer every method of the model; other objects are
        returned as they are.
        """
        from langchain_core.language_models import BaseChatModel

        models = [o for o in objects if isinstance(o, BaseChatModel)]
        if not models:
            return list(objects)
        rt = cast(Any, self)
        state = self._adapters()
        wrapped = iter(state.endpoints(rt, name, models))
        state.add_models(name, models)
        return [next(wrapped) if isinstance(o, BaseChatModel) else o for o in objects]

    def adapter_runs(self, session: str | None = None) -> list[Any]:
        """The LangChain runs the adapters recorded (of one session if given), oldest first."""
        state = self._nalar_adapters
        return [] if state is None else state.recorder.runs(session)
