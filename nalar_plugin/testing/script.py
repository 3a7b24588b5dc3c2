"""Scripted responses, token estimates and OpenAI wire-format conversions.

A *script* decides what the simulated model answers. It is either

* a sequence of entries, one per model call of a conversation: the entry used
  is the one at index "number of AI messages already in the input", so a
  script is stateless and deterministic per conversation (the model object may
  be copied or pickled freely); past the end, the last entry repeats; or
* a callable ``(messages) -> entry``.

An entry is an :class:`~langchain_core.messages.AIMessage`, a ``str`` (the
answer text), or a ``dict``: ``{"content": str, "tool_calls": [...]}`` where
each tool call is ``{"name": str, "args": dict, "id": str (optional)}``; the
shorthand ``{"name": ..., "args": ...}`` is a single tool call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
from langchain_core.messages.tool import ToolCall

from nalar_plugin.errors import ConfigError

__all__ = [
    "DEFAULT_REPLY",
    "Script",
    "ScriptEntry",
    "ai_message_to_openai",
    "check_script",
    "estimate_output_tokens",
    "estimate_prompt_tokens",
    "messages_from_openai",
    "scripted_response",
]

ScriptEntry = Union[AIMessage, str, Mapping[str, Any]]
Script = Union[Sequence[ScriptEntry], Callable[[list[BaseMessage]], ScriptEntry]]

DEFAULT_REPLY = "This is a simulated reply."

# Chat templates add a few tokens of role markup per message.
_TOKENS_PER_MESSAGE = 4


def check_script(script: Script | None) -> None:
    """Validate a script's form (entries are checked when used).

    Args:
        script: The script, or None for the default reply.

    Raises:
        ConfigError: If it is neither None, a callable nor a non-empty
            sequence of entries.
    """
    if script is None or callable(script):
        return
    if isinstance(script, (str, bytes, Mapping, AIMessage)) or not isinstance(script, Sequence):
        raise ConfigError(
            "script must be a list of responses (AIMessage, str or dict) or a callable "
            f"(messages) -> response, got {type(script).__name__}"
        )
    if len(script) == 0:
        raise ConfigError("script must not be empty")


def _tool_call(raw: Mapping[str, Any], default_id: str) -> ToolCall:
    """Normalise one tool-call description.

    Args:
        raw: ``{"name", "args", "id"?}`` or an OpenAI ``{"function": ...}`` dict.
        default_id: Id to use when the description has none.

    Returns:
        A LangChain tool call.

    Raises:
        ConfigError: If the name is missing or the args are not a dict.
    """
    if "function" in raw:  # OpenAI wire form
        fn = raw["function"]
        name, args = fn.get("name"), fn.get("arguments", {})
        if isinstance(args, str):
            args = json.loads(args or "{}")
    else:
        name, args = raw.get("name"), raw.get("args", {})
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a scripted tool call needs a 'name', got {dict(raw)!r}")
    if not isinstance(args, Mapping):
        raise ConfigError(f"tool call {name!r} args must be a dict, got {args!r}")
    call_id = raw.get("id") or default_id
    return ToolCall(name=name, args=dict(args), id=str(call_id), type="tool_call")


def _to_ai_message(entry: ScriptEntry, position: int) -> AIMessage:
    """Turn a script entry into a fresh AIMessage.

    Args:
        entry: The entry.
        position: The entry's turn, used to make tool-call ids unique within
            a conversation.

    Returns:
        A new message (never the script's own object, which must not be
        mutated by later processing).

    Raises:
        ConfigError: If the entry has an unsupported form.
    """
    if isinstance(entry, AIMessage):
        calls = [
            ToolCall(
                name=tc["name"],
                args=dict(tc["args"]),
                id=tc.get("id") or f"call_{position}_{i}",
                type="tool_call",
            )
            for i, tc in enumerate(entry.tool_calls)
        ]
        return entry.model_copy(update={"tool_calls": calls, "id": None}, deep=True)
    if isinstance(entry, str):
        return AIMessage(content=entry)
    if isinstance(entry, Mapping):
        raw_calls: Any
        if "tool_calls" in entry:
            raw_calls = entry["tool_calls"] or []
        elif "name" in entry:
            raw_calls = [entry]
        else:
            raw_calls = []
        if not isinstance(raw_calls, Sequence):
            raise ConfigError(f"'tool_calls' must be a list, got {raw_calls!r}")
        content = entry.get("content", "")
        if not isinstance(content, (str, list)):
            raise ConfigError(f"'content' must be a str, got {content!r}")
        calls = [_tool_call(tc, f"call_{position}_{i}") for i, tc in enumerate(raw_calls)]
        return AIMessage(content=content, tool_calls=calls)
    raise ConfigError(
        f"a script entry must be an AIMessage, a str or a dict, got {type(entry).__name__}"
    )


def scripted_response(script: Script | None, messages: Sequence[BaseMessage]) -> AIMessage:
    """The scripted answer to a conversation.

    Args:
        script: The script (see the module docstring), or None for
            :data:`DEFAULT_REPLY`.
        messages: The input messages.

    Returns:
        A fresh AIMessage.

    Raises:
        ConfigError: If the script or the chosen entry is malformed.
    """
    position = sum(1 for m in messages if isinstance(m, AIMessage))
    if script is None:
        return AIMessage(content=DEFAULT_REPLY)
    if callable(script):
        return _to_ai_message(script(list(messages)), position)
    check_script(script)
    return _to_ai_message(script[min(position, len(script) - 1)], position)


def _text_chars(content: Any) -> int:
    """Characters of a message content (str or list of blocks).

    Args:
        content: ``BaseMessage.content``.

    Returns:
        The character count of its text.
    """
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for block in content:
            if isinstance(block, str):
                total += len(block)
            elif isinstance(block, Mapping):
                total += len(str(block.get("text", "")))
        return total
    return len(str(content))


def _message_chars(message: BaseMessage) -> int:
    """Characters a message contributes to a prompt.

    Args:
        message: The message.

    Returns:
        Text plus serialised tool calls.
    """
    chars = _text_chars(message.content)
    if isinstance(message, AIMessage):
        for tc in message.tool_calls:
            chars += len(tc["name"]) + len(json.dumps(tc["args"], sort_keys=True))
    return chars


def estimate_prompt_tokens(
    messages: Sequence[BaseMessage],
    chars_per_token: float = 4.0,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Estimate a prompt's token count (~``chars_per_token`` chars per token).

    Args:
        messages: The input messages.
        chars_per_token: Characters per token.
        tools: OpenAI tool schemas sent with the prompt (they are part of it).

    Returns:
        The estimate, at least 1.
    """
    chars = sum(_message_chars(m) for m in messages)
    if tools:
        chars += len(json.dumps(list(tools), sort_keys=True, default=str))
    return max(1, math.ceil(chars / chars_per_token) + _TOKENS_PER_MESSAGE * len(messages))


def estimate_output_tokens(message: AIMessage, chars_per_token: float = 4.0) -> int:
    """Estimate the tokens of a generated message.

    Args:
        message: The answer.
        chars_per_token: Characters per token.

    Returns:
        The estimate, at least 1 (the end-of-sequence token).
    """
    return max(1, math.ceil(_message_chars(message) / chars_per_token))


def ai_message_to_openai(message: AIMessage) -> dict[str, Any]:
    """Render an answer as an OpenAI chat-completions ``message`` object.

    Args:
        message: The answer.

    Returns:
        ``{"role": "assistant", "content": ..., "tool_calls": [...]?}``.
    """
    content = message.content
    if not isinstance(content, str):
        content = "".join(
            b if isinstance(b, str) else str(b.get("text", "")) for b in content
        )
    out: dict[str, Any] = {"role": "assistant", "content": content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": tc.get("id") or f"call_{i}",
                "type": "function",
                "function": {"name": tc["name"], "arguments": json.dumps(tc["args"])},
            }
            for i, tc in enumerate(message.tool_calls)
        ]
    return out


def messages_from_openai(raw: Any) -> list[BaseMessage]:
    """Parse OpenAI chat-completions ``messages`` into LangChain messages.

    Args:
        raw: The request's ``messages`` list.

    Returns:
        The messages.

    Raises:
        ConfigError: If the list is malformed.
    """
    if not isinstance(raw, list) or not raw:
        raise ConfigError("'messages' must be a non-empty list")
    cleaned: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict) or "role" not in item:
            raise ConfigError(f"each message needs a 'role', got {item!r}")
        msg = dict(item)
        # The 'developer' role is OpenAI's newer name for 'system'.
        if msg["role"] == "developer":
            msg["role"] = "system"
        if msg.get("content") is None:
            msg["content"] = ""
        cleaned.append(msg)
    try:
        return convert_to_messages(cleaned)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"cannot parse messages: {exc}") from exc
