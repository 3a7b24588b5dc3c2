"""A LangChain chat model whose latency comes from a simulated engine."""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict

from nalar_plugin.errors import ConfigError, RuntimeStateError
from nalar_plugin.testing.engine import SimulatedEngine
from nalar_plugin.testing.records import Generation
from nalar_plugin.testing.sampling import TokenSampler
from nalar_plugin.testing.script import (
    check_script,
    estimate_output_tokens,
    estimate_prompt_tokens,
    messages_from_openai,
    scripted_response,
)

__all__ = ["SimulatedChatModel"]


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context shared by every HTTP call.

    httpx builds a new context, loading a CA bundle (~20 ms of CPU), for each
    client; with a client per call that alone would throttle a benchmark.

    Returns:
        The default verifying context.
    """
    return ssl.create_default_context()


def _session_from_context(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> str | None:
    """Best-effort session key of the current run: its LangGraph ``thread_id``.

    LangGraph copies ``configurable.thread_id`` into the run metadata, which
    reaches the model's run manager; outside LangGraph the ambient runnable
    config may still carry it.

    Args:
        run_manager: The model run's callback manager, if any.

    Returns:
        The thread id as a str, or None.
    """
    if run_manager is not None:
        for source in (run_manager.metadata, run_manager.inheritable_metadata):
            thread = source.get("thread_id") if source else None
            if thread:
                return str(thread)
    config = var_child_runnable_config.get()
    if config:
        thread = (config.get("configurable") or {}).get("thread_id")
        if thread:
            return str(thread)
    return None


class SimulatedChatModel(BaseChatModel):
    """Chat model with scripted answers and simulated-engine latency.

    Each call picks its answer from ``script`` (see
    :mod:`nalar_plugin.testing.script`: a list indexed by the number of AI
    messages in the input, or a callable), then occupies the engine for the
    matching token counts: ``_agenerate`` awaits
    :meth:`SimulatedEngine.generate`, ``_generate`` blocks in
    :meth:`SimulatedEngine.generate_sync`. Tools bound with :meth:`bind_tools`
    are accepted (and sent over HTTP) but never executed by the model.

    ``engine`` is either an in-process :class:`SimulatedEngine` (pickles as a
    reference that only resolves in the same process) or the base URL of an
    :class:`~nalar_plugin.testing.EngineServer` (``"http://127.0.0.1:PORT/v1"``),
    which works from any process. Over HTTP the answer comes from the local
    ``script`` if one is set, otherwise from the server's script.

    Token counts: ``prompt_tokens``/``output_tokens`` fix them; otherwise
    ``sampler`` draws them (keyed by session and turn, so copies agree);
    otherwise they are estimated from the text (``chars_per_token``).

    The session (prefix-cache key) is ``session`` if set, else a ``session``
    keyword bound on the model, else the LangGraph ``thread_id`` of the run.

    Example::

        model = SimulatedChatModel(
            engine=engine,
            script=[{"name": "search", "args": {"q": "dask"}}, "Dask is a library."],
        )

    Raises:
        ConfigError: At construction, if ``engine`` or ``script`` is invalid.
    """

    engine: Any
    """A :class:`SimulatedEngine` or an ``http(s)://.../v1`` base URL."""
    script: Any = None
    """List of responses or callable ``(messages) -> response``; None replies a fixed text."""
    session: str | None = None
    """Fixed session key for the prefix cache."""
    model_name: str | None = None
    """``model`` sent over HTTP (an engine or pool name on a farm server)."""
    prompt_tokens: int | None = None
    """Fixed prompt length, instead of estimating it."""
    output_tokens: int | None = None
    """Fixed output length, instead of estimating it."""
    sampler: TokenSampler | None = None
    """Draws token counts when they are not fixed."""
    chars_per_token: float = 4.0
    """Characters per token for estimates."""
    request_timeout: float = 600.0
    """HTTP timeout in seconds."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    def __init__(self, **kwargs: Any) -> None:
        """Validate and build the model.

        Args:
            **kwargs: The fields.

        Raises:
            ConfigError: If ``engine``, ``script`` or a token count is invalid.
        """
        # Checked here rather than in pydantic validators, which would wrap
        # ConfigError (a ValueError) into a ValidationError.
        engine = kwargs.get("engine")
        if isinstance(engine, str):
            if not engine.startswith(("http://", "https://")):
                raise ConfigError(f"engine URL must start with http:// or https://, got {engine!r}")
            kwargs["engine"] = engine.rstrip("/")
        elif not isinstance(engine, SimulatedEngine):
            raise ConfigError(
                f"engine must be a SimulatedEngine or an http(s) URL, got {type(engine).__name__}"
            )
        check_script(kwargs.get("script"))
        for field in ("prompt_tokens", "output_tokens"):
            value = kwargs.get(field)
            bad = isinstance(value, bool) or not isinstance(value, int) or value < 0
            if value is not None and bad:
                raise ConfigError(f"{field} must be an int >= 0, got {value!r}")
        cpt = kwargs.get("chars_per_token", 4.0)
        if not isinstance(cpt, (int, float)) or not cpt > 0:
            raise ConfigError(f"chars_per_token must be > 0, got {cpt!r}")
        super().__init__(**kwargs)

    @property
    def _llm_type(self) -> str:
        """Return the model family name."""
        return "nalar-simulated"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """Return the parameters that identify this model (for caching/tracing)."""
        engine = self.engine if isinstance(self.engine, str) else self.engine.name
        return {"engine": engine, "model_name": self.model_name}

    def bind_tools(
        self,
        tools: Sequence[Mapping[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (as OpenAI schemas); the script decides when to call them.

        Args:
            tools: Tools, functions, pydantic models or OpenAI tool dicts.
            tool_choice: Recorded and sent over HTTP; the script ignores it.
            **kwargs: Further keyword arguments bound to the model.

        Returns:
            A runnable that calls this model with ``tools=`` bound.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    # ----------------------------------------------------------------- helpers
    def _session(
        self,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: Mapping[str, Any],
    ) -> str | None:
        """Resolve the session key of a call.

        Args:
            run_manager: The run's callback manager.
            kwargs: The call's keyword arguments.

        Returns:
            The session key, or None.
        """
        if self.session is not None:
            return self.session
        if kwargs.get("session"):
            return str(kwargs["session"])
        return _session_from_context(run_manager)

    def _tokens(
        self,
        messages: Sequence[BaseMessage],
        response: AIMessage | None,
        session: str | None,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> tuple[int | None, int | None]:
        """Prompt and output token counts of a call.

        Args:
            messages: Input messages.
            response: The local answer, or None if the server answers.
            session: Session key (keys sampler draws).
            tools: Bound tool schemas.

        Returns:
            ``(prompt, output)``; an entry is None when the HTTP server should
            estimate it from what it receives and answers.
        """
        turn = sum(1 for m in messages if isinstance(m, AIMessage))
        drawn = self.sampler.sample_at(session, turn) if self.sampler is not None else None
        prompt: int | None = self.prompt_tokens
        if prompt is None and drawn is not None:
            prompt = drawn[0]
        if prompt is None and response is not None:
            prompt = estimate_prompt_tokens(messages, self.chars_per_token, tools)
        output: int | None = self.output_tokens
        if output is None and drawn is not None:
            output = drawn[1]
        if output is None and response is not None:
            output = estimate_output_tokens(response, self.chars_per_token)
        return prompt, output

    def _result(self, response: AIMessage, gen: Generation) -> ChatResult:
        """Attach usage and timing to the answer.

        Args:
            response: The answer.
            gen: The engine's record of the call.

        Returns:
            The chat result.
        """
        response.usage_metadata = UsageMetadata(
            input_tokens=gen.prompt_tokens,
            output_tokens=gen.output_tokens,
            total_tokens=gen.prompt_tokens + gen.output_tokens,
            input_token_details=InputTokenDetails(cache_read=gen.cached_tokens),
        )
        response.response_metadata = {
            **response.response_metadata,
            "model_name": gen.engine,
            "finish_reason": "tool_calls" if response.tool_calls else "stop",
            "nalar_generation": gen._asdict(),
        }
        return ChatResult(
            generations=[ChatGeneration(message=response)],
            llm_output={"model_name": gen.engine},
        )

    def _local_call(
        self,
        messages: list[BaseMessage],
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: Mapping[str, Any],
    ) -> tuple[AIMessage, int, int, str | None]:
        """Prepare an in-process call.

        Args:
            messages: Input messages.
            run_manager: The run's callback manager.
            kwargs: The call's keyword arguments.

        Returns:
            ``(answer, prompt tokens, output tokens, session)``.
        """
        response = scripted_response(self.script, messages)
        session = self._session(run_manager, kwargs)
        prompt, output = self._tokens(messages, response, session, kwargs.get("tools"))
        # With a local answer _tokens always sizes both; the fallbacks only narrow types.
        return response, prompt or 0, output or 0, session

    def _http_request(
        self,
        messages: list[BaseMessage],
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: Mapping[str, Any],
    ) -> tuple[dict[str, Any], AIMessage | None]:
        """Build the chat-completions body of an HTTP call.

        Args:
            messages: Input messages.
            run_manager: The run's callback manager.
            kwargs: The call's keyword arguments.

        Returns:
            ``(request body, local answer or None)``.
        """
        response = scripted_response(self.script, messages) if self.script is not None else None
        session = self._session(run_manager, kwargs)
        tools = kwargs.get("tools")
        prompt, output = self._tokens(messages, response, session, tools)
        body: dict[str, Any] = {
            "model": self.model_name or "simulated",
            "messages": convert_to_openai_messages(messages),
            "nalar": {"session": session, "prompt_tokens": prompt, "output_tokens": output},
        }
        if session is not None:
            body["user"] = session
        if tools:
            body["tools"] = list(tools)
        if kwargs.get("tool_choice") is not None:
            body["tool_choice"] = kwargs["tool_choice"]
        return body, response

    def _http_result(self, status: int, payload: Any, response: AIMessage | None) -> ChatResult:
        """Turn a server reply into a chat result.

        Args:
            status: HTTP status code.
            payload: Decoded JSON body.
            response: The local answer, which wins over the server's.

        Returns:
            The chat result.

        Raises:
            ConfigError: If the server rejected the request (4xx).
            RuntimeStateError: If the server failed (5xx) or replied garbage.
        """
        if status >= 400:
            message = payload.get("error", {}).get("message") if isinstance(payload, dict) else None
            text = f"engine server answered {status}: {message or payload!r}"
            raise (ConfigError(text) if status < 500 else RuntimeStateError(text))
        try:
            gen = Generation(**payload["nalar"])
            if response is None:
                parsed = messages_from_openai([payload["choices"][0]["message"]])[0]
                if not isinstance(parsed, AIMessage):
                    raise TypeError(f"expected an assistant message, got {parsed.type}")
                response = parsed
        except (KeyError, IndexError, TypeError, ConfigError) as exc:
            raise RuntimeStateError(f"malformed engine server reply: {payload!r}") from exc
        return self._result(response, gen)

    def _client_options(self) -> dict[str, Any]:
        """Keyword arguments of the per-call httpx client.

        Returns:
            Timeout, shared TLS context, and ``trust_env=False`` so proxy
            variables never divert calls meant for a local simulated server.
        """
        return {"timeout": self.request_timeout, "verify": _ssl_context(), "trust_env": False}

    # ------------------------------------------------------------ generation
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Answer synchronously, blocking for the simulated engine time.

        Args:
            messages: Input messages.
            stop: Ignored (scripted answers are returned whole).
            run_manager: The run's callback manager.
            **kwargs: Bound keywords (``tools``, ``tool_choice``, ``session``).

        Returns:
            The chat result.

        Raises:
            RuntimeStateError: If the engine was killed or the server failed.
        """
        if isinstance(self.engine, str):
            body, response = self._http_request(messages, run_manager, kwargs)
            try:
                with httpx.Client(**self._client_options()) as client:
                    reply = client.post(f"{self.engine}/chat/completions", json=body)
                payload = reply.json()
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                raise RuntimeStateError(f"engine server {self.engine} failed: {exc}") from exc
            return self._http_result(reply.status_code, payload, response)
        response, prompt, output, session = self._local_call(messages, run_manager, kwargs)
        return self._result(response, self.engine.generate_sync(prompt, output, session))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Answer asynchronously, awaiting the simulated engine time.

        Args:
            messages: Input messages.
            stop: Ignored (scripted answers are returned whole).
            run_manager: The run's callback manager.
            **kwargs: Bound keywords (``tools``, ``tool_choice``, ``session``).

        Returns:
            The chat result.

        Raises:
            RuntimeStateError: If the engine was killed or the server failed.
        """
        if isinstance(self.engine, str):
            body, response = self._http_request(messages, run_manager, kwargs)
            try:
                # A client per call: it binds to the running loop, and calls
                # come from many loops.
                async with httpx.AsyncClient(**self._client_options()) as client:
                    reply = await client.post(f"{self.engine}/chat/completions", json=body)
                payload = reply.json()
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                raise RuntimeStateError(f"engine server {self.engine} failed: {exc}") from exc
            return self._http_result(reply.status_code, payload, response)
        response, prompt, output, session = self._local_call(messages, run_manager, kwargs)
        return self._result(response, await self.engine.generate(prompt, output, session))
