"""The actuator: wraps of the execution paths of LangChain tools and chat models.

Installed once per process (reference-counted by the adapter services that use
them). Each wrap looks for a switch (:mod:`.activation`) and, without one,
calls the original at once, so runs without nalar are untouched.

The intercepted paths, chosen so that callback events keep firing in the caller:

* ``BaseTool.run`` / ``BaseTool.arun`` (public). With a switch on, the original
  runs (argument parsing, ``on_tool_start``/``on_tool_end``, error handling,
  the ``ToolMessage``) on a shallow copy of the tool whose ``_run``/``_arun``
  make the call; the body itself runs on the original tool object.
* ``BaseChatModel._generate_with_cache`` / ``_agenerate_with_cache`` (private):
  called by ``generate``/``agenerate`` after ``on_chat_model_start`` and before
  ``on_llm_end``, with the run manager, so the whole provider path (cache,
  rate limiter, streaming decision, ``_generate``/``_stream``) runs as the
  call, on the instance the controllers chose when the model is deployed.
* ``BaseChatModel.stream`` / ``astream`` (public), for nodes that iterate a
  model's stream themselves: see :mod:`.streaming`.

The private paths are pinned in :data:`GUARDED`: ``tests/adapters`` checks the
installed langchain-core against them, so an upgrade that changes them fails
in CI instead of misbehaving in production.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import threading
import typing
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import run_in_executor
from langchain_core.tools import BaseTool

from ..errors import RuntimeStateError
from .activation import Switch, find_switch
from .remote import ModelJob, ToolJob, arun_model, arun_tool, original, pack_result, run_model, run_tool, unpack_result
from .requests import AdapterCall, model_call, plain_config
from .shipping import NotSendable, check_sendable, sendable
from .streaming import wrap_astream, wrap_stream

__all__ = ["GUARDED", "install", "installed", "source_digest", "uninstall"]

# (owner, attribute) -> digests of the sources these wraps were written and
# tested against (langchain-core 1.8.3). A new langchain-core whose source
# differs fails tests/adapters/test_interception.py: read the new source, check
# what the wrap relies on (see the module docstring), then add its digest here.
GUARDED: dict[tuple[type, str], set[str]] = {
    (BaseTool, "run"): {"bbecef2a444a14bf"},
    (BaseTool, "arun"): {"a730463f4c645a09"},
    (BaseChatModel, "_generate_with_cache"): {"2eb4c78ca2792b0a"},
    (BaseChatModel, "_agenerate_with_cache"): {"d03a5d3c0ad649a0"},
    (BaseChatModel, "stream"): {"55fe993e76fa7c68"},
    (BaseChatModel, "astream"): {"1cc95f1b1b80689f"},
}

_LOCK = threading.Lock()
_USERS = [0]

# BaseTool.run(self, tool_input, verbose, start_color, color, callbacks, *, ..., tool_call_id, ...):
# callbacks is the fifth argument after self.
_CALLBACKS_AT = 4


def source_digest(owner: type, name: str) -> str:
    """The digest of the original ``owner.name``'s source, as :data:`GUARDED` pins it."""
    fn = owner.__dict__[name]
    fn = getattr(fn, "__nalar_original__", fn)
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]


# -- tools ----------------------------------------------------------------------
def _config_param(fn: Any) -> str | None:
    """The name of a ``RunnableConfig`` parameter of ``fn`` (as LangChain finds it)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    for name, hint in hints.items():
        if hint is RunnableConfig:
            return name
    return None


def _dispatcher_signature(fn: Any) -> inspect.Signature:
    """``fn``'s signature without ``self``, with a ``run_manager`` parameter.

    ``BaseTool.run`` passes the run manager only to a ``_run`` that declares
    one; the dispatcher always wants it (for the run's context).
    """
    params = list(inspect.signature(fn).parameters.values())[1:]
    if not any(p.name == "run_manager" for p in params):
        extra = inspect.Parameter("run_manager", inspect.Parameter.KEYWORD_ONLY, default=None)
        at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
        params.insert(at, extra)
    return inspect.Signature(params)


@functools.lru_cache(maxsize=1024)
def _body_facts(fn: Any) -> tuple[bool, str | None, inspect.Signature]:
    """What a tool body's signature says (computed once per body function).

    Returns:
        Whether it takes ``run_manager``, its ``RunnableConfig`` parameter, and
        the signature the dispatcher shows ``BaseTool.run``.
    """
    return "run_manager" in inspect.signature(fn).parameters, _config_param(fn), _dispatcher_signature(fn)


class _ToolCall:
    """The body of one intercepted tool call, and what it needs to run as a nalar call."""

    def __init__(self, switch: Switch, tool: BaseTool, method: str, tool_call_id: str | None) -> None:
        self.switch = switch
        self.tool = tool
        self.method = method
        self.tool_call_id = tool_call_id
        self.fn = original(type(tool), method)
        self.wants, self.config_param, self.signature = _body_facts(self.fn)

    def kwargs_for(self, kwargs: dict[str, Any], run_manager: Any) -> dict[str, Any]:
        return {**kwargs, "run_manager": run_manager} if self.wants else kwargs

    def identity(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """What the journal's argument hash sees: the tool and what the model asked for."""
        plain = {k: v for k, v in kwargs.items()
                 if k != self.config_param and not hasattr(v, "stream_writer") and not hasattr(v, "tool_call_id")}
        return {"tool": self.tool.name, "method": self.method, "args": list(args), "kwargs": plain}

    def open(self, run_manager: Any, is_async: bool) -> tuple[AdapterCall, dict[str, Any]] | None:
        call = AdapterCall(self.switch.service, self.switch, "tool", self.tool.name, run_manager, is_async)
        if not call.routed():
            return None
        deps = call.recorder.deps_for_tool(call.info, call.session, self.tool_call_id) if call.session else []
        return call, call.options(deps, call.key(self.tool_call_id))

    def job(self, call: AdapterCall, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ToolJob | None:
        """The shipped job, or ``None`` when the tool is not to be shipped or cannot travel."""
        if not call.service.ships_tool(self.switch, self.tool.name):
            return None
        name = f"tool {self.tool.name!r}"
        try:
            if any(hasattr(v, "stream_writer") for v in kwargs.values()):
                raise NotSendable(name, "its arguments include LangGraph's runtime, which stays in the caller")
            packed = {k: check_sendable(v, f"argument {k!r} of {name}") for k, v in kwargs.items()
                      if k != self.config_param}
            sent_args = tuple(check_sendable(a, f"an argument of {name}") for a in args)
            tool = sendable(self.tool, name)
            call.open_channel()
            spec = call.run_spec()
            config = plain_config(kwargs[self.config_param]) if self.config_param in kwargs else None
            return ToolJob(tool, self.method, sent_args, packed, spec, self.wants, metadata=dict(spec.metadata),
                           config_param=self.config_param if config is not None else None, config=config)
        except NotSendable as exc:
            call.warn_in_place(self.tool, exc)
            return None


def _tool_result(tool: BaseTool, result: Any) -> Any:
    # A result replayed from the journal comes back as plain data: a
    # (content, artifact) pair is a list there, and BaseTool.run wants a tuple.
    if tool.response_format == "content_and_artifact" and isinstance(result, list) and len(result) == 2:
        return tuple(result)
    return result


def _tool_sync(spec: _ToolCall, args: tuple[Any, ...], kwargs: dict[str, Any], run_manager: Any) -> Any:
    opened = spec.open(run_manager, is_async=False)
    if opened is None:
        return spec.fn(spec.tool, *args, **spec.kwargs_for(kwargs, run_manager))
    call, options = opened
    directives = call.directives()
    job = spec.job(call, args, kwargs)
    if job is not None:
        fut = call.ship(run_tool, "invoke", job, options, directives)
        value = call.wait(fut)
        call.note(fut.call_id, spec.tool_call_id)
        return _tool_result(spec.tool, value)
    inline = call.inline("invoke", spec.identity(args, kwargs), options, directives)
    if not inline.admitted():
        return _tool_result(spec.tool, inline.value())
    try:
        with inline.running() as scope:
            result = spec.fn(spec.tool, *args, **spec.kwargs_for(kwargs, run_manager))
        ops = scope.encoded_ops()
    except BaseException as exc:
        inline.fail(exc)
        raise
    inline.finish(result, ops)  # without staged writes it is finished at once, the journal writes behind
    value = inline.value()
    call.note(inline.future.call_id, spec.tool_call_id)
    return _tool_result(spec.tool, value)


async def _tool_async(spec: _ToolCall, args: tuple[Any, ...], kwargs: dict[str, Any], run_manager: Any) -> Any:
    async def body() -> Any:
        if spec.method == "_run":  # a tool with no native _arun: its sync body in an executor, as LangChain does
            from_rm = run_manager.get_sync() if run_manager is not None and spec.wants else None
            out = functools.partial(spec.fn, spec.tool, *args, **spec.kwargs_for(kwargs, from_rm))
            return await _run_in_executor(out)
        return await spec.fn(spec.tool, *args, **spec.kwargs_for(kwargs, run_manager))

    opened = spec.open(run_manager, is_async=True)
    if opened is None:
        return await body()
    call, options = opened
    directives = call.directives()
    job = spec.job(call, args, kwargs)
    if job is not None:
        task = arun_tool if spec.method == "_arun" else run_tool
        fut = call.ship(task, "ainvoke", job, options, directives)
        value = await call.await_(fut)
        call.note(fut.call_id, spec.tool_call_id)
        return _tool_result(spec.tool, value)
    inline = call.inline("ainvoke", spec.identity(args, kwargs), options, directives)
    if not await inline.aadmitted():
        return _tool_result(spec.tool, await inline.future)
    try:
        with inline.running() as scope:
            result = await body()
        ops = scope.encoded_ops()
    except BaseException as exc:
        inline.fail(exc)
        raise
    inline.finish(result, ops)
    value = await inline.future
    call.note(inline.future.call_id, spec.tool_call_id)
    return _tool_result(spec.tool, value)


async def _run_in_executor(fn: Any) -> Any:
    return await run_in_executor(None, fn)


def _dispatcher(spec: _ToolCall, is_async: bool) -> Any:
    if is_async:
        async def dispatch(*args: Any, run_manager: Any = None, **kwargs: Any) -> Any:
            return await _tool_async(spec, args, kwargs, run_manager)
    else:
        def dispatch(*args: Any, run_manager: Any = None, **kwargs: Any) -> Any:  # type: ignore[misc]
            return _tool_sync(spec, args, kwargs, run_manager)
    dispatch.__signature__ = spec.signature  # type: ignore[attr-defined]
    dispatch.__annotations__ = {spec.config_param: RunnableConfig} if spec.config_param else {}
    return dispatch


def _served(tool: BaseTool, switch: Switch, tool_call_id: str | None) -> BaseTool:
    """A shallow copy of ``tool`` whose body runs as a nalar call (on the original tool).

    What LangChain caches on a tool from its body's signature (the injected
    arguments' names) is computed on the original, so the copy passes injected
    arguments exactly as the tool does without nalar, and only once per tool.
    """
    getattr(tool, "_injected_args_keys", None)  # a cached_property: cached on the original, copied below
    served = copy.copy(tool)
    # Instance attributes shadow the class's methods on this copy only.
    object.__setattr__(served, "_run", _dispatcher(_ToolCall(switch, tool, "_run", tool_call_id), False))
    native_async = type(tool)._arun is not BaseTool._arun
    method = "_arun" if native_async else "_run"
    object.__setattr__(served, "_arun", _dispatcher(_ToolCall(switch, tool, method, tool_call_id), True))
    return served


def _run_switch(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Switch | None:
    callbacks = kwargs.get("callbacks", args[_CALLBACKS_AT] if len(args) > _CALLBACKS_AT else None)
    return find_switch(callbacks)


def _wrap_run(orig: Any) -> Any:
    @functools.wraps(orig)
    def run(self: BaseTool, *args: Any, **kwargs: Any) -> Any:
        switch = _run_switch(args, kwargs)
        if switch is None:
            return orig(self, *args, **kwargs)
        return orig(_served(self, switch, kwargs.get("tool_call_id")), *args, **kwargs)

    run.__nalar_original__ = orig  # type: ignore[attr-defined]
    return run


def _wrap_arun(orig: Any) -> Any:
    @functools.wraps(orig)
    async def arun(self: BaseTool, *args: Any, **kwargs: Any) -> Any:
        switch = _run_switch(args, kwargs)
        if switch is None:
            return await orig(self, *args, **kwargs)
        return await orig(_served(self, switch, kwargs.get("tool_call_id")), *args, **kwargs)

    arun.__nalar_original__ = orig  # type: ignore[attr-defined]
    return arun


# -- chat models -------------------------------------------------------------------
def _model_options(call: AdapterCall, messages: list[Any], deployed: bool) -> dict[str, Any]:
    deps = call.recorder.deps_for_model(call.info, call.session, messages) if call.session else []
    return call.options(deps, call.key(), deployed)


def _model_job(call: AdapterCall, model: Any, messages: list[Any], stop: list[str] | None,
               kwargs: dict[str, Any]) -> ModelJob | None:
    """The shipped job of a deployed model's call, or ``None`` when it runs where it lives."""
    if not call.service.ships_models:
        return None
    name = f"chat model {call.component!r}"
    try:
        sent_messages = check_sendable(messages, f"the messages of {name}")
        sent_kwargs = {k: check_sendable(v, f"argument {k!r} of {name}") for k, v in kwargs.items()}
    except NotSendable as exc:
        call.warn_in_place(model, exc)
        return None
    call.open_channel()
    return ModelJob(None, sent_messages, stop, sent_kwargs, call.run_spec())


def _instance_model(inline: Any, default: Any) -> Any:
    endpoint = inline.endpoint
    if endpoint is None:
        return default
    return getattr(endpoint, "model", endpoint)


def _wrap_generate(orig: Any) -> Any:
    @functools.wraps(orig)
    def _generate_with_cache(self: BaseChatModel, messages: list[Any], stop: list[str] | None = None,
                             run_manager: Any = None, **kwargs: Any) -> Any:
        switch = find_switch(run_manager) if run_manager is not None else None
        if switch is None:
            return orig(self, messages, stop=stop, run_manager=run_manager, **kwargs)
        call, deployed = model_call(switch, self, run_manager, is_async=False)
        if not call.routed():
            return orig(self, messages, stop=stop, run_manager=run_manager, **kwargs)
        options = _model_options(call, messages, deployed)
        directives = call.directives()
        job = _model_job(call, self, messages, stop, kwargs) if deployed else None
        if job is not None:
            fut = call.ship(run_model, "generate", job, options, directives)
            result = unpack_result(call.wait(fut))
            call.note(fut.call_id, result=result)
            return result
        inline = call.inline("generate", {"messages": messages, "stop": stop, "kwargs": kwargs}, options, directives)
        if not inline.admitted():
            return unpack_result(inline.value())
        model = _instance_model(inline, self) if deployed else self
        try:
            with inline.running() as scope:
                result = orig(model, messages, stop=stop, run_manager=run_manager, **kwargs)
            ops = scope.encoded_ops()
        except BaseException as exc:
            inline.fail(exc)
            raise
        inline.finish(pack_result(result) if inline.call.key else result, ops)
        value = unpack_result(inline.value())
        call.note(inline.future.call_id, result=value)
        return value

    _generate_with_cache.__nalar_original__ = orig  # type: ignore[attr-defined]
    return _generate_with_cache


def _wrap_agenerate(orig: Any) -> Any:
    @functools.wraps(orig)
    async def _agenerate_with_cache(self: BaseChatModel, messages: list[Any], stop: list[str] | None = None,
                                    run_manager: Any = None, **kwargs: Any) -> Any:
        switch = find_switch(run_manager) if run_manager is not None else None
        if switch is None:
            return await orig(self, messages, stop=stop, run_manager=run_manager, **kwargs)
        call, deployed = model_call(switch, self, run_manager, is_async=True)
        if not call.routed():
            return await orig(self, messages, stop=stop, run_manager=run_manager, **kwargs)
        options = _model_options(call, messages, deployed)
        directives = call.directives()
        job = _model_job(call, self, messages, stop, kwargs) if deployed else None
        if job is not None:
            fut = call.ship(arun_model, "agenerate", job, options, directives)
            result = unpack_result(await call.await_(fut))
            call.note(fut.call_id, result=result)
            return result
        inline = call.inline("agenerate", {"messages": messages, "stop": stop, "kwargs": kwargs}, options, directives)
        if not await inline.aadmitted():
            return unpack_result(await inline.future)
        model = _instance_model(inline, self) if deployed else self
        try:
            with inline.running() as scope:
                result = await orig(model, messages, stop=stop, run_manager=run_manager, **kwargs)
            ops = scope.encoded_ops()
        except BaseException as exc:
            inline.fail(exc)
            raise
        inline.finish(pack_result(result) if inline.call.key else result, ops)
        value = unpack_result(await inline.future)
        call.note(inline.future.call_id, result=value)
        return value

    _agenerate_with_cache.__nalar_original__ = orig  # type: ignore[attr-defined]
    return _agenerate_with_cache


def _wrappers() -> dict[tuple[type, str], Any]:
    return {
        (BaseTool, "run"): _wrap_run,
        (BaseTool, "arun"): _wrap_arun,
        (BaseChatModel, "_generate_with_cache"): _wrap_generate,
        (BaseChatModel, "_agenerate_with_cache"): _wrap_agenerate,
        (BaseChatModel, "stream"): wrap_stream,
        (BaseChatModel, "astream"): wrap_astream,
    }


def installed() -> bool:
    """True while the wraps are in place."""
    return hasattr(BaseTool.run, "__nalar_original__")


def users() -> int:
    """How many adapter services hold the wraps now."""
    with _LOCK:
        return _USERS[0]


def install() -> None:
    """Wrap the execution paths (once per process; pair each call with :func:`uninstall`).

    Raises:
        RuntimeStateError: The installed LangChain lacks a path (an incompatible version).
    """
    with _LOCK:
        _USERS[0] += 1
        if _USERS[0] > 1:
            return
        for (owner, name), wrap in _wrappers().items():
            fn = owner.__dict__.get(name)
            if fn is None:
                _USERS[0] -= 1
                raise RuntimeStateError(
                    f"{owner.__name__}.{name} does not exist in this langchain-core; nalar's adapters "
                    "need a langchain-core version they were tested with (see tests/adapters/test_interception.py)"
                )
            setattr(owner, name, wrap(fn))


def uninstall() -> None:
    """Undo one :func:`install`; the last one restores the originals."""
    with _LOCK:
        if _USERS[0] == 0:
            return
        _USERS[0] -= 1
        if _USERS[0]:
            return
        for owner, name in _wrappers():
            fn = owner.__dict__.get(name)
            orig = getattr(fn, "__nalar_original__", None)
            if orig is not None:
                setattr(owner, name, orig)
