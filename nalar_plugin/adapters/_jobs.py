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
from ._parcel import Lazy, resolve
from ._switch import Switch
from ._tunnel import Tunnel, emit, tunnel_class

__all__ = [
    "STREAM_WRITE",
    "CallbacksSpec",
    "ConfigPlan",
    "InProcessCallError",
    "ModelEndpoint",
    "ModelJob",
    "RunSpec",
    "RuntimePlan",
    "StaysInCaller",
    "ToolJob",
    "TunnelWriter",
    "arun_model",
    "arun_tool",
    "gate",
    "original",
    "pack_result",
    "run_model",
    "run_tool",
    "unpack_result",
]

STREAM_WRITE = "nalar_stream_write"  # the event a tunnelled LangGraph stream writer sends

_CONF = "configurable"
_SCRATCHPAD_KEY = "__pregel_scratchpad"
_RUNTIME_KEY = "__pregel_runtime"


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


class TunnelWriter:
    """A LangGraph stream writer that writes in the caller (value mode)."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def __call__(self, chunk: Any) -> None:
        emit(self.channel, (STREAM_WRITE, (chunk,), {}))


class StaysInCaller:
    """Stands in, in a worker process, for an object that cannot leave the caller's process.

    Args:
        what: What it stands for, e.g. ``"the graph's store"``.
        reason: Why it could not travel.
    """

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # pickling and copying probe these
            raise AttributeError(name)
        raise NalarError(
            f"{self.what} is not available in a Dask worker process: {self.reason}. Declare it in the "
            "tool's signature (ToolRuntime or InjectedStore) to run the call in the caller's process instead."
        )


class _RemoteScratchpad:
    """Stands in for LangGraph's scratchpad in a worker process, to fail clearly."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise NalarError(
            "interrupt() inside a tool body that runs in a Dask worker process is not supported: "
            "LangGraph's resume state does not leave the caller's process. Call interrupt() in a "
            "graph node or a middleware hook (as HumanInTheLoopMiddleware does), or use a "
            "threads-mode Runtime, whose workers share the caller's process."
        )


@dataclass
class ConfigPlan:
    """A config to rebuild on the worker: its callbacks are replaced by a tunnel."""

    config: dict[str, Any]
    callbacks: CallbacksSpec | None
    value_mode: bool
    channel: str

    def build(self, tunnel: Tunnel) -> dict[str, Any]:
        config = dict(self.config)
        config["callbacks"] = self.callbacks.build(tunnel) if self.callbacks is not None else [tunnel]
        if self.value_mode:
            conf = {**(config.get(_CONF) or {}), _SCRATCHPAD_KEY: _RemoteScratchpad()}
            # LangGraph's runtime was packed with a tunnelled writer by the caller.
            runtime = conf.get(_RUNTIME_KEY)
            if runtime is not None and isinstance(getattr(runtime, "store", None), Lazy):
                conf[_RUNTIME_KEY] = dataclasses.replace(runtime, store=resolve(runtime.store))
            config[_CONF] = conf
        return config


def _build_value(value: Any, tunnel: Tunnel) -> Any:
    """Rebuild an argument that was packed with a config inside (a ToolRuntime)."""
    if isinstance(value, ConfigPlan):
        return value.build(tunnel)
    if isinstance(value, RuntimePlan):
        return value.build(tunnel)
    return value


@dataclass
class RuntimePlan:
    """A LangGraph ``ToolRuntime`` to rebuild on the worker with a tunnelled config."""

    runtime: Any
    config: ConfigPlan
    tunnel_writer: bool

    def build(self, tunnel: Tunnel) -> Any:
        changes: dict[str, Any] = {"config": self.config.build(tunnel)}
        if self.tunnel_writer:
            changes["stream_writer"] = TunnelWriter(self.config.channel)
            changes["store"] = resolve(self.runtime.store)
            changes["tools"] = [resolve(t) for t in self.runtime.tools]
        return dataclasses.replace(self.runtime, **changes)


class ToolJob:
    """One intercepted tool call: the tool, the arguments of its ``_run``/``_arun``.

    Args:
        tool: The tool (or what travels in its place).
        method: ``"_run"`` or ``"_arun"``.
        args: Positional arguments of the body.
        kwargs: Keyword arguments; configs and ``ToolRuntime`` values are plans.
        run: The caller's tool run.
        wants_run_manager: The body takes a ``run_manager``.
        ambient: The body's ambient config.
        context: The caller's context, when the worker shares its process.
    """

    def __init__(self, tool: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], run: RunSpec,
                 wants_run_manager: bool, ambient: ConfigPlan, context: contextvars.Context | None = None) -> None:
        self.tool = tool
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.run = run
        self.wants_run_manager = wants_run_manager
        self.ambient = ambient
        self.context = context

    def model_dump(self) -> dict[str, Any]:
        """The call's identity for the journal's argument hash: tool and arguments.

        Run ids, channels and LangGraph's runtime differ between a run and its
        resumption; the tool and what the model asked for do not.
        """
        name = getattr(self.tool, "name", None) or getattr(self.tool, "attr", None) or type(self.tool).__name__
        kwargs = {k: v for k, v in self.kwargs.items() if not isinstance(v, (ConfigPlan, RuntimePlan))}
        return {"tool": name, "method": self.method, "args": list(self.args), "kwargs": kwargs}


class ModelJob:
    """One intercepted chat-model call: the arguments of ``_generate_with_cache``.

    Args:
        model: The model, or ``None`` for a deployed component (the instance has it).
        messages: The input messages.
        stop: Stop words.
        kwargs: Bound keyword arguments (tools, tool choice ...).
        run: The caller's model run.
        context: The caller's context, when the worker shares its process.
    """

    def __init__(self, model: Any, messages: list[Any], stop: list[str] | None, kwargs: dict[str, Any],
                 run: RunSpec, context: contextvars.Context | None = None) -> None:
        self.model = model
        self.messages = messages
        self.stop = stop
        self.kwargs = kwargs
        self.run = run
        self.context = context

    def model_dump(self) -> dict[str, Any]:
        """The call's identity for the journal's argument hash: the prompt and its options."""
        return {"messages": list(self.messages), "stop": self.stop, "kwargs": self.kwargs}


def pack_result(result: Any) -> dict[str, Any]:
    """A ``ChatResult`` as data the journal's serde stores and rebuilds (messages, dicts)."""
    return {
        "generations": [
            {"message": g.message, "generation_info": g.generation_info} for g in result.generations
        ],
        "llm_output": result.llm_output,
    }


def unpack_result(data: Any) -> Any:
    """Rebuild the ``ChatResult`` of :func:`pack_result`."""
    from langchain_core.outputs import ChatGeneration, ChatResult

    if isinstance(data, ChatResult):
        return data
    generations = [ChatGeneration(message=g["message"], generation_info=g.get("generation_info")) for g in data["generations"]]
    return ChatResult(generations=generations, llm_output=data.get("llm_output"))


def _prepared(context: contextvars.Context | None, config: dict[str, Any] | None) -> contextvars.Context:
    """A context for the body: the worker's, with the caller's variables laid over it.

    What the worker set for this task (Dask's current worker, nalar's call,
    session and runtime) wins; everything else the caller had (LangChain's and
    LangGraph's context variables, the adapter switch) is the caller's, as if
    the body ran in the caller. ``config`` becomes the ambient config.
    """
    ctx = contextvars.copy_context()
    present = set(ctx.keys())

    def overlay() -> None:
        if context is not None:
            for var, value in context.items():
                if var not in present:
                    var.set(value)
        if config is not None:
            var_child_runnable_config.set(config)  # type: ignore[arg-type]

    ctx.run(overlay)
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


_WORKER_SEAMS: list[bool] = []


def _worker_seams() -> None:
    """Install the seams in a worker process, once, so calls nested in a served call are served.

    In the driver's process the adapter plugin installs them; a worker process
    keeps them for its lifetime (they are inert in runs without a switch).
    """
    if not _WORKER_SEAMS:
        from . import _seams

        if not _seams.installed():
            _seams.install()
        _WORKER_SEAMS.append(True)


def _tool_call(job: ToolJob, is_async: bool) -> tuple[Any, Any, tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    _worker_seams()
    tool = resolve(job.tool)
    tunnel = job.run.tunnel()
    manager = job.run.manager("tool", is_async, tunnel)
    kwargs = {k: _build_value(v, tunnel) for k, v in job.kwargs.items()}
    if job.wants_run_manager:
        kwargs["run_manager"] = manager
    ambient = job.ambient.build(tunnel)
    # The body's ambient config is the tool run's child config, as in BaseTool.run.
    ambient["callbacks"] = manager.get_child()
    fn = original(type(tool), job.method)
    return fn, tool, job.args, kwargs, ambient


def run_tool(job: ToolJob) -> Any:
    """Run a tool's ``_run`` on a worker thread."""
    job = resolve(job)
    fn, tool, args, kwargs, ambient = _tool_call(job, is_async=False)
    return _in_context(job.context, ambient, lambda: fn(tool, *args, **kwargs))


async def arun_tool(job: ToolJob) -> Any:
    """Run a tool's ``_arun`` on the worker's event loop."""
    job = resolve(job)
    fn, tool, args, kwargs, ambient = _tool_call(job, is_async=True)
    return await _ain_context(job.context, ambient, lambda: fn(tool, *args, **kwargs))


def run_model(job: Any, model: Any = None) -> Any:
    """Run a chat model's ``_generate_with_cache`` on a worker thread."""
    _worker_seams()
    job = resolve(job)
    model = resolve(job.model) if model is None else model
    manager = job.run.manager("llm", False, job.run.tunnel())
    fn = original(type(model), "_generate_with_cache")
    return pack_result(_in_context(job.context, None, lambda: fn(model, job.messages, stop=job.stop, run_manager=manager, **job.kwargs)))


async def arun_model(job: Any, model: Any = None) -> Any:
    """Run a chat model's ``_agenerate_with_cache`` on the worker's event loop."""
    _worker_seams()
    job = resolve(job)
    model = resolve(job.model) if model is None else model
    manager = job.run.manager("llm", True, job.run.tunnel())
    fn = original(type(model), "_agenerate_with_cache")
    return pack_result(await _ain_context(job.context, None, lambda: fn(model, job.messages, stop=job.stop, run_manager=manager, **job.kwargs)))


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
        model: The chat model object (``None`` until resolved on a worker).
        sent: What travels in its place (a by-reference handle or a rebuild recipe).
        name: The instance's label (for ``repr``).
    """

    def __init__(self, model: Any, sent: Any, name: str) -> None:
        self._model = model
        self.sent = sent
        self.name = name

    @property
    def model(self) -> Any:
        """The chat model (made from what travelled, on a worker)."""
        if self._model is None:
            self._model = resolve(self.sent)
        return self._model

    # The names and sync/async shapes are BaseChatModel's own: a chat model
    # deployed with plain rt.deploy is the probe of its component, and the
    # Runtime asks the probe whether a method is a coroutine function.
    def generate(self, job: Any, *args: Any, **kwargs: Any) -> Any:
        """Serve a sync model call on this instance (a job from the seams, else the model's own)."""
        if isinstance(job, (ModelJob, Lazy)):
            return run_model(job, self.model)
        return self.model.generate(job, *args, **kwargs)

    async def agenerate(self, job: Any, *args: Any, **kwargs: Any) -> Any:
        """Serve an async model call on this instance (a job from the seams, else the model's own)."""
        if isinstance(job, (ModelJob, Lazy)):
            return await arun_model(job, self.model)
        return await self.model.agenerate(job, *args, **kwargs)

    def stream(self, job: Any, *args: Any, **kwargs: Any) -> Any:
        """Serve a streamed call on this instance (a job from the seams, else the model's own).

        Async callers use it too: the worker iterates the sync stream while the
        caller awaits the chunks.
        """
        from ._stream import run_model_stream

        if isinstance(job, Lazy) or type(job).__name__ == "StreamJob":
            return run_model_stream(job, self.model)
        return self.model.stream(job, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # rt.call(component, "invoke", ...) reaches the model itself.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def __reduce__(self) -> Any:
        return (ModelEndpoint, (None, self.sent, self.name))

    def __repr__(self) -> str:
        return f"<nalar model instance {self.name}>"
