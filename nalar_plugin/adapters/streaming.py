"""The streaming path: ``BaseChatModel.stream`` / ``astream`` of a served run.

``model.invoke`` is served through ``_generate_with_cache`` (see
:mod:`.interception`); ``model.stream`` never calls it. With a switch on and a
model that streams, the wrapped ``stream`` makes one call: once the
controllers admit it, the original ``stream`` runs on the instance they chose
(or, for a deployed model on a cluster of worker processes, on a worker, whose
chunks and callback events come back as they are made). A model that does not
stream falls back to ``invoke``, which the other path serves. A streamed call
is never replayed from the journal: its value is its chunks.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

from langchain_core.callbacks.manager import ahandle_event, handle_event
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config, get_callback_manager_for_config

from .activation import Switch, find_switch
from .events import DONE, IGNORE, streaming_flags
from .remote import CHUNK, StreamJob
from .requests import AdapterCall, clean_metadata, model_call
from .shipping import NotSendable, check_sendable

__all__ = ["wrap_astream", "wrap_stream"]


def _switch_of(model: BaseChatModel, config: Any, kwargs: dict[str, Any], is_async: bool) -> tuple[Switch | None, dict[str, Any]]:
    cfg = ensure_config(config)
    switch = find_switch(cfg.get("callbacks"))
    # A model that does not stream falls back to (a)invoke, which _generate_with_cache serves.
    if switch is not None and not model._should_stream(async_api=is_async, **{**kwargs, "stream": True}):
        switch = None
    return switch, dict(cfg)


def _open(switch: Switch, model: BaseChatModel, input: Any, config: dict[str, Any],
          is_async: bool) -> tuple[AdapterCall, dict[str, Any], bool, Any] | None:
    manager = get_callback_manager_for_config(cast(RunnableConfig, config))
    call, deployed = model_call(switch, model, manager, is_async)
    if not call.routed():
        return None
    deps: list[str] = []
    if call.session is not None:
        try:
            messages = model._convert_input(input).to_messages()
        except Exception:  # the model will reject it itself
            messages = []
        deps = call.recorder.deps_for_model(call.info, call.session, messages)
    return call, call.options(deps, None, deployed), deployed, manager


def _job(call: AdapterCall, model: BaseChatModel, input: Any, config: dict[str, Any], stop: list[str] | None,
         kwargs: dict[str, Any], manager: Any) -> StreamJob | None:
    if not call.service.ships_models:
        return None
    name = f"chat model {call.component!r}"
    try:
        sent_input = check_sendable(input, f"the input of {name}")
        sent_kwargs = {k: check_sendable(v, f"argument {k!r} of {name}") for k, v in kwargs.items()}
        plain = {k: v for k, v in config.items() if k in ("tags", "metadata", "run_name", "recursion_limit")}
        plain["metadata"] = clean_metadata(dict(plain.get("metadata") or {}))
    except NotSendable as exc:
        call.warn_in_place(model, exc)
        return None
    channel = call.open_channel()
    spec = {
        "parent_run_id": getattr(manager, "parent_run_id", None), "tags": list(getattr(manager, "tags", []) or []),
        "inheritable_tags": list(getattr(manager, "inheritable_tags", []) or []),
        "metadata": clean_metadata(dict(getattr(manager, "metadata", {}) or {})),
        "inheritable_metadata": clean_metadata(dict(getattr(manager, "inheritable_metadata", {}) or {})),
    }
    flags = streaming_flags(list(manager.handlers) + list(manager.inheritable_handlers))
    return StreamJob(None, sent_input, plain, spec, stop, sent_kwargs, channel.id, flags)


def _instance(inline: Any, default: BaseChatModel, deployed: bool) -> Any:
    endpoint = inline.endpoint if deployed else None
    return default if endpoint is None else getattr(endpoint, "model", endpoint)


def wrap_stream(orig: Any) -> Any:
    """Wrap ``BaseChatModel.stream``."""

    @functools.wraps(orig)
    def stream(self: BaseChatModel, input: Any, config: Any = None, *, stop: list[str] | None = None,
               **kwargs: Any) -> Iterator[Any]:
        switch, cfg = _switch_of(self, config, kwargs, is_async=False)
        opened = _open(switch, self, input, cfg, is_async=False) if switch is not None else None
        if opened is None:
            yield from orig(self, input, config, stop=stop, **kwargs)
            return
        call, options, deployed, manager = opened
        directives = call.directives(idempotent=True)
        job = _job(call, self, input, cfg, stop, kwargs, manager) if deployed else None
        if job is not None:
            fut = call.ship(None, "stream", job, options, directives)  # type: ignore[arg-type]
            channel = call.channel
            assert channel is not None
            fut.add_done_callback(lambda _: channel.put(DONE))
            try:
                while (item := channel.get()) is not DONE:
                    if item[0] == CHUNK:
                        yield item[1][0]
                    else:
                        name, args, kw = item
                        handle_event(list(manager.handlers), name, IGNORE.get(name), *args, **kw)
            finally:
                call.service.channels.close(channel)
            fut.result()  # the call's error, if any
            return
        inline = call.inline("stream", None, options, directives)
        if not inline.admitted():
            inline.value()
            return
        try:
            yield from orig(_instance(inline, self, deployed), input, config, stop=stop, **kwargs)
        except GeneratorExit:
            inline.finish(None)  # the consumer stopped early: the call ends here
            raise
        except BaseException as exc:
            inline.fail(exc)
            raise
        inline.finish(None)

    stream.__nalar_original__ = orig  # type: ignore[attr-defined]
    return stream


def wrap_astream(orig: Any) -> Any:
    """Wrap ``BaseChatModel.astream``."""

    @functools.wraps(orig)
    async def astream(self: BaseChatModel, input: Any, config: Any = None, *, stop: list[str] | None = None,
                      **kwargs: Any) -> AsyncIterator[Any]:
        switch, cfg = _switch_of(self, config, kwargs, is_async=True)
        opened = _open(switch, self, input, cfg, is_async=True) if switch is not None else None
        if opened is None:
            async for chunk in orig(self, input, config, stop=stop, **kwargs):
                yield chunk
            return
        call, options, deployed, manager = opened
        directives = call.directives(idempotent=True)
        job = _job(call, self, input, cfg, stop, kwargs, manager) if deployed else None
        if job is not None:
            fut = call.ship(None, "astream", job, options, directives)  # type: ignore[arg-type]
            channel = call.channel
            assert channel is not None
            fut.add_done_callback(lambda _: channel.put(DONE))
            try:
                while (item := await channel.aget()) is not DONE:
                    if item[0] == CHUNK:
                        yield item[1][0]
                    else:
                        name, args, kw = item
                        await ahandle_event(list(manager.handlers), name, IGNORE.get(name), *args, **kw)
            finally:
                call.service.channels.close(channel)
            await fut
            return
        inline = call.inline("astream", None, options, directives)
        if not await inline.aadmitted():
            await inline.future
            return
        try:
            async for chunk in orig(_instance(inline, self, deployed), input, config, stop=stop, **kwargs):
                yield chunk
        except GeneratorExit:
            inline.finish(None)
            raise
        except BaseException as exc:
            inline.fail(exc)
            raise
        inline.finish(None)

    astream.__nalar_original__ = orig  # type: ignore[attr-defined]
    return astream
