"""A LangChain LLM cache (``langchain_core.caches.BaseCache``) on a Store.

Layout::

    llmcache:{sha256(llm_string)}:{sha256(prompt)}   the generations

Generations are stored as plain data (text, ``generation_info`` and, for chat
generations, the message as ``message_to_dict`` gives it) and rebuilt from a
fixed list of classes, so reading the cache never imports a class named by the
stored data. LangChain's ``loads`` is not used: it is a beta API that warns on
use and, with its default allowlist, revives more than plain results.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
from types import TracebackType
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.messages import message_to_dict, messages_from_dict
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    GenerationChunk,
)

from nalar_plugin.errors import ConfigError, SerializationError, StateCorruptedError
from nalar_plugin.state._encoding import dumps_value, loads_value, pack, unpack
from nalar_plugin.state.serde import SerdeProtocol
from nalar_plugin.state.store import Store

__all__ = ["DiskcacheLLMCache"]

_PREFIX = "llmcache:"
_TEXT_KINDS: dict[str, type[Generation]] = {
    "Generation": Generation,
    "GenerationChunk": GenerationChunk,
}
_CHAT_KINDS: dict[str, type[ChatGeneration]] = {
    "ChatGeneration": ChatGeneration,
    "ChatGenerationChunk": ChatGenerationChunk,
}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _to_plain(generation: Generation) -> dict[str, Any]:
    kind = type(generation).__name__
    # Exact types only: a subclass would come back as its base class.
    if (
        isinstance(generation, ChatGeneration)
        and type(generation) in _CHAT_KINDS.values()
    ):
        return {
            "kind": kind,
            "message": message_to_dict(generation.message),
            "generation_info": generation.generation_info,
        }
    if type(generation) in _TEXT_KINDS.values():
        return {
            "kind": kind,
            "text": generation.text,
            "generation_info": generation.generation_info,
        }
    raise SerializationError(
        f"the LLM cache stores Generation, GenerationChunk, ChatGeneration and "
        f"ChatGenerationChunk, got {type(generation).__qualname__}"
    )


def _from_plain(data: Any, *, what: str) -> Generation:
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise StateCorruptedError(f"{what} holds a malformed generation")
    kind = data["kind"]
    info = data.get("generation_info")
    try:
        if kind in _CHAT_KINDS:
            (message,) = messages_from_dict([data["message"]])
            return _CHAT_KINDS[kind](message=message, generation_info=info)
        if kind in _TEXT_KINDS:
            return _TEXT_KINDS[kind](text=data["text"], generation_info=info)
    except (KeyError, TypeError, ValueError) as exc:
        raise StateCorruptedError(f"{what} holds a malformed {kind}: {exc}") from exc
    raise StateCorruptedError(f"{what} holds an unknown generation kind {kind!r}")


class DiskcacheLLMCache(BaseCache):
    """LangChain LLM response cache kept in a nalar state directory.

    Args:
        store: An open :class:`Store`, or a directory path to open (then owned
            and closed by this object).
        serde: Serialiser for the stored generations (plain data); defaults to
            the store's serde.
        ttl: Seconds an entry lives; ``None`` keeps entries until cleared.

    Raises:
        ConfigError: ``ttl`` is not positive.
        StateError: Opening the directory failed.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        *,
        serde: SerdeProtocol | None = None,
        ttl: float | None = None,
    ) -> None:
        if ttl is not None and (not isinstance(ttl, (int, float)) or ttl <= 0):
            raise ConfigError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if isinstance(store, Store):
            self._store, self._owns_store = store, False
        else:
            self._store, self._owns_store = Store(store, serde=serde), True
        self._serde: SerdeProtocol = serde if serde is not None else self._store.serde
        self._ttl = float(ttl) if ttl is not None else None

    @property
    def store(self) -> Store:
        """The underlying store."""
        return self._store

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickles as "the same store, the same settings", so the object can be
        # sent to a Dask worker in another process; the Store reopens its
        # directory there. A default serde is rebuilt rather than pickled.
        serde = None if self._serde is self._store.serde else self._serde
        factory = functools.partial(DiskcacheLLMCache, serde=serde, ttl=self._ttl)
        return (factory, (self._store,))

    def close(self) -> None:
        """Close the store if this object opened it."""
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> DiskcacheLLMCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def _key(prompt: str, llm_string: str) -> str:
        # Hashes keep keys short whatever the prompt length; the llm_string part
        # comes first so all entries of one model share a prefix.
        return f"{_PREFIX}{_digest(llm_string)}:{_digest(prompt)}"

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Return the cached generations for a prompt and model, if any.

        Args:
            prompt: The prompt (a string, or a serialised chat input).
            llm_string: The model and its parameters, as a string.

        Returns:
            The generations, or ``None`` on a miss.

        Raises:
            StateCorruptedError: The stored entry cannot be decoded.
        """
        key = self._key(prompt, llm_string)
        data = self._store.get_bytes(key)
        if data is None:
            return None
        type_, payload = unpack(data, key=key, length=2)
        plain = loads_value(
            self._serde, type_, payload, what=f"LLM cache entry {key!r}"
        )
        if not isinstance(plain, list):
            raise StateCorruptedError(f"LLM cache entry {key!r} is not a list")
        return [_from_plain(item, what=f"LLM cache entry {key!r}") for item in plain]

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the generations for a prompt and model.

        Args:
            prompt: The prompt.
            llm_string: The model and its parameters.
            return_val: The generations.

        Raises:
            SerializationError: A generation (or its ``generation_info``) cannot
                be serialised; nothing is written.
        """
        key = self._key(prompt, llm_string)
        plain = [_to_plain(generation) for generation in return_val]
        typed = dumps_value(self._serde, plain, what=f"LLM cache entry {key!r}")
        self._store.set_bytes(key, pack(typed), expire=self._ttl)

    def clear(self, **kwargs: Any) -> None:
        """Delete every entry of this cache (other components are untouched).

        Args:
            **kwargs: Accepted for interface compatibility; ignored.
        """
        self._store.delete_prefix(_PREFIX)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Async :meth:`lookup` (runs in a worker thread)."""
        return await asyncio.to_thread(self.lookup, prompt, llm_string)

    async def aupdate(
        self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE
    ) -> None:
        """Async :meth:`update` (runs in a worker thread)."""
        await asyncio.to_thread(self.update, prompt, llm_string, return_val)

    async def aclear(self, **kwargs: Any) -> None:
        """Async :meth:`clear` (runs in a worker thread)."""
        await asyncio.to_thread(self.clear)
