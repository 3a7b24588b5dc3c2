"""The callback tunnel: callback events raised on a worker fire in the caller.

A tool body or a chat model that runs on a Dask worker gets a run manager whose
only handler is a :class:`Tunnel`. The tunnel sends every callback event
(``on_llm_new_token``, ``on_stream_event``, nested runs' starts and ends,
``on_custom_event`` ...) to a :class:`Channel` that the caller opened before it
made the call; the caller replays each event on its own handlers, in its own
thread or event loop, as it arrives. So streaming keeps streaming and tracing
sees the same run tree, with the same run ids, as without nalar.

Transport: a channel in the same process (threads mode) receives events
directly. Across processes the worker logs each event as a Dask event under
:data:`TOPIC`; every client that opened a channel subscribes to the topic. A
Dask worker sends its events and its task's completion over one ordered stream
to the scheduler, which forwards both over one ordered stream to the client, so
a call's events reach its channel before its future resolves.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.callbacks.manager import ahandle_event, handle_event
from langchain_core.tracers._streaming import (
    _StreamingCallbackHandler,
    _V2StreamingCallbackHandler,
)

from ..context import new_id
from ._switch import Switch, SwitchCarrier

__all__ = ["DONE", "TOPIC", "Channel", "Tunnel", "areplay", "emit", "open_channel", "replay", "tunnel_class"]

logger = logging.getLogger(__name__)

TOPIC = "nalar-adapter-events"

DONE: Any = object()  # put by the call's future when it resolves

# The ignore_* flag LangChain consults for each event (as its run managers do).
IGNORE: dict[str, str | None] = {
    "on_llm_start": "ignore_llm",
    "on_chat_model_start": "ignore_chat_model",
    "on_llm_new_token": "ignore_llm",
    "on_llm_end": "ignore_llm",
    "on_llm_error": "ignore_llm",
    "on_stream_event": "ignore_llm",
    "on_chain_start": "ignore_chain",
    "on_chain_end": "ignore_chain",
    "on_chain_error": "ignore_chain",
    "on_tool_start": "ignore_agent",
    "on_tool_end": "ignore_agent",
    "on_tool_error": "ignore_agent",
    "on_agent_action": "ignore_agent",
    "on_agent_finish": "ignore_agent",
    "on_retriever_start": "ignore_retriever",
    "on_retriever_end": "ignore_retriever",
    "on_retriever_error": "ignore_retriever",
    "on_retry": "ignore_retry",
    "on_custom_event": "ignore_custom_event",
    "on_text": None,
}

Event = tuple[str, tuple[Any, ...], dict[str, Any]]

_CHANNELS: dict[str, Channel] = {}
_CHANNELS_LOCK = threading.Lock()
_SUBSCRIBED: weakref.WeakSet[Any] = weakref.WeakSet()  # clients subscribed to TOPIC


class Channel:
    """Where the events of one call arrive, in the caller's process.

    Args:
        loop: The caller's event loop for an async caller, ``None`` for a thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.id = new_id("ch")
        self.loop = loop
        self._sync: queue.SimpleQueue[Any] | None = None if loop else queue.SimpleQueue()
        self._async: asyncio.Queue[Any] | None = asyncio.Queue() if loop else None

    def put(self, item: Any) -> None:
        """Deliver an event (or :data:`DONE`); safe from any thread."""
        if self._sync is not None:
            self._sync.put(item)
        else:
            assert self.loop is not None and self._async is not None
            try:
                self.loop.call_soon_threadsafe(self._async.put_nowait, item)
            except RuntimeError:  # the caller's loop closed: nobody listens any more
                pass

    def get(self) -> Any:
        """Block until the next item (thread callers)."""
        assert self._sync is not None
        return self._sync.get()

    async def aget(self) -> Any:
        """Wait for the next item (async callers)."""
        assert self._async is not None
        return await self._async.get()

    def close(self) -> None:
        """Forget the channel; late events are dropped."""
        with _CHANNELS_LOCK:
            _CHANNELS.pop(self.id, None)


def open_channel(client: Any, loop: asyncio.AbstractEventLoop | None = None) -> Channel:
    """Open a channel in this process, subscribing ``client`` to :data:`TOPIC` once.

    Args:
        client: The Dask client of the caller's process (driver or worker).
        loop: The caller's event loop, for async callers.

    Returns:
        The open channel.
    """
    channel = Channel(loop)
    with _CHANNELS_LOCK:
        _CHANNELS[channel.id] = channel
        new = client is not None and client not in _SUBSCRIBED
        if new:
            _SUBSCRIBED.add(client)
    if new:
        # The subscription reaches the scheduler before the call is submitted
        # (one ordered stream), so no event of the call can be missed.
        client.subscribe_topic(TOPIC, _on_remote_event)
    return channel


def _on_remote_event(event: Any) -> None:
    _, msg = event
    if not isinstance(msg, dict):
        return
    with _CHANNELS_LOCK:
        channel = _CHANNELS.get(msg.get("channel", ""))
    if channel is None:
        return
    from distributed.protocol.pickle import loads

    try:
        channel.put(loads(msg["event"]))
    except Exception:  # a class the caller cannot import: lose the event, not the call
        logger.exception("could not decode a callback event for channel %s", channel.id)


def _dumps(event: Event) -> bytes:
    from distributed.protocol.pickle import dumps

    try:
        return dumps(event)
    except Exception:
        # Keep the event (a tracer must still see the run end) with its
        # unpicklable values shown as text.
        name, args, kwargs = event

        def safe(v: Any) -> Any:
            try:
                dumps(v)
                return v
            except Exception:
                return repr(v)

        return dumps((name, tuple(safe(a) for a in args), {k: safe(v) for k, v in kwargs.items()}))


def emit(channel_id: str, event: Event) -> None:
    """Send an event to the caller's channel, in this process or through Dask."""
    with _CHANNELS_LOCK:
        channel = _CHANNELS.get(channel_id)
    if channel is not None:
        channel.put(event)
        return
    try:
        from distributed import get_worker

        worker = get_worker()
    except ValueError:
        logger.debug("callback event %s for channel %s outside a worker: dropped", event[0], channel_id)
        return
    worker.log_event(TOPIC, {"channel": channel_id, "event": _dumps(event)})


class Tunnel(BaseCallbackHandler, SwitchCarrier):
    """The worker-side handler that forwards every callback event to the caller.

    It carries the run's switch, so calls nested in a served call (a tool that
    runs an agent) are served by nalar too.
    """

    run_inline = True
    raise_error = False

    def __init__(self, channel_id: str, switch: Switch | None) -> None:
        self.channel_id = channel_id
        self.nalar_switch = switch

    def _forward(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        emit(self.channel_id, (name, args, kwargs))

    def __repr__(self) -> str:
        return f"<nalar Tunnel {self.channel_id}>"


def _forwarder(name: str) -> Callable[..., None]:
    def method(self: Tunnel, *args: Any, **kwargs: Any) -> None:
        self._forward(name, args, kwargs)

    method.__name__ = name
    return method


for _name in IGNORE:
    setattr(Tunnel, _name, _forwarder(_name))


class _StreamingTunnel(Tunnel):
    """A tunnel that makes the worker stream, because the caller's handlers do (v1)."""

    def tap_output_aiter(self, run_id: UUID, output: Any) -> Any:
        return output

    def tap_output_iter(self, run_id: UUID, output: Any) -> Any:
        return output


class _V2Tunnel(Tunnel, _V2StreamingCallbackHandler):
    """A tunnel that makes the worker emit protocol events (v2 streaming)."""


class _V1V2Tunnel(_StreamingTunnel, _V2StreamingCallbackHandler):
    """Both kinds of streaming."""


def streaming_flags(handlers: list[Any]) -> tuple[bool, bool]:
    """Whether ``handlers`` ask a chat model to stream (v1 chunks, v2 protocol events)."""
    v1 = any(isinstance(h, _StreamingCallbackHandler) for h in handlers)
    v2 = any(isinstance(h, _V2StreamingCallbackHandler) for h in handlers)
    return v1, v2


def tunnel_class(v1: bool, v2: bool) -> type[Tunnel]:
    """The tunnel class that makes the worker stream as the caller would."""
    if v1 and v2:
        return _V1V2Tunnel
    if v1:
        return _StreamingTunnel
    if v2:
        return _V2Tunnel
    return Tunnel


def _targets(run_manager: Any, kwargs: dict[str, Any]) -> list[Any]:
    # Events of the served run go to its own handlers; those of runs nested in
    # it go where a child of its run manager would send them.
    if kwargs.get("run_id") == run_manager.run_id:
        return list(run_manager.handlers)
    return list(run_manager.inheritable_handlers)


def replay(run_manager: Any, event: Event) -> None:
    """Fire a worker's callback event on the caller's handlers (thread callers)."""
    if run_manager is None:
        return
    name, args, kwargs = event
    handle_event(_targets(run_manager, kwargs), name, IGNORE.get(name), *args, **kwargs)


async def areplay(run_manager: Any, event: Event) -> None:
    """Fire a worker's callback event on the caller's handlers (async callers)."""
    if run_manager is None:
        return
    name, args, kwargs = event
    await ahandle_event(_targets(run_manager, kwargs), name, IGNORE.get(name), *args, **kwargs)
