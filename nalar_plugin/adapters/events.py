"""Callback events of a shipped call: raised on a worker, fired in the caller.

A model or tool body that runs in a worker process gets a run manager whose
only handler is a :class:`Tunnel`. The tunnel sends every callback event
(``on_llm_new_token``, ``on_stream_event``, nested runs' starts and ends,
``on_custom_event`` ...) over the worker's link to its driver; the driver puts
it in the :class:`Channel` the caller opened before it made the call, and the
caller replays each event on its own handlers, in its own thread or event loop,
as it arrives. So streaming keeps streaming and tracing sees the same run tree,
with the same run ids, as without nalar. A worker sends its events and the
call's outcome over one ordered stream, so every event of a call reaches its
channel before the call's future resolves.

Calls that run where they live (the default) need none of this: their
callbacks fire in the caller as they always do.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.callbacks.manager import ahandle_event, handle_event
from langchain_core.tracers._streaming import _StreamingCallbackHandler, _V2StreamingCallbackHandler

from ..context import new_id
from ..links import dumps, loads

__all__ = ["DONE", "Channel", "Channels", "Tunnel", "areplay", "replay", "streaming_flags", "tunnel_class"]

logger = logging.getLogger(__name__)

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
            return
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


class Channels:
    """The open channels of one Runtime's adapter calls, by id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, Channel] = {}

    def open(self, loop: asyncio.AbstractEventLoop | None) -> Channel:
        """Open a channel for one call."""
        channel = Channel(loop)
        with self._lock:
            self._open[channel.id] = channel
        return channel

    def close(self, channel: Channel) -> None:
        """Forget a channel; late events are dropped."""
        with self._lock:
            self._open.pop(channel.id, None)

    def deliver(self, channel_id: str, event: bytes) -> None:
        """An event from a worker (the link's event handler)."""
        with self._lock:
            channel = self._open.get(channel_id)
        if channel is None:
            return
        try:
            channel.put(loads(event))
        except Exception:  # a class the caller cannot import: lose the event, not the call
            logger.exception("could not decode a callback event for channel %s", channel_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


def pack_event(event: Event) -> bytes:
    """Pickle an event; values that do not pickle travel as their ``repr``."""
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


class Tunnel(BaseCallbackHandler):
    """The worker-side handler that forwards every callback event to the caller.

    Args:
        channel_id: The caller's channel.
        send: Sends ``(channel_id, packed event)`` to the driver (the worker's link).
    """

    run_inline = True
    raise_error = False

    def __init__(self, channel_id: str, send: Callable[[str, bytes], None] | None) -> None:
        self.channel_id = channel_id
        self._send = send

    def forward(self, event: Event) -> None:
        """Send one event (or drop it, outside a link)."""
        if self._send is None:
            logger.debug("callback event %s for channel %s outside a link: dropped", event[0], self.channel_id)
            return
        self._send(self.channel_id, pack_event(event))

    def __repr__(self) -> str:
        return f"<nalar Tunnel {self.channel_id}>"


def _forwarder(name: str) -> Callable[..., None]:
    def method(self: Tunnel, *args: Any, **kwargs: Any) -> None:
        self.forward((name, args, kwargs))

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
