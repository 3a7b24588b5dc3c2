"""What runs on a worker process for a shipped model or tool call.

The caller packs a :class:`ModelJob`, :class:`StreamJob` or :class:`ToolJob`;
the functions here (importable on every worker) unpack it, give the body a run
manager whose handler is a :class:`~.events.Tunnel` to the caller, and run the
*original* execution path (``_generate_with_cache``/``_agenerate_with_cache``,
``stream``/``astream``, a tool's ``_run``/``_arun``). Run ids, tags and
metadata are the caller's, so the events the caller replays are the ones it
would have seen without nalar.

:class:`ModelEndpoint` is one instance of a deployed chat model: the model and
how it travels to workers.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
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
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables.config import var_child_runnable_config

from ..context import active_runtime
from .events import Tunnel, tunnel_class
from .shipping import Lazy, resolve

__all__ = [
    "CHUNK",
    "ModelEndpoint",
    "ModelJob",
    "RunSpec",
    "StreamJob",
    "ToolJob",
    "arun_model",
    "arun_model_stream",
    "arun_tool",
    "original",
    "pack_result",
    "run_model",
    "run_model_stream",
    "run_tool",
    "unpack_result",
]

CHUNK = "nalar_stream_chunk"  # the event that carries one streamed chunk


def original(cls: type, name: str) -> Callable[..., Any]:
    """The unwrapped ``cls.name``: what runs when nalar serves the call."""
    fn = getattr(cls, name)
    return getattr(fn, "__nalar_original__", fn)


def _sender() -> Callable[[str, bytes], None] | None:
    # Inside a shipped call the active sink is the worker's link to the driver.
    link = active_runtime()
    return getattr(link, "emit", None)


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

    def tunnel(self) -> Tunnel:
        """The tunnel of this run, streaming exactly when the caller's handlers do."""
        return tunnel_class(self.stream_v1, self.stream_v2)(self.channel, _sender())

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


@dataclass
class ModelJob:
    """One shipped chat-model call: the arguments of ``_generate_with_cache``.

    Attributes:
        model: The model, or ``None`` for a deployed component (the instance has it).
        messages: The input messages.
        stop: Stop words.
        kwargs: Bound keyword arguments (tools, tool choice ...).
        run: The caller's model run.
    """

    model: Any
    messages: list[Any]
    stop: list[str] | None
    kwargs: dict[str, Any]
    run: RunSpec

    def model_dump(self) -> dict[str, Any]:
        """The call's identity for the journal's argument hash: the prompt and its options."""
        return {"messages": list(self.messages), "stop": self.stop, "kwargs": self.kwargs}


@dataclass
class StreamJob:
    """One shipped streamed chat-model call: the arguments of ``stream``/``astream``."""

    model: Any
    input: Any
    config: dict[str, Any]
    callbacks: dict[str, Any]
    stop: list[str] | None
    kwargs: dict[str, Any]
    channel: str
    flags: tuple[bool, bool]


@dataclass
class ToolJob:
    """One shipped tool call: the tool and the arguments of its ``_run``/``_arun``."""

    tool: Any
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    run: RunSpec
    wants_run_manager: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    config_param: str | None = None  # the body's RunnableConfig parameter, if it has one
    config: dict[str, Any] | None = None  # what of the caller's config travelled

    def model_dump(self) -> dict[str, Any]:
        """The call's identity for the journal's argument hash: tool and arguments."""
        name = getattr(self.tool, "name", None) or getattr(self.tool, "attr", None) or type(self.tool).__name__
        return {"tool": name, "method": self.method, "args": list(self.args), "kwargs": dict(self.kwargs)}


def pack_result(result: Any) -> dict[str, Any]:
    """A ``ChatResult`` as data the journal's serde stores and rebuilds (messages, dicts)."""
    return {
        "generations": [{"message": g.message, "generation_info": g.generation_info} for g in result.generations],
        "llm_output": result.llm_output,
    }


def unpack_result(data: Any) -> Any:
    """Rebuild the ``ChatResult`` of :func:`pack_result`."""
    if isinstance(data, ChatResult):
        return data
    generations = [ChatGeneration(message=g["message"], generation_info=g.get("generation_info"))
                   for g in data["generations"]]
    return ChatResult(generations=generations, llm_output=data.get("llm_output"))


def _with_config(config: dict[str, Any], fn: Callable[[], Any]) -> Any:
    ctx = contextvars.copy_context()
    ctx.run(var_child_runnable_config.set, config)  # type: ignore[arg-type]
    return ctx.run(fn)


def run_model(job: ModelJob, model: Any = None) -> Any:
    """Run a chat model's ``_generate_with_cache`` on a worker thread."""
    model = resolve(job.model) if model is None else model
    manager = job.run.manager("llm", False, job.run.tunnel())
    fn = original(type(model), "_generate_with_cache")
    return pack_result(fn(model, job.messages, stop=job.stop, run_manager=manager, **job.kwargs))


async def arun_model(job: ModelJob, model: Any = None) -> Any:
    """Run a chat model's ``_agenerate_with_cache`` on the worker's call loop."""
    model = resolve(job.model) if model is None else model
    manager = job.run.manager("llm", True, job.run.tunnel())
    fn = original(type(model), "_agenerate_with_cache")
    return pack_result(await fn(model, job.messages, stop=job.stop, run_manager=manager, **job.kwargs))


def _stream_config(job: StreamJob) -> dict[str, Any]:
    tunnel = tunnel_class(*job.flags)(job.channel, _sender())
    spec = job.callbacks
    manager = CallbackManager(
        handlers=[tunnel], inheritable_handlers=[tunnel], parent_run_id=spec.get("parent_run_id"),
        tags=list(spec.get("tags") or []), inheritable_tags=list(spec.get("inheritable_tags") or []),
        metadata=dict(spec.get("metadata") or {}), inheritable_metadata=dict(spec.get("inheritable_metadata") or {}),
    )
    return {**job.config, "callbacks": manager}


def run_model_stream(job: StreamJob, model: Any = None) -> int:
    """Run ``stream`` on a worker thread, sending each chunk to the caller; return the count."""
    model = resolve(job.model) if model is None else model
    send = _sender()
    n = 0
    for chunk in original(type(model), "stream")(model, job.input, _stream_config(job), stop=job.stop, **job.kwargs):
        if send is not None:
            Tunnel(job.channel, send).forward((CHUNK, (chunk,), {}))
        n += 1
    return n


async def arun_model_stream(job: StreamJob, model: Any = None) -> int:
    """Run ``astream`` on the worker's call loop, sending each chunk to the caller."""
    model = resolve(job.model) if model is None else model
    send = _sender()
    n = 0
    async for chunk in original(type(model), "astream")(model, job.input, _stream_config(job), stop=job.stop,
                                                          **job.kwargs):
        if send is not None:
            Tunnel(job.channel, send).forward((CHUNK, (chunk,), {}))
        n += 1
    return n


def _tool_call(job: ToolJob, is_async: bool) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    tool = resolve(job.tool)
    manager = job.run.manager("tool", is_async, job.run.tunnel())
    kwargs = dict(job.kwargs)
    if job.wants_run_manager:
        kwargs["run_manager"] = manager
    # The body's ambient config is the tool run's child config, as in BaseTool.run.
    ambient = {**(job.config or {}), "callbacks": manager.get_child()}
    ambient.setdefault("metadata", dict(job.metadata))
    if job.config_param is not None:
        kwargs[job.config_param] = ambient
    return original(type(tool), job.method), tool, kwargs, ambient


def run_tool(job: ToolJob) -> Any:
    """Run a tool's ``_run`` on a worker thread."""
    fn, tool, kwargs, ambient = _tool_call(job, is_async=False)
    return _with_config(ambient, lambda: fn(tool, *job.args, **kwargs))


async def arun_tool(job: ToolJob) -> Any:
    """Run a tool's ``_arun`` on the worker's call loop."""
    fn, tool, kwargs, ambient = _tool_call(job, is_async=True)
    token = var_child_runnable_config.set(ambient)  # type: ignore[arg-type]
    try:
        return await fn(tool, *job.args, **kwargs)
    finally:
        var_child_runnable_config.reset(token)


class ModelEndpoint:
    """One instance of a deployed chat model: the model, and how it travels to workers.

    Made when a chat model is deployed (``rt.deploy_model`` or ``rt.deploy``);
    the controllers pick the instance of each call. Calls that run where they
    live use :attr:`model`; a shipped call runs on a worker with the model
    rebuilt there from :attr:`sent`.

    Args:
        model: The chat model object (``None`` until resolved on a worker).
        sent: What travels in its place (``None`` when it does not travel).
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

    # The names and sync/async shapes are BaseChatModel's own: the components
    # service asks the first instance whether a method is a coroutine function.
    def generate(self, job: Any, *args: Any, **kwargs: Any) -> Any:
        """Serve a sync model call on this instance (a shipped job, else the model's own)."""
        if isinstance(job, (ModelJob, Lazy)):
            return run_model(job, self.model)  # type: ignore[arg-type]
        return self.model.generate(job, *args, **kwargs)

    async def agenerate(self, job: Any, *args: Any, **kwargs: Any) -> Any:
        """Serve an async model call on this instance (a shipped job, else the model's own)."""
        if isinstance(job, (ModelJob, Lazy)):
            return await arun_model(job, self.model)  # type: ignore[arg-type]
        return await self.model.agenerate(job, *args, **kwargs)

    def stream(self, job: Any, *args: Any, **kwargs: Any) -> Any:
        """Serve a streamed call on this instance (a shipped job, else the model's own)."""
        if isinstance(job, StreamJob):
            return run_model_stream(job, self.model)
        return self.model.stream(job, *args, **kwargs)

    async def astream(self, job: Any, *args: Any, **kwargs: Any) -> Any:
        """Serve an async streamed call on this instance (a shipped job)."""
        return await arun_model_stream(job, self.model)

    def __getattr__(self, name: str) -> Any:
        # rt.call(component, "invoke", ...) reaches the model itself.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def __reduce__(self) -> Any:
        return (ModelEndpoint, (None, self.sent, self.name))

    def __repr__(self) -> str:
        return f"<nalar model instance {self.name}>"
