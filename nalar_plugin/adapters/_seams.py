"""The actuator: wraps of the execution paths of LangChain tools and chat models.

Installed once per process (reference-counted by the Runtimes that use the
adapters) by :class:`AdapterPlugin`, a pluggy plugin registered on the
Runtime. Each wrap looks for a switch (:mod:`._switch`) and, without one, calls
the original at once, so runs without nalar are untouched.

The seams, chosen so that callback events keep firing in the caller:

* ``BaseTool.run`` / ``BaseTool.arun`` (public). With a switch on, the original
  runs in the caller (argument parsing, ``on_tool_start``/``on_tool_end``,
  error handling, the ``ToolMessage``), on a shallow copy of the tool whose
  ``_run``/``_arun`` make the call: only the tool body runs on the cluster.
* ``BaseChatModel._generate_with_cache`` / ``_agenerate_with_cache`` (private):
  called by ``generate``/``agenerate`` after ``on_chat_model_start`` and before
  ``on_llm_end``, with the run manager, so the whole provider path (cache,
  rate limiter, streaming decision, ``_generate``/``_stream``) runs on the
  cluster and its tokens reach the caller's handlers through the tunnel.
* ``BaseChatModel.stream`` / ``astream`` (public), for nodes that iterate a
  model's stream themselves: see :mod:`._stream`.

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
from langchain_core.tools import BaseTool

from ..errors import RuntimeStateError
from ..hookspecs import hookimpl
from . import _jobs
from ._dispatch import GATES, AdapterCall
from ._parcel import NotSendable
from ._switch import Switch, find_switch

__all__ = ["GUARDED", "AdapterPlugin", "install", "installed", "source_digest", "uninstall"]

# (owner, attribute) -> digests of the sources these wraps were written and
# tested against (langchain-core 1.8.3). A new langchain-core whose source
# differs fails tests/adapters/test_seams.py: read the new source, check what
# the wrap relies on (see the module docstring), then add its digest here.
GUARDED: dict[tuple[type, str], set[str]] = {
    (BaseTool, "run"): {"bbecef2a444a14bf"},
    (BaseTool, "arun"): {"a730463f4c645a09"},
    (BaseChatModel, "_generate_with_cache"): {"2eb4c78ca2792b0a"},
    (BaseChatModel, "_agenerate_with_cache"): {"d03a5d3c0ad649a0"},
    (BaseChatModel, "stream"): {"55fe993e76fa7c68"},
    (BaseChatModel, "astream"): {"1cc95f1b1b80689f"},
}

_LOCK = threading.Lock()
_USERS = 0


def source_digest(owner: type, name: str) -> str:
    """The digest of the original ``owner.name``'s source, as :data:`GUARDED` pins it."""
    fn = owner.__dict__[name]
    fn = getattr(fn, "__nalar_original__", fn)
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]

# BaseTool.run(self, tool_input, verbose, start_color, color, callbacks, *, ..., tool_call_id, ...):
# callbacks is the fifth argument after self.
_CALLBACKS_AT = 4


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
    one; the dispatcher always wants it (to rebuild the run on the worker).
    """
    params = list(inspect.signature(fn).parameters.values())[1:]
    if not any(p.name == "run_manager" for p in params):
        extra = inspect.Parameter("run_manager", inspect.Parameter.KEYWORD_ONLY, default=None)
        at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
        params.insert(at, extra)
    return inspect.Signature(params)


def _dispatcher(tool: BaseTool, switch: Switch, tool_call_id: str | None, method: str, is_async: bool) -> Any:
    fn = _jobs.original(type(tool), method)
    wants = "run_manager" in inspect.signature(fn).parameters
    config_param = _config_param(fn)
    if is_async:
        async def dispatch(*args: Any, run_manager: Any = None, **kwargs: Any) -> Any:
            return await _tool_async(switch, tool, method, args, kwargs, run_manager, tool_call_id, wants, config_param)
    else:
        def dispatch(*args: Any, run_manager: Any = None, **kwargs: Any) -> Any:  # type: ignore[misc]
            return _tool_sync(switch, tool, method, args, kwargs, run_manager, tool_call_id, wants, config_param)
    dispatch.__signature__ = _dispatcher_signature(fn)  # type: ignore[attr-defined]
    dispatch.__annotations__ = {config_param: RunnableConfig} if config_param else {}
    return dispatch


def _served(tool: BaseTool, switch: Switch, tool_call_id: str | None) -> BaseTool:
    """A shallow copy of ``tool`` whose body runs as a nalar call."""
    served = copy.copy(tool)
    # Instance attributes shadow the class's methods on this copy only.
    object.__setattr__(served, "_run", _dispatcher(tool, switch, tool_call_id, "_run", False))
    native_async = type(tool)._arun is not BaseTool._arun
    # A tool without a native _arun runs its sync _run on a worker thread.
    object.__setattr__(served, "_arun", _dispatcher(tool, switch, tool_call_id, "_arun" if native_async else "_run", True))
    return served


def _with_run_manager(kwargs: dict[str, Any], run_manager: Any, wants: bool) -> dict[str, Any]:
    return {**kwargs, "run_manager": run_manager} if wants else kwargs


def _tool_sync(switch: Switch, tool: BaseTool, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
               run_manager: Any, tool_call_id: str | None, wants: bool, config_param: str | None) -> Any:
    fn = _jobs.original(type(tool), method)

    def body() -> Any:
        return fn(tool, *args, **_with_run_manager(kwargs, run_manager, wants))

    call = AdapterCall(switch, "tool", tool.name, run_manager, is_async=False)
    try:
        if not call.routed():
            return body()
        deps = _tool_deps(call, tool_call_id)
        options = call.options(deps, call.key(tool_call_id))
        try:
            payload = call.tool_job(tool, method, args, kwargs, wants, config_param)
        except NotSendable as exc:
            return call.in_process(exc, options, body)
        fut = call.submit(call.stub(_jobs.run_tool, "invoke"), payload, options)
        _note(call, fut, tool_call_id)
        return _tool_result(tool, call.wait(fut))
    finally:
        call.done()


async def _tool_async(switch: Switch, tool: BaseTool, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                      run_manager: Any, tool_call_id: str | None, wants: bool, config_param: str | None) -> Any:
    fn = _jobs.original(type(tool), method)

    async def body() -> Any:
        if method == "_run":
            sync_rm = run_manager.get_sync() if run_manager is not None and wants else None
            out = functools.partial(fn, tool, *args, **_with_run_manager(kwargs, sync_rm, wants))
            from langchain_core.runnables.config import run_in_executor

            return await run_in_executor(None, out)
        return await fn(tool, *args, **_with_run_manager(kwargs, run_manager, wants))

    call = AdapterCall(switch, "tool", tool.name, run_manager, is_async=True)
    try:
        if not call.routed():
            return await body()
        deps = _tool_deps(call, tool_call_id)
        options = call.options(deps, call.key(tool_call_id))
        try:
            payload = call.tool_job(tool, method, args, kwargs, wants, config_param)
        except NotSendable as exc:
            return await call.ain_process(exc, options, body)
        task = _jobs.arun_tool if method == "_arun" else _jobs.run_tool
        fut = call.submit(call.stub(task, "ainvoke"), payload, options)
        _note(call, fut, tool_call_id)
        return _tool_result(tool, await call.await_(fut))
    finally:
        call.done()


def _tool_result(tool: BaseTool, result: Any) -> Any:
    # A result replayed from the journal comes back as plain data: a
    # (content, artifact) pair is a list there, and BaseTool.run wants a tuple.
    if tool.response_format == "content_and_artifact" and isinstance(result, list) and len(result) == 2:
        return tuple(result)
    return result


def _tool_deps(call: AdapterCall, tool_call_id: str | None) -> list[Any]:
    if call.recorder is None or call.session is None:
        return []
    return call.recorder.deps_for_tool(call.info, call.session, tool_call_id)


def _note(call: AdapterCall, fut: Any, tool_call_id: str | None = None) -> None:
    if call.recorder is not None and call.session is not None:
        call.recorder.note_call(call.info, call.session, fut, tool_call_id)


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
def _model_target(call_state: Any, model: BaseChatModel) -> tuple[str, bool]:
    """The component of a model call, and whether it is a deployed component."""
    if call_state is not None:
        deployed = call_state.component_of(model)
        if deployed is not None:
            return deployed, True
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    return (name if isinstance(name, str) and name else type(model).__name__), False


def _model_call(switch: Switch, model: BaseChatModel, run_manager: Any, is_async: bool) -> AdapterCall:
    from ._switch import runtime_of

    state = getattr(runtime_of(switch), "_nalar_adapters", None)
    component, deployed = _model_target(state, model)
    call = AdapterCall(switch, "model", component, run_manager, is_async=is_async)
    call.deployed = deployed  # type: ignore[attr-defined]
    return call


def _model_prepare(call: AdapterCall, messages: list[Any]) -> dict[str, Any]:
    deps: list[Any] = []
    if call.recorder is not None and call.session is not None:
        deps = call.recorder.deps_for_model(call.info, call.session, messages)
    return call.options(deps, call.key())


def _model_finish(call: AdapterCall, fut: Any, result: Any) -> Any:
    if call.recorder is not None and call.session is not None:
        call.recorder.note_model_result(call.session, fut, result)
    return result


def _wrap_generate(orig: Any) -> Any:
    @functools.wraps(orig)
    def _generate_with_cache(self: BaseChatModel, messages: list[Any], stop: list[str] | None = None,
                             run_manager: Any = None, **kwargs: Any) -> Any:
        switch = find_switch(run_manager) if run_manager is not None else None
        if switch is None:
            return orig(self, messages, stop=stop, run_manager=run_manager, **kwargs)
        call = _model_call(switch, self, run_manager, is_async=False)
        try:
            if not call.routed():
                return orig(self, messages, stop=stop, run_manager=run_manager, **kwargs)
            options = _model_prepare(call, messages)
            deployed = call.deployed  # type: ignore[attr-defined]
            try:
                payload = call.model_job(self, messages, stop, kwargs, deployed)
            except NotSendable as exc:
                return call.in_process(exc, options, lambda: orig(self, messages, stop=stop, run_manager=run_manager, **kwargs))
            if deployed:
                fut = call.submit(call.stub(_jobs.run_model, "generate"), payload, options, component_method="generate")
            else:
                fut = call.submit(call.stub(_jobs.run_model, "generate"), payload, options)
            _note(call, fut)
            return _model_finish(call, fut, _jobs.unpack_result(call.wait(fut)))
        finally:
            call.done()

    _generate_with_cache.__nalar_original__ = orig  # type: ignore[attr-defined]
    return _generate_with_cache


def _wrap_agenerate(orig: Any) -> Any:
    @functools.wraps(orig)
    async def _agenerate_with_cache(self: BaseChatModel, messages: list[Any], stop: list[str] | None = None,
                                    run_manager: Any = None, **kwargs: Any) -> Any:
        switch = find_switch(run_manager) if run_manager is not None else None
        if switch is None:
            return await orig(self, messages, stop=stop, run_manager=run_manager, **kwargs)
        call = _model_call(switch, self, run_manager, is_async=True)
        try:
            if not call.routed():
                return await orig(self, messages, stop=stop, run_manager=run_manager, **kwargs)
            options = _model_prepare(call, messages)
            deployed = call.deployed  # type: ignore[attr-defined]
            try:
                payload = call.model_job(self, messages, stop, kwargs, deployed)
            except NotSendable as exc:
                return await call.ain_process(exc, options, lambda: orig(self, messages, stop=stop, run_manager=run_manager, **kwargs))
            if deployed:
                fut = call.submit(call.stub(_jobs.arun_model, "agenerate"), payload, options, component_method="agenerate")
            else:
                fut = call.submit(call.stub(_jobs.arun_model, "agenerate"), payload, options)
            _note(call, fut)
            return _model_finish(call, fut, _jobs.unpack_result(await call.await_(fut)))
        finally:
            call.done()

    _agenerate_with_cache.__nalar_original__ = orig  # type: ignore[attr-defined]
    return _agenerate_with_cache


def _wrappers() -> dict[tuple[type, str], Any]:
    from ._stream import wrap_astream, wrap_stream

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


def install() -> None:
    """Wrap the seams (once per process; each call must be paired with :func:`uninstall`).

    Raises:
        RuntimeStateError: The installed LangChain lacks a seam (an incompatible version).
    """
    global _USERS
    with _LOCK:
        _USERS += 1
        if _USERS > 1:
            return
        for (owner, name), wrap in _wrappers().items():
            fn = owner.__dict__.get(name)
            if fn is None:
                _USERS -= 1
                raise RuntimeStateError(
                    f"{owner.__name__}.{name} does not exist in this langchain-core; nalar's adapters "
                    "need a langchain-core version they were tested with (see tests/adapters/test_seams.py)"
                )
            setattr(owner, name, wrap(fn))


def uninstall() -> None:
    """Undo one :func:`install`; the last one restores the originals."""
    global _USERS
    with _LOCK:
        if _USERS == 0:
            return
        _USERS -= 1
        if _USERS:
            return
        for owner, name in _wrappers():
            fn = owner.__dict__.get(name)
            orig = getattr(fn, "__nalar_original__", None)
            if orig is not None:
                setattr(owner, name, orig)


class AdapterPlugin:
    """The pluggy plugin of the adapters: installs the seams and opens gates.

    Registered once per Runtime, on the first use of an adapter. While it is
    registered the seams are installed; it opens the gate of a call that runs in
    the caller's process when the controllers admit it.
    """

    def __init__(self) -> None:
        install()
        self.active = True

    def close(self) -> None:
        """Undo this plugin's install (idempotent)."""
        if self.active:
            self.active = False
            uninstall()

    @hookimpl
    def nalar_call_admitted(self, call: Any, instance: str) -> None:
        """Let the caller of a gated call run its body now, on ``instance``."""
        name = call.extra.get("nalar_gate")
        if name:
            on_admit = GATES.get(name)
            if on_admit is not None:
                on_admit(instance)
