"""What runs on the worker for an intercepted tool or chat-model call.

The caller packs a :class:`ToolJob` or :class:`ModelJob`; the task functions
here (importable on every worker) unpack it, give the body a run manager whose
handler is the caller's :class:`~._tunnel.Tunnel`, and run the *original*
execution path of the tool (``_run``/``_arun``) or the chat model
(``_generate_with_cache``/``_agenerate_with_cache``). Run ids, tags and metadata
are the caller's, so the events the caller replays are the ones it would have
seen without nalar.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import CallbackManager
from langchain_core.callbacks.manager import (
    AsyncCallbackManagerForLLMRun,
    AsyncCallbackManagerForToolRun,
    CallbackManagerForLLMRun,
    CallbackManagerForToolRun,
)
from langchain_core.runnables.config import var_child_runnable_config

from ..errors import NalarError
from ._switch import Switch
from ._tunnel import Tunnel, emit, tunnel_class

__all__ = [
    "STREAM_WRITE",
    "CallbacksSpec",
    "InProcessCallError",
    "ModelEndpoint",
    "ModelJob",
    "RunSpec",
    "ToolJob",
    "arun_model",
    "arun_tool",
    "gate",
    "original",
    "run_model",
    "run_tool",
]

STREAM_WRITE = "nalar_stream_write"  # the event a tunnelled LangGraph stream writer sends

_CONF = "configurable"
_SCRATCHPAD_KEY = "__pregel_scratchpad"


class InProcessCallError(NalarError):
    """A call that ran in the caller's process failed (its gate task reports it)."""


def original(cls: type, name: str) -> Callable[..., Any]:
    """The unwrapped ``cls.name``: what runs when nalar serves the call."""
    fn = getattr(cls, name)
    return getattr(fn, "__nalar_original__", fn)


@dataclass
class CallbacksSpec:
    """The shape of a callback manager, to rebuild it on the worker around a tunnel."""

    parent_run_id: UUID | None = None
    tags: list[str] = field(default_factory=list)
    inheritable_tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    inheritable_metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, callbacks: Any, clean: Callable[[dict[str, Any]], dict[str, Any]]) -> CallbacksSpec:
        """Capture a manager (a plain handler list has no run to attach to)."""
        if callbacks is None or isinstance(callbacks, list):
            return cls()
        return cls(
            parent_run_id=getattr(callbacks, "parent_run_id", None),
            tags=list(getattr(callbacks, "tags", None) or []),
            inheritable_tags=list(getattr(callbacks, "inheritable_tags", None) or []),
            metadata=clean(dict(getattr(callbacks, "metadata", None) or {})),
            inheritable_metadata=clean(dict(getattr(callbacks, "inheritable_metadata", None) or {})),
        )

    def build(self, tunnel: Tunnel) -> CallbackManager:
        """A callback manager like the caller's, whose only handler is ``tunnel``."""
        return CallbackManager(
            handlers=[tunnel], inheritable_handlers=[tunnel], parent_run_id=self.parent_run_id,
            tags=list(self.tags), inheritable_tags=list(self.inheritable_tags),
            metadata=dict(self.metadata), inheritable_metadata=dict(self.inheritable_metadata),
        )


@dataclass
class RunSpec:
    """The caller's run (a tool run or a chat-model run) as the worker rebuilds it."""

    run_id: UUID
    parent_run_id: UUID | None
    tags: list[str]
    inheritable_tags: list[str]
    metadata: dict[str, Any]
    inheritable_metadata: dict[str, Any]
    channel: str
    stream_v1: bool = False
    stream_v2: bool = False
    switch: Switch | None = None

    def tunnel(self) -> Tunnel:
        """The tunnel of this run, streaming exactly when the caller's handlers do."""
        return tunnel_class(self.stream_v1, self.stream_v2)(self.channel, self.switch)

    def manager(self, kind: str, is_async: bool, tunnel: Tunnel) -> Any:
        """The run manager the body gets: same run id, tags and metadata, tunnel handler."""
        cls: Any = {
            ("tool", False): CallbackManagerForToolRun,
            ("tool", True): AsyncCallbackManagerForToolRun,
            ("llm", False): CallbackManagerForLLMRun,
            ("llm", True): AsyncCallbackManagerForLLMRun,
        }[(kind, is_async)]
        return cls(
            run_id=self.run_id, handlers=[tunnel], inheritable_handlers=[tunnel],
            parent_run_id=self.parent_run_id, tags=list(self.tags),
            inheritable_tags=list(self.inheritable_tags), metadata=dict(self.metadata),
            inheritable_metadata=dict(self.inheritable_metadata),
        )


class _TunnelWriter:
    """A LangGraph stream writer that writes in the caller (value mode)."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def __call__(self, chunk: Any) -> None:
        emit(self.channel, (STREAM_WRITE, (chunk,), {}))


class _RemoteScratchpad:
    """Stands in for LangGraph's scratchpad in a worker process, to fail clearly."""

    def __getattr__(self, name: str) -> Any:
        raise NalarError(
            "interrupt() inside a tool body that runs in a Dask worker process is not supported: "
            "LangGraph's resume state does not leave the caller's process. Call interrupt() in a "
            "graph node or a middleware hook (as HumanInTheLoopMiddleware does), or use a "
            "threads-mode Runtime, whose workers share the caller's process."
        )


@dataclass
class _ConfigPlan:
    """A config to rebuild on the worker: its callbacks are replaced by a tunnel."""

    config: dict[str, Any]
    callbacks: CallbacksSpec | None
    value_mode: bool
    channel: str

    def build(self, tunnel: Tunnel) -> dict[str, Any]:
        config = dict(self.config)
        config["callbacks"] = self.callbacks.build(tunnel) if self.callbacks is not None else [tunnel]
        if self.value_mode:
            # LangGraph's runtime was packed with a tunnelled writer by the caller.
            config[_CONF] = {**(config.get(_CONF) or {}), _SCRATCHPAD_KEY: _RemoteScratchpad()}
        return config


def _build_value(value: Any, tunnel: Tunnel) -> Any:
    """Rebuild an argument that was packed with a config inside (a ToolRuntime)."""
    if isinstance(value, _ConfigPlan):
        return value.build(tunnel)
    if isinstance(value, _RuntimePlan):
        return value.build(tunnel)
    return value


@dataclass
class _RuntimePlan:
    """A LangGraph ``ToolRuntime`` to rebuild on the worker with a tunnelled config."""

    runtime: Any
    config: _ConfigPlan
    tunnel_writer: bool

    def build(self, tunnel: Tunnel) -> Any:
        changes: dict[str, Any] = {"config": self.config.build(tunnel)}
        if self.tunnel_writer:
            changes["stream_writer"] = _TunnelWriter(self.config.channel)
        return dataclasses.replace(self.runtime, **changes)


@dataclass
class ToolJob:
    """One intercepted tool call: the tool, the arguments of its ``_run``/``_arun``."""

    tool: Any
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    run: RunSpec
    wants_run_manager: bool
    ambient: _ConfigPlan
    context: contextvars.Context | None = None  # the caller's, when the worker shares its process


@dataclass
class ModelJob:
    """One intercepted chat-model call: the arguments of ``_generate_with_cache``."""

    model: Any
    messages: list[Any]
    stop: list[str] | None
    kwargs: dict[str, Any]
    run: RunSpec
    context: contextvars.Context | None = None


def _prepared(context: contextvars.Context | None, config: dict[str, Any] | None) -> contextvars.Context:
    """A context for the body: the caller's (if shared), with this call's nalar variables.

    The task wrapper set the call, session and runtime variables for this call;
    they win over the caller's values. ``config`` becomes the ambient config.
    """
    from .. import _task
    from ..context import _call_var, _session_var

    mine = (_call_var.get(), _session_var.get(), _task.task_runtime.get())
    ctx = context.copy() if context is not None else contextvars.copy_context()

    def set_vars() -> None:
        _call_var.set(mine[0])
        _session_var.set(mine[1])
        _task.task_runtime.set(mine[2])
        if config is not None:
            var_child_runnable_config.set(config)  # type: ignore[arg-type]

    ctx.run(set_vars)
    return ctx


def _in_context(context: contextvars.Context | None, config: dict[str, Any] | None, fn: Callable[[], Any]) -> Any:
    return _prepared(context, config).run(fn)


async def _ain_context(context: contextvars.Context | None, config: dict[str, Any] | None, fn: Callable[[], Awaitable[Any]]) -> Any:
    async def body() -> Any:
        return await fn()

    ctx = _prepared(context, config)
    if sys.version_info >= (3, 11):
        return await asyncio.get_running_loop().create_task(body(), context=ctx)
    return await ctx.run(asyncio.ensure_future, body())  # pragma: no cover - Python 3.10


def _tool_call(job: ToolJob, is_async: bool) -> tuple[Any, Any, tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    tunnel = job.run.tunnel()
    manager = job.run.manager("tool", is_async, tunnel)
    kwargs = {k: _build_value(v, tunnel) for k, v in job.kwargs.items()}
    if job.wants_run_manager:
        kwargs["run_manager"] = manager
    ambient = job.ambient.build(tunnel)
    # The body's ambient config is the tool run's child config, as in BaseTool.run.
    ambient["callbacks"] = manager.get_child()
    fn = original(type(job.tool), job.method)
    return fn, job.tool, job.args, kwargs, ambient


def run_tool(job: ToolJob) -> Any:
    """Run a tool's ``_run`` on a worker thread."""
    fn, tool, args, kwargs, ambient = _tool_call(job, is_async=False)
    return _in_context(job.context, ambient, lambda: fn(tool, *args, **kwargs))


async def arun_tool(job: ToolJob) -> Any:
    """Run a tool's ``_arun`` on the worker's event loop."""
    fn, tool, args, kwargs, ambient = _tool_call(job, is_async=True)
    return await _ain_context(job.context, ambient, lambda: fn(tool, *args, **kwargs))


def run_model(job: ModelJob, model: Any = None) -> Any:
    """Run a chat model's ``_generate_with_cache`` on a worker thread."""
    model = job.model if model is None else model
    manager = job.run.manager("llm", False, job.run.tunnel())
    fn = original(type(model), "_generate_with_cache")
    return _in_context(job.context, None, lambda: fn(model, job.messages, stop=job.stop, run_manager=manager, **job.kwargs))


async def arun_model(job: ModelJob, model: Any = None) -> Any:
    """Run a chat model's ``_agenerate_with_cache`` on the worker's event loop."""
    model = job.model if model is None else model
    manager = job.run.manager("llm", True, job.run.tunnel())
    fn = original(type(model), "_agenerate_with_cache")
    return await _ain_context(job.context, None, lambda: fn(model, job.messages, stop=job.stop, run_manager=manager, **job.kwargs))


async def gate(name: str) -> None:
    """Hold a slot of the call's instance while the caller runs the call in its own process.

    The caller sets the Dask variable ``name`` when the body is done: ``""`` on
    success, else the error's text (so the call's status is an error too).
    """
    from distributed import Variable, get_client

    var = Variable(name, client=get_client())
    outcome = await var.get()
    deleted = var.delete()
    if deleted is not None:
        await deleted
    if outcome:
        raise InProcessCallError(outcome)


class ModelEndpoint:
    """One instance of a model component: a chat model and how it travels.

    Made by :meth:`~nalar_plugin.Runtime.deploy_model`; the controllers pick the
    instance of each call, and the worker runs the call on that instance's model.

    Args:
        model: The chat model object.
        sent: What to pickle in its place (a by-reference handle or a rebuild recipe).
        name: The instance's label (for ``repr``).
    """

    def __init__(self, model: Any, sent: Any, name: str) -> None:
        self.model = model
        self.sent = sent
        self.name = name

    def generate(self, job: ModelJob) -> Any:
        """Serve a sync model call on this instance."""
        return run_model(job, self.model)

    async def agenerate(self, job: ModelJob) -> Any:
        """Serve an async model call on this instance."""
        return await arun_model(job, self.model)

    def __reduce__(self) -> Any:
        return (_endpoint, (self.sent, self.name))

    def __repr__(self) -> str:
        return f"<nalar model instance {self.name}: {type(self.model).__name__}>"


def _endpoint(model: Any, name: str) -> ModelEndpoint:
    return ModelEndpoint(model, model, name)
