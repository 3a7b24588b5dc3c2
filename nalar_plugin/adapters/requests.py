"""Making an adapter call: the call description from the run, then the call itself.

The interception layer (:mod:`.interception`, :mod:`.streaming`) hands an
intercepted tool or chat-model call here. :class:`AdapterCall` reads the run
(session = thread id, priority, deadline, LangGraph node and step), derives the
call's dependencies and idempotency key, and makes the call through the call
path, one of two ways:

* **where it lives** (the default): an inline call. The controllers admit it
  (capacity, priority, the instance of a deployed model), the journal answers
  for it (a tool call that committed is not run again on a resumed run), and
  then the caller runs the body itself, in its own thread or event loop, with
  its own callbacks: nothing of the app changes but when the body starts. A
  tool's result is committed by the journal's writer; the caller waits for
  that commit only when the body staged managed-state writes (a later call
  must read them). Otherwise it goes on at once: a process that dies before
  the commit lands runs the call again on resume, as it would had it died
  during the body, and a call that committed is never run again.
* **shipped** to a worker process (a model deployed with ``rt.deploy_model`` on
  a cluster of worker processes, or ``rt.callback(ship=...)``): the body runs
  on the worker the dispatcher picks, and its callback events are replayed in
  the caller as they arrive (:mod:`.events`). What cannot travel runs where it
  lives instead, with one :class:`~.shipping.InProcessWarning` per object.
"""

from __future__ import annotations

import asyncio
import math
import warnings
from collections.abc import Callable
from typing import Any

from langchain_core.runnables.config import var_child_runnable_config

from ..calls import CallPath
from ..inline import InlineCall
from ..errors import ConfigError
from ..future import Future
from ..stubs import Directives
from .activation import Switch
from .events import DONE, Channel, areplay, replay, streaming_flags
from .recorder import Recorder, RunInfo
from .remote import RunSpec
from .shipping import InProcessWarning, NotSendable, check_sendable

__all__ = ["AdapterCall", "clean_metadata", "model_call", "plain_config", "run_info"]

_CONF = "configurable"


def _lookup(metadata: dict[str, Any], configurable: dict[str, Any], key: str) -> Any:
    value = metadata.get(key)
    return configurable.get(key) if value is None else value


def _number(value: Any, name: str) -> float | None:
    """A run's numeric option, or ``None``; a value that is not a finite number is refused."""
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if isinstance(value, bool) or math.isnan(out) or math.isinf(out):
        raise ConfigError(f"{name} in the run's config must be a finite number, got {value!r}")
    return out


def run_info(switch: Switch, run_manager: Any) -> RunInfo:
    """Read a run's nalar context from its metadata and the ambient config.

    ``nalar_session``, ``nalar_priority``, ``nalar_deadline`` and
    ``nalar_expected_s`` may be set in ``config["metadata"]`` or
    ``config["configurable"]``; the session defaults to LangGraph's ``thread_id``.
    """
    metadata: dict[str, Any] = getattr(run_manager, "metadata", None) or {}
    config: Any = var_child_runnable_config.get() or {}
    configurable: dict[str, Any] = config.get(_CONF) or {}
    session = _lookup(metadata, configurable, "nalar_session") or switch.session or _lookup(
        metadata, configurable, "thread_id")
    priority = _number(_lookup(metadata, configurable, "nalar_priority"), "nalar_priority")
    deadline = _number(_lookup(metadata, configurable, "nalar_deadline"), "nalar_deadline")
    expected = _number(_lookup(metadata, configurable, "nalar_expected_s"), "nalar_expected_s")
    step = metadata.get("langgraph_step")
    return RunInfo(
        run_id=getattr(run_manager, "run_id", None),
        session=str(session) if session else None,
        priority=switch.priority if priority is None else priority,
        deadline=switch.deadline if deadline is None else deadline,
        expected_s=_number(switch.options.get("expected_s"), "expected_s") if expected is None else expected,
        node=metadata.get("langgraph_node"),
        step=step if isinstance(step, int) else None,
        task_ns=str(metadata.get("langgraph_checkpoint_ns") or ""),
    )


def clean_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``meta`` that travel to a worker process."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        try:
            check_sendable(v, "")
        except NotSendable:
            continue
        out[k] = v
    return out


def plain_config(config: Any) -> dict[str, Any]:
    """What of a ``RunnableConfig`` travels to a worker: tags, metadata, the app's own configurable.

    LangGraph's machinery (keys starting with ``__``) and the callbacks stay in
    the caller; the worker gives the body a tunnel as its callbacks.
    """
    config = dict(config or {})
    out: dict[str, Any] = {}
    for key in ("tags", "run_name", "recursion_limit", "max_concurrency"):
        if config.get(key) is not None:
            out[key] = config[key]
    out["metadata"] = clean_metadata(dict(config.get("metadata") or {}))
    out[_CONF] = clean_metadata({k: v for k, v in (config.get(_CONF) or {}).items() if not str(k).startswith("__")})
    return out


class AdapterCall:
    """One intercepted call, from its run to its result.

    Args:
        service: The adapter service of the run's Runtime.
        switch: The run's switch.
        kind: ``"tool"`` or ``"model"``.
        component: Component name (tool name, model name or deployed component).
        run_manager: The caller's run manager of the tool or model run.
        is_async: Whether the caller awaits.
    """

    def __init__(self, service: Any, switch: Switch, kind: str, component: str, run_manager: Any,
                 is_async: bool) -> None:
        self.service = service
        self.switch = switch
        self.kind = kind
        self.component = component
        self.run_manager = run_manager
        self.is_async = is_async
        self.calls: CallPath = service.calls
        self.recorder: Recorder = service.recorder
        self.info = run_info(switch, run_manager)
        self.session = self.info.session
        if self.session is None:
            self.session = self.recorder.root_session(self.info.run_id)
        self.loop = asyncio.get_running_loop() if is_async else None
        self.channel: Channel | None = None

    # -- deciding --------------------------------------------------------------
    def routed(self) -> bool:
        """Ask the ``nalar_adapter_route`` hook whether to serve this call (default yes)."""
        plugins = self.service.plugins
        if not plugins.implemented("nalar_adapter_route"):
            return True
        return plugins.hook.nalar_adapter_route(kind=self.kind, name=self.component, run=self.info) is not False

    def directives(self, **forced: Any) -> Directives:
        """The directives of this call's component (from ``callback(directives=...)``)."""
        return self.service.directives(self.switch, self.kind, self.component, forced)

    def options(self, deps: list[str], key: str | None, deployed: bool = False) -> dict[str, Any]:
        """Call options: session, priority, deadline, dependencies, key, extra."""
        info = self.info
        # The app must get what it would get without nalar, journaled or not.
        extra: dict[str, Any] = {"adapter": self.kind, "unjournaled_ok": True}
        if info.node:
            extra["langgraph_node"] = info.node
        if info.step is not None:
            extra["langgraph_step"] = info.step
        if info.task_ns:
            extra["langgraph_task_ns"] = info.task_ns
        if info.run_id is not None:
            extra["run_id"] = str(info.run_id)
        opts: dict[str, Any] = {"session": self.session, "idempotency_key": key, "extra": extra}
        if info.priority is not None:
            opts["priority"] = info.priority
        if info.deadline is not None:
            opts["deadline"] = info.deadline
        if info.expected_s is not None:
            opts["expected_s"] = info.expected_s
        on_slo = self.switch.options.get("on_slo")
        if on_slo is not None:
            opts["on_slo"] = on_slo
        if deps:
            opts["dependencies"] = deps
        if deployed:
            opts["component_call"] = True
        return opts

    def key(self, tool_call_id: str | None = None) -> str | None:
        """A deterministic idempotency key: a resumed run maps to the same journal entry."""
        if self.session is None:
            return None
        if tool_call_id:
            # The task that runs the call too: a model may repeat a whole tool call
            # (id and arguments) in a later turn, which is a new call, while a task
            # LangGraph runs again after a resume keeps its id (and so its key).
            task = self.info.task_ns
            return f"{self.session}/{task}/{tool_call_id}" if task else f"{self.session}/{tool_call_id}"
        scope = f"{self.session}/{self.info.task_ns}/{self.component}"
        # Counted per parent run: a task that LangGraph runs again after a resume
        # is a new parent run, and its calls derive the same keys again.
        parent = getattr(self.run_manager, "parent_run_id", None)
        return f"{scope}/{self.recorder.next_seq(self.session, f'{scope}@{parent}')}"

    # -- where it lives ------------------------------------------------------------
    def inline(self, method: str, identity: Any, options: dict[str, Any], directives: Directives) -> InlineCall:
        """Make the call as an inline call; the caller runs the body once it is admitted."""
        call = self.calls.submit_inline(_Body(self.component), self.component, method, (identity,), {},
                                        directives, options, loop=self.loop)
        self.recorder.attach(self.info.run_id, call.future.call_id)
        return call

    def note(self, call_id: str, tool_call_id: str | None = None, result: Any = None) -> None:
        """Record a finished call for the dependencies of later calls."""
        if self.session is None:
            return
        self.recorder.note_call(self.info, self.session, call_id, tool_call_id)
        if result is not None:
            self.recorder.note_model_result(self.session, call_id, result)

    # -- shipped ---------------------------------------------------------------------
    def open_channel(self) -> Channel:
        """Open the channel the shipped call's callback events arrive on."""
        self.channel = self.service.channels.open(self.loop)
        return self.channel

    def run_spec(self) -> RunSpec:
        """The caller's run, as the worker rebuilds it."""
        rm = self.run_manager
        assert self.channel is not None
        v1, v2 = streaming_flags(list(rm.handlers) + list(rm.inheritable_handlers))
        return RunSpec(
            run_id=rm.run_id, parent_run_id=rm.parent_run_id, tags=list(rm.tags),
            inheritable_tags=list(rm.inheritable_tags), metadata=clean_metadata(dict(rm.metadata)),
            inheritable_metadata=clean_metadata(dict(rm.inheritable_metadata)), channel=self.channel.id,
            stream_v1=v1, stream_v2=v2,
        )

    def ship(self, fn: Callable[..., Any], method: str, job: Any, options: dict[str, Any],
             directives: Directives) -> Future:
        """Make the call as a worker call that runs ``fn(job)`` (a deployed instance's ``method``)."""
        if options.get("component_call"):
            fut = self.service.components.call(self.component, method, (job,), {}, **options)
        else:
            call = self.calls.submit(fn, self.component, method, (job,), {}, directives, options)
            fut = call.future
        self.recorder.attach(self.info.run_id, fut.call_id)
        return fut

    def warn_in_place(self, obj: Any, exc: NotSendable) -> None:
        """Say once per object that a call asked to travel runs where it lives."""
        if not self.service.first_warning(obj):
            return
        warnings.warn(
            f"{exc.what} cannot be sent to a Dask worker process ({exc.reason}); it runs in this "
            "process under the same scheduling. Make it picklable (module-level functions, clients "
            "created inside the tool) to run it on the cluster.",
            InProcessWarning,
            stacklevel=5,
        )

    def wait(self, fut: Future) -> Any:
        """Replay the shipped call's events as they arrive, then return its value (thread callers)."""
        channel = self.channel
        assert channel is not None
        fut.add_done_callback(lambda _: channel.put(DONE))
        try:
            while (item := channel.get()) is not DONE:
                replay(self.run_manager, item)
        finally:
            self.service.channels.close(channel)
        return fut.result()

    async def await_(self, fut: Future) -> Any:
        """Replay the shipped call's events as they arrive, then return its value (async callers)."""
        channel = self.channel
        assert channel is not None
        fut.add_done_callback(lambda _: channel.put(DONE))
        try:
            while (item := await channel.aget()) is not DONE:
                await areplay(self.run_manager, item)
        finally:
            self.service.channels.close(channel)
        return await fut


def _model_attr(model: Any, attr: str) -> Any:
    """``getattr(model, attr, None)``, without pydantic's ``__getattr__`` for a missing name.

    On a pydantic model, a name that is neither a field nor on the class goes through
    ``BaseModel.__getattr__``, which builds an ``AttributeError``: on every model call
    of a model without a ``model_name``, a measurable cost.
    """
    cls = type(model)
    fields = getattr(cls, "__pydantic_fields__", None)
    if not isinstance(fields, dict) or attr in fields or hasattr(cls, attr):
        return getattr(model, attr, None)
    extra = getattr(model, "__pydantic_extra__", None)
    return extra.get(attr) if isinstance(extra, dict) else None


def model_call(switch: Switch, model: Any, run_manager: Any, is_async: bool) -> tuple[AdapterCall, bool]:
    """The adapter call of a model call, and whether its model is a deployed component."""
    service = switch.service
    component = service.component_of(model)
    deployed = component is not None
    if component is None:
        name = _model_attr(model, "model_name") or _model_attr(model, "model")
        component = name if isinstance(name, str) and name else type(model).__name__
    return AdapterCall(service, switch, "model", component, run_manager, is_async), deployed


class _Body:
    """The target of an inline call: its caller runs the body (it never reaches a worker)."""

    is_async = False

    def __init__(self, component: str) -> None:
        self.component = component

    def __repr__(self) -> str:
        return f"<inline body of {self.component}>"
