"""The serialiser protocol of the state store and its safe default.

A serde turns a Python value into a ``(type tag, bytes)`` pair and back. The
shape is the one LangGraph uses (``SerializerProtocol``), so any LangGraph
serialiser, including ``EncryptedSerializer``, can be passed as ``serde=``.

The default is LangGraph's ``JsonPlusSerializer`` in *strict* mode:

* ``pickle_fallback=False``: values that msgpack cannot encode raise instead of
  being pickled, and a stored ``"pickle"`` payload is refused on load.
* ``allowed_msgpack_modules=None``: on load, only the types in LangGraph's
  built-in safe list (datetime, UUID, LangChain messages, ``Send``,
  ``Interrupt``, ``Command``, ...) are rebuilt. Any other stored class comes back
  as its plain data and LangGraph logs (``logging``, not ``warnings``) that it was
  blocked. Without this argument the serialiser imports and calls whatever
  ``module.name`` a stored payload names, so whoever can write the state
  directory could run code in every process that reads it.

Pass extra trusted classes with ``default_serde(allowed_types=[MyModel])``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

__all__ = ["SerdeProtocol", "default_serde"]


@runtime_checkable
class SerdeProtocol(Protocol):
    """Turns values into ``(type tag, payload)`` pairs and back.

    This is structurally the same as LangGraph's ``SerializerProtocol``.
    """

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """Serialise a value.

        Args:
            obj: The value to serialise.

        Returns:
            A ``(type tag, payload)`` pair.
        """
        ...

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Deserialise a value made by :meth:`dumps_typed`.

        Args:
            data: The ``(type tag, payload)`` pair.

        Returns:
            The value.
        """
        ...


def default_serde(
    *, allowed_types: Iterable[type | tuple[str, ...]] = ()
) -> JsonPlusSerializer:
    """Build the safe default serialiser.

    Args:
        allowed_types: Extra classes (or ``(module, name)`` tuples) that may be
            rebuilt on load, on top of LangGraph's built-in safe list. Only list
            classes whose constructor has no side effects.

    Returns:
        A strict ``JsonPlusSerializer`` that never pickles or unpickles.
    """
    extra = tuple(allowed_types)
    serde = JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)
    if extra:
        # Goes through LangGraph's own merge so the allowlist is normalised the
        # same way as the one a compiled graph would add.
        serde = serde.with_msgpack_allowlist(extra)
    return serde
