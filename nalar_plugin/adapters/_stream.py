"""The streaming seam: ``BaseChatModel.stream`` / ``astream`` of a served run.

``model.invoke`` reaches the cluster through ``_generate_with_cache`` (see
:mod:`._seams`); ``model.stream`` never calls it. With a switch on and a model
that streams, the wrapped ``stream`` makes one call whose worker runs the
original ``stream`` with the caller's config (its callbacks replaced by the
tunnel) and sends every chunk back as it comes; the caller yields the chunks
and replays the run's callback events, so a node that iterates
``model.stream(...)`` streams from the cluster. A model that does not stream
falls back to ``invoke``, which the other seam serves.

A streamed call is never replayed from the journal: its value is its chunks.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

from langchain_core.callbacks.manager import ahandle_event, handle_event
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import (
    ensure_config,
    get_callback_manager_for_config,
)

from . import _jobs
from ._dispatch import AdapterCall, _plan_config
from ._parcel import NotSendable, check_sendable, resolve, sendable
from ._switch import Switch, find_switch
from ._tunnel import DONE, IGNORE, emit, streaming_flags, tunnel_class

__all__ = ["StreamJob", "arun_model_stream", "run_model_stream", "wrap_astream", "wrap_stream"]

CHUNK = "nalar_stream_chunk"  # the event that carries one streamed chunk


class StreamJob:
    """One streamed chat-model call: the arguments of ``stream``/``astream``."""

    def __init__(self, model: Any, input: Any, config: Any, stop: list[str] | None, kwargs: dict[str, Any],
                 channel: str, flags: tuple[bool, bool], switch: Switch) -> None:
        self.model = model
        self.input = input
        self.config = config
        self.stop = stop
        self.kwargs = kwargs
        self.channel = channel
        self.flags = flags
        self.switch = switch


def _prepare(job: StreamJob, model: Any) -> tuple[Any, dict[str, Any]]:
    _jobs._worker_seams()
    model = resolve(job.model) if model is None else model
    config = job.config.build(tunnel_class(*job.flags)(job.channel, job.switch))
    return model, config


def run_model_stream(job: Any, model: Any = None) -> int:
    """Run ``stream`` on a worker thread, sending each chunk to the caller; return the count."""
    job = resolve(job)
    model, config = _prepare(job, model)
    n = 0
    for chunk in _jobs.original(type(model), "stream")(model, job.input, config, stop=job.stop, **job.kwargs):
        emit(job.channel, (CHUNK, (chunk,), {}))
        n += 1
    return n


async def arun_model_stream(job: StreamJob, model: Any = None) -> int:
    """Run ``astream`` on the worker's event loop, sending each chunk to the caller."""
    job = resolve(job)
    model, config = _prepare(job, model)
    n = 0
    async for chunk in _jobs.original(type(model), "astream")(model, job.input, config, stop=job.stop, **job.kwargs):
        emit(job.channel, (CHUNK, (chunk,), {}))
        n += 1
    return n


def _prepare_call(switch: Switch, model: BaseChatModel, input: Any, config: dict[str, Any],
                  is_async: bool) -> tuple[AdapterCall, dict[str, Any], bool]:
    """Open the call: its options, and whether the model is a deployed component."""
    from ._seams import _model_target
    from ._switch import runtime_of

    manager = get_callback_manager_for_config(cast(RunnableConfig, config))
    component, deployed = _model_target(getattr(runtime_of(switch), "_nalar_adapters", None), model)
    call = AdapterCall(switch, "model", component, manager, is_async=is_async)
    deps: list[Any] = []
    if call.recorder is not None and call.session is not None:
        try:
            messages = model._convert_input(input).to_messages()
        except Exception:  # the model will reject it itself, in the worker
            messages = []
        deps = call.recorder.deps_for_model(call.info, call.session, messages)
    return call, call.options(deps, None), deployed


def _submit(call: AdapterCall, model: BaseChatModel, input: Any, config: dict[str, Any], stop: list[str] | None,
            kwargs: dict[str, Any], options: dict[str, Any], deployed: bool) -> Any:
    """Pack and submit the streamed call; raises :class:`NotSendable` when it cannot travel."""
    from ._seams import _note

    by_value = not call.by_ref
    name = f"chat model {call.component!r}"
    job = StreamJob(
        model=None if deployed else (sendable(model, name) if by_value else model),
        input=check_sendable(input, f"the input of {name}") if by_value else input,
        config=_plan_config(config, by_value, call.channel.id), stop=stop,
        kwargs={k: check_sendable(v, f"argument {k!r} of {name}") for k, v in kwargs.items()} if by_value else kwargs,
        channel=call.channel.id, flags=streaming_flags(list(call.run_manager.handlers)), switch=call.switch,
    )
    payload = call._payload(job)
    method = "astream" if call.is_async else "stream"
    stub = call.stub(arun_model_stream if call.is_async else run_model_stream, method, idempotent=True)
    # A deployed instance streams with its sync method (see ModelEndpoint.stream).
    fut = call.submit(stub, payload, options, component_method="stream" if deployed else None)
    _note(call, fut)
    return fut


def _switch_of(model: BaseChatModel, config: Any, kwargs: dict[str, Any], is_async: bool) -> tuple[Switch | None, dict[str, Any]]:
    cfg = ensure_config(config)
    switch = find_switch(cfg.get("callbacks"))
    # A model that does not stream falls back to (a)invoke, which _generate_with_cache serves.
    if switch is not None and not model._should_stream(async_api=is_async, **{**kwargs, "stream": True}):
        switch = None
    return switch, dict(cfg)


def wrap_stream(orig: Any) -> Any:
    """Wrap ``BaseChatModel.stream``."""

    @functools.wraps(orig)
    def stream(self: BaseChatModel, input: Any, config: Any = None, *, stop: list[str] | None = None,
               **kwargs: Any) -> Iterator[Any]:
        switch, cfg = _switch_of(self, config, kwargs, is_async=False)
        if switch is None:
            yield from orig(self, input, config, stop=stop, **kwargs)
            return
        call, options, deployed = _prepare_call(switch, self, input, cfg, is_async=False)
        try:
            if not call.routed():
                yield from orig(self, input, config, stop=stop, **kwargs)
                return
            try:
                fut = _submit(call, self, input, cfg, stop, kwargs, options, deployed)
            except NotSendable as exc:
                with call.admitted(exc, options):
                    yield from orig(self, input, config, stop=stop, **kwargs)
                return
            fut.add_done_callback(lambda _: call.channel.put(DONE))
            while (item := call.channel.get()) is not DONE:
                if item[0] == CHUNK:
                    yield item[1][0]
                else:
                    name, args, kw = item
                    handle_event(list(call.run_manager.handlers), name, IGNORE.get(name), *args, **kw)
            fut.result()  # the call's error, if any
        finally:
            call.done()

    stream.__nalar_original__ = orig  # type: ignore[attr-defined]
    return stream


def wrap_astream(orig: Any) -> Any:
    """Wrap ``BaseChatModel.astream``."""

    @functools.wraps(orig)
    async def astream(self: BaseChatModel, input: Any, config: Any = None, *, stop: list[str] | None = None,
                      **kwargs: Any) -> AsyncIterator[Any]:
        switch, cfg = _switch_of(self, config, kwargs, is_async=True)
        if switch is None:
            async for chunk in orig(self, input, config, stop=stop, **kwargs):
                yield chunk
            return
        call, options, deployed = _prepare_call(switch, self, input, cfg, is_async=True)
        try:
            if not call.routed():
                async for chunk in orig(self, input, config, stop=stop, **kwargs):
                    yield chunk
                return
            try:
                fut = _submit(call, self, input, cfg, stop, kwargs, options, deployed)
            except NotSendable as exc:
                async with call.aadmitted(exc, options):
                    async for chunk in orig(self, input, config, stop=stop, **kwargs):
                        yield chunk
                return
            fut.add_done_callback(lambda _: call.channel.put(DONE))
            while (item := await call.channel.aget()) is not DONE:
                if item[0] == CHUNK:
                    yield item[1][0]
                else:
                    name, args, kw = item
                    await ahandle_event(list(call.run_manager.handlers), name, IGNORE.get(name), *args, **kw)
            await fut
        finally:
            call.done()

    astream.__nalar_original__ = orig  # type: ignore[attr-defined]
    return astream
