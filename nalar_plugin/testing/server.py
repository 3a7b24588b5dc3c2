"""An OpenAI-compatible HTTP server over a simulated engine or engine farm.

Endpoints (under ``/v1``):

* ``POST /v1/chat/completions`` - non-streaming, or ``"stream": true`` for
  server-sent events (first chunk at the end of prefill, then content spread
  over the decode time, then tool calls, the finish reason and, with
  ``stream_options.include_usage``, a usage chunk).
* ``GET /v1/models`` - the engines (for a farm) or the single engine.
* ``GET /v1/metrics`` - extension: each engine's :class:`EngineMetrics`.

The ``model`` field selects the engine on a farm: an engine name, or a pool
name (then the farm's :meth:`EngineFarm.pick` routes by prefix-cache locality
and load). The session (prefix-cache key) is ``nalar.session`` or ``user``.
When neither is given, the key is derived from the request's content, the way
automatic prefix caching works in real engines (vLLM, SGLang): a hash of the
leading system messages and the first user message. Requests that start with
the same messages then share one key, so a request that returns to the engine
that served an earlier one skips that prefill. The engine credits the whole
previous request of a key (its prompt and output, up to this prompt's length),
an upper bound on the shared prefix. ``EngineServer(content_prefix=False)``
turns this off (no session, no caching).
The extension object ``nalar`` may also fix ``prompt_tokens`` and
``output_tokens``; the reply carries the engine's :class:`Generation` under
``nalar`` and the usual ``usage`` (with ``prompt_tokens_details.cached_tokens``).

Only loopback addresses may be bound: this is a test fixture, not a service.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage

from nalar_plugin.errors import ConfigError, RuntimeStateError
from nalar_plugin.testing.engine import SimulatedEngine
from nalar_plugin.testing.records import Generation
from nalar_plugin.testing.farm import EngineFarm
from nalar_plugin.testing.script import (
    Script,
    ai_message_to_openai,
    check_script,
    estimate_output_tokens,
    estimate_prompt_tokens,
    messages_from_openai,
    scripted_response,
)

__all__ = ["EngineServer", "content_prefix_key"]

_LOOPBACK = ("127.0.0.1", "localhost")
_STREAM_PIECES = 8  # content chunks per streamed answer; enough to see pacing


class _HTTPError(Exception):
    """An error reply: status code plus OpenAI-style error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def _sleep_until(deadline: float) -> None:
    """Block until a :func:`time.monotonic` deadline.

    Args:
        deadline: Wall time to wake at.
    """
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _model_card(name: str) -> dict[str, Any]:
    """The ``/v1/models`` entry of an engine.

    Args:
        name: Engine name.

    Returns:
        An OpenAI model object.
    """
    return {"id": name, "object": "model", "created": 0, "owned_by": "nalar-simulated"}


def _token_arg(nalar: dict[str, Any], key: str) -> int | None:
    """Read an optional token count from the ``nalar`` extension.

    Args:
        nalar: The extension object.
        key: Field name.

    Returns:
        The count, or None when absent.

    Raises:
        _HTTPError: If present but not a non-negative int.
    """
    value = nalar.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _HTTPError(400, f"nalar.{key} must be an int >= 0, got {value!r}")
    return value


def content_prefix_key(messages: list[BaseMessage]) -> str:
    """The prefix-cache key of a request that names no session.

    Args:
        messages: The request's messages.

    Returns:
        ``"prefix-<hash>"`` of the leading system messages and the first user
        message (of the first message if no user message leads).
    """
    lead: list[BaseMessage] = []
    for message in messages:
        lead.append(message)
        if not isinstance(message, SystemMessage):
            break
    digest = hashlib.sha256()
    for message in lead:
        text = message.content if isinstance(message.content, str) else json.dumps(message.content)
        digest.update(f"{message.type}\0{len(text)}\0{text}\0".encode())
    return f"prefix-{digest.hexdigest()[:20]}"


class _Server(ThreadingHTTPServer):
    """Threading server tuned for bursts of concurrent simulated requests."""

    daemon_threads = True
    # Benchmarks open hundreds of connections at once; the default backlog of 5
    # would refuse some of them.
    request_queue_size = 1024


class EngineServer:
    """Serve a :class:`SimulatedEngine` or :class:`EngineFarm` over the OpenAI API.

    Use as a context manager; requests run in daemon threads and block in
    :meth:`SimulatedEngine.generate_sync`::

        with EngineServer(farm, script=["Hello!"]) as server:
            llm = ChatOpenAI(model="coder-0", base_url=server.url, api_key="x")

    Args:
        target: The engine or farm to serve.
        host: Loopback address to bind.
        port: TCP port; 0 picks a free one.
        script: Responses, in the forms of :mod:`nalar_plugin.testing.script`;
            None replies a fixed text.
        chars_per_token: Characters per token for estimates.
        content_prefix: Derive the prefix-cache key from the leading messages
            (:func:`content_prefix_key`) when a request names no session.

    Raises:
        ConfigError: If ``host`` is not a loopback address, or ``target`` /
            ``script`` is invalid.
    """

    def __init__(
        self,
        target: SimulatedEngine | EngineFarm,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        script: Script | None = None,
        chars_per_token: float = 4.0,
        content_prefix: bool = True,
    ) -> None:
        if host not in _LOOPBACK:
            raise ConfigError(
                f"EngineServer only binds loopback addresses {_LOOPBACK}, got {host!r}"
            )
        if not isinstance(target, (SimulatedEngine, EngineFarm)):
            raise ConfigError(
                f"target must be a SimulatedEngine or EngineFarm, got {type(target).__name__}"
            )
        check_script(script)
        if not chars_per_token > 0:
            raise ConfigError(f"chars_per_token must be > 0, got {chars_per_token!r}")
        self.target = target
        self.script = script
        self.chars_per_token = chars_per_token
        self.content_prefix = content_prefix
        self._host = host
        self._port = port
        self._ids = itertools.count(1)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> EngineServer:
        """Bind and start serving in a daemon thread (idempotent).

        Returns:
            self.
        """
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"sim": self})
        httpd = _Server((self._host, self._port), handler)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"nalar-engine-server-{httpd.server_address[1]}", daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> EngineServer:
        """Start the server.

        Returns:
            self.
        """
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.close()

    @property
    def port(self) -> int:
        """The bound TCP port.

        Raises:
            RuntimeStateError: If the server is not running.
        """
        if self._httpd is None:
            raise RuntimeStateError("EngineServer is not running; use it as a context manager")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the API, ending in ``/v1``."""
        return f"http://{self._host}:{self.port}/v1"

    # ---------------------------------------------------------------- routing
    def engines(self) -> list[SimulatedEngine]:
        """The engines served.

        Returns:
            The farm's live engines, or the single engine.
        """
        if isinstance(self.target, EngineFarm):
            return self.target.all_engines()
        return [self.target]

    def route(self, model: Any, session: str | None) -> SimulatedEngine:
        """The engine a request's ``model`` field selects.

        Args:
            model: The request's ``model`` value.
            session: Session key, for pool routing.

        Returns:
            The engine.

        Raises:
            _HTTPError: 404 if no engine or pool matches.
        """
        target = self.target
        if isinstance(target, SimulatedEngine):
            return target  # a single engine answers to any model name
        try:
            if isinstance(model, str) and model in target:
                return target.engine(model)
            if isinstance(model, str) and model in target.pools():
                return target.pick(model, session)
        except ConfigError as exc:  # a racing kill/reassign, or an empty pool
            raise _HTTPError(404, str(exc), "model_not_found") from exc
        engines = target.all_engines()
        if len(engines) == 1 and model in (None, "", "simulated"):
            return engines[0]
        names = sorted(e.name for e in engines)
        raise _HTTPError(
            404, f"no engine or pool named {model!r}; engines are {names}", "model_not_found"
        )

    # ------------------------------------------------------------ completions
    def _plan(self, body: Any) -> tuple[AIMessage, Generation, SimulatedEngine, dict[str, Any]]:
        """Admit a chat-completions request on its engine.

        Args:
            body: The decoded request body.

        Returns:
            ``(answer, planned generation, engine, OpenAI usage object)``.

        Raises:
            _HTTPError: 400 for a malformed request, 404 for an unknown model,
                503 if the engine is down.
        """
        if not isinstance(body, dict):
            raise _HTTPError(400, "the request body must be a JSON object")
        nalar = body.get("nalar") or {}
        if not isinstance(nalar, dict):
            raise _HTTPError(400, "'nalar' must be an object")
        try:
            messages = messages_from_openai(body.get("messages"))
            session = nalar.get("session") or body.get("user")
            session = None if session is None else str(session)
            if session is None and self.content_prefix:
                session = content_prefix_key(messages)
            engine = self.route(body.get("model"), session)
            answer = scripted_response(self.script, messages)
        except ConfigError as exc:
            raise _HTTPError(400, str(exc)) from exc
        prompt = _token_arg(nalar, "prompt_tokens")
        if prompt is None:
            prompt = estimate_prompt_tokens(messages, self.chars_per_token, body.get("tools"))
        output = _token_arg(nalar, "output_tokens")
        if output is None:
            output = estimate_output_tokens(answer, self.chars_per_token)
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
            output = min(output, cap)
        try:
            gen = engine.reserve(prompt, output, session)
        except RuntimeStateError as exc:
            raise _HTTPError(503, str(exc), "engine_unavailable") from exc
        usage = {
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.output_tokens,
            "total_tokens": gen.prompt_tokens + gen.output_tokens,
            "prompt_tokens_details": {"cached_tokens": gen.cached_tokens},
        }
        return answer, gen, engine, usage

    def _next_id(self) -> str:
        """A fresh completion id.

        Returns:
            ``"chatcmpl-sim-<n>"``.
        """
        return f"chatcmpl-sim-{next(self._ids)}"


class _Handler(BaseHTTPRequestHandler):
    """Request handler; ``sim`` is set on a per-server subclass."""

    sim: EngineServer
    server_version = "nalar-simulated/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence per-request logging (benchmarks send thousands)."""

    def _send_json(self, status: int, payload: Any) -> None:
        """Write a JSON reply.

        Args:
            status: HTTP status.
            payload: JSON-serialisable body.
        """
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, err: _HTTPError) -> None:
        """Write an OpenAI-style error reply.

        Args:
            err: The error.
        """
        error = {"message": err.message, "type": err.kind, "code": err.kind}
        self._send_json(err.status, {"error": error})

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        """Serve ``/v1/models`` and ``/v1/metrics``."""
        try:
            path = self.path.split("?", 1)[0].rstrip("/")
            engines = self.sim.engines()
            if path == "/v1/models":
                data = [_model_card(e.name) for e in engines]
                self._send_json(200, {"object": "list", "data": data})
            elif path.startswith("/v1/models/"):
                name = path[len("/v1/models/"):]
                if not any(e.name == name for e in engines):
                    raise _HTTPError(404, f"no model {name!r}", "model_not_found")
                self._send_json(200, _model_card(name))
            elif path == "/v1/metrics":
                self._send_json(200, {e.name: asdict(e.metrics()) for e in engines})
            else:
                raise _HTTPError(404, f"no route GET {path}", "not_found")
        except _HTTPError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        """Serve ``/v1/chat/completions``."""
        try:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path != "/v1/chat/completions":
                raise _HTTPError(404, f"no route POST {path}", "not_found")
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise _HTTPError(400, f"invalid JSON body: {exc}") from exc
            answer, gen, engine, usage = self.sim._plan(body)
            if isinstance(body, dict) and body.get("stream"):
                options = body.get("stream_options") or {}
                self._stream(answer, gen, engine, usage, bool(options.get("include_usage")))
                return
            _sleep_until(gen.finished_at)
            if not engine.alive:
                raise _HTTPError(
                    503, f"simulated engine {engine.name!r} was killed", "engine_unavailable"
                )
            self._send_json(200, {
                "id": self.sim._next_id(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": gen.engine,
                "choices": [{
                    "index": 0,
                    "message": ai_message_to_openai(answer),
                    "finish_reason": "tool_calls" if answer.tool_calls else "stop",
                    "logprobs": None,
                }],
                "usage": usage,
                "nalar": gen._asdict(),
            })
        except _HTTPError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        except Exception as exc:  # e.g. a script callable failed: tell the client
            self._send_error(_HTTPError(500, f"{type(exc).__name__}: {exc}", "server_error"))

    def _stream(
        self,
        answer: AIMessage,
        gen: Generation,
        engine: SimulatedEngine,
        usage: dict[str, Any],
        include_usage: bool,
    ) -> None:
        """Stream an answer as server-sent events, paced by the engine timing.

        Args:
            answer: The answer.
            gen: Its planned generation.
            engine: The engine serving it.
            usage: OpenAI usage object.
            include_usage: Send a final usage chunk.
        """
        cid, created = self.sim._next_id(), int(time.time())

        def event(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> None:
            chunk: dict[str, Any] = {
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": gen.engine,
            }
            chunk["choices"] = [] if delta is None else [
                {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            ]
            chunk.update(extra)
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        _sleep_until(gen.first_token_at)
        # Headers go out with the first token, so time-to-first-token is observable.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        message = ai_message_to_openai(answer)
        event({"role": "assistant", "content": ""})
        text: str = message["content"] or ""
        if text:
            pieces = min(_STREAM_PIECES, len(text))
            size = math.ceil(len(text) / pieces)
            chunks = [text[i:i + size] for i in range(0, len(text), size)]
            step = (gen.finished_at - gen.first_token_at) / len(chunks)
            for i, piece in enumerate(chunks):
                _sleep_until(gen.first_token_at + step * (i + 1))
                event({"content": piece})
        _sleep_until(gen.finished_at)
        if not engine.alive:
            # Headers are sent: report the failure in-band, as OpenAI does.
            error = {"error": {"message": f"simulated engine {engine.name!r} was killed"}}
            self.wfile.write(f"data: {json.dumps(error)}\n\n".encode())
            return
        for i, call in enumerate(message.get("tool_calls", [])):
            event({"tool_calls": [{"index": i, **call}]})
        event({}, "tool_calls" if answer.tool_calls else "stop")
        if include_usage:
            event(None, usage=usage, nalar=gen._asdict())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
