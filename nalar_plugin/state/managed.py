"""Session-scoped managed state: the paper's managedDict and managedList.

``managed_dict(name)`` and ``managed_list(name)`` return handles that behave like
a ``dict`` and a ``list``. A handle holds no data and no session: every
operation binds to the session of the call that runs it, so one module-level
handle serves every session, and a session's state follows its calls to
whatever worker or host runs them (nothing to move by hand on migration).

Where an operation goes:

* inside a call (a stub's body): reads see the session's state as committed
  when the call first touched that name, plus the call's own writes; writes
  are *staged* and committed atomically with the call's result in the journal.
  A failed attempt leaves no writes; a replayed call writes nothing again.
* in the driver of a Runtime, outside any call: straight to the store, each
  write its own transaction. The session comes from ``rt.session(...)`` or the
  ``session=`` argument.
* with no Runtime: a dict or list in this process, per session and name, so the
  same code runs as plain Python.

Commits apply *operations*, not copies: concurrent calls of one session that
append to one list all land, in commit order; for a dict key the last commit
wins; a list position (``lst[i] = v``, ``insert``, ``del``) addresses the list
as it is at commit. Values are serialised when written (a value the store's
serde cannot encode raises :class:`~nalar_plugin.errors.SerializationError` at
the write). Mutating a value in place (``d["k"].append(1)``) is not seen:
assign it again (``d["k"] = v``).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    MutableMapping,
    MutableSequence,
)
from typing import Any, Protocol, overload

from nalar_plugin.context import active_runtime, current_session
from nalar_plugin.errors import RuntimeStateError, StateError
from nalar_plugin.state._ops import (
    DICT,
    LIST,
    Op,
    apply_op,
    decode_container,
    empty,
    encode_op,
    encode_ops,
    managed_key,
)

__all__ = ["CallScope", "ManagedDict", "ManagedList", "current_scope", "managed_dict", "managed_list"]

_scope_var: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar("nalar_managed_scope", default=None)


class _Binding(Protocol):
    def read(self, session: str, name: str, kind: str) -> Any: ...

    def write(self, session: str, name: str, kind: str, op: str, args: tuple[Any, ...]) -> None: ...


class CallScope:
    """The managed-state view and the staged writes of one running call.

    Args:
        session: The call's session.
        access: Returns the call's state access (an object with ``read(session,
            name) -> bytes | None`` and ``serde``); called at the first
            managed-state operation, so a call that uses none costs nothing.
    """

    def __init__(self, session: str, access: Callable[[], Any]) -> None:
        self.session = session
        self._access = access
        self._views: dict[tuple[str, str], tuple[str, Any]] = {}
        self._ops: list[Op] = []
        # A body may hand the scope to its own threads (contextvars.copy_context()).
        self._lock = threading.RLock()

    @property
    def serde(self) -> Any:
        """The store's serde."""
        return self._access().serde

    def read(self, session: str, name: str, kind: str) -> Any:
        """Return the call's view of a container, hydrating it on first use."""
        with self._lock:
            held = self._views.get((session, name))
            if held is None:
                data = self._access().read(session, name)
                key = managed_key(session, name)
                value = empty(kind) if data is None else decode_container(self.serde, data, key=key, kind=kind)[1]
                held = self._views[(session, name)] = (kind, value)
            elif held[0] != kind:
                raise StateError(
                    f"managed state {name!r} of session {session!r} is a managed_{held[0]}; "
                    f"it cannot be opened as a managed_{kind}"
                )
            return held[1]

    def write(self, session: str, name: str, kind: str, op: str, args: tuple[Any, ...]) -> None:
        """Stage one write and apply it to the call's view."""
        staged = encode_op(self.serde, session, name, kind, op, args)  # fails before any change
        with self._lock:
            apply_op(self.serde, self.read(session, name, kind), kind, op, list(args), decoded=True)
            self._ops.append(staged)

    @property
    def dirty(self) -> bool:
        """Whether the call staged any write."""
        return bool(self._ops)

    def encoded_ops(self) -> bytes | None:
        """The staged writes, framed for :meth:`Journal.commit`, or ``None``."""
        with self._lock:
            return encode_ops(self._ops) if self._ops else None

    def activate(self) -> contextvars.Token[CallScope | None]:
        """Make this the scope of managed-state operations in this context."""
        return _scope_var.set(self)

    @staticmethod
    def deactivate(token: contextvars.Token[CallScope | None]) -> None:
        """Undo :meth:`activate`."""
        _scope_var.reset(token)


def current_scope() -> CallScope | None:
    """Return the scope of the call running here, if any."""
    return _scope_var.get()


class _StoreBinding:
    """Outside any call, in a driver: read and write the store directly."""

    def __init__(self, journal: Any) -> None:
        self._journal = journal

    def read(self, session: str, name: str, kind: str) -> Any:
        return self._journal.load_managed(session, name, kind)

    def write(self, session: str, name: str, kind: str, op: str, args: tuple[Any, ...]) -> None:
        staged = encode_op(self._journal.serde, session, name, kind, op, args)
        self._journal.apply(encode_ops([staged]))


class _PlainBinding:
    """No Runtime: containers live in this process, as plain Python."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], tuple[str, Any]] = {}
        self._lock = threading.RLock()

    def read(self, session: str, name: str, kind: str) -> Any:
        with self._lock:
            held = self._data.get((session, name))
            if held is None:
                held = self._data[(session, name)] = (kind, empty(kind))
            elif held[0] != kind:
                raise StateError(f"managed state {name!r} of session {session!r} is a managed_{held[0]}")
            return held[1]

    def write(self, session: str, name: str, kind: str, op: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            apply_op(None, self.read(session, name, kind), kind, op, list(args), decoded=True)


_PLAIN = _PlainBinding()


class _Handle:
    _kind = DICT

    def __init__(self, name: str, session: str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise StateError(f"a managed_{self._kind} needs a non-empty str name, got {name!r}")
        if session is not None and not isinstance(session, str):
            raise StateError(f"session must be a str or None, got {session!r}")
        self._name = name
        self._session = session

    @property
    def name(self) -> str:
        """The container's name within its session."""
        return self._name

    def _bind(self) -> tuple[_Binding, str]:
        scope = _scope_var.get()
        if scope is not None:
            return scope, self._session or scope.session
        rt = active_runtime()
        if rt is None:
            return _PLAIN, self._session or current_session() or "default"
        journal = getattr(rt, "journal", None)
        if journal is None:
            raise RuntimeStateError(
                f"managed_{self._kind}({self._name!r}) is reachable inside a call or in the driver "
                "of a Runtime; a thread started by a call body must run in a copy of its context "
                "(contextvars.copy_context().run)"
            )
        session = self._session or current_session()
        if session is None:
            raise RuntimeStateError(
                f"managed_{self._kind}({self._name!r}) outside a call needs a session: "
                "use `with rt.session(...)` or pass session="
            )
        return _StoreBinding(journal), session

    def _read(self) -> Any:
        binding, session = self._bind()
        return binding.read(session, self._name, self._kind)

    def _write(self, op: str, *args: Any) -> None:
        binding, session = self._bind()
        binding.write(session, self._name, self._kind, op, args)

    def __repr__(self) -> str:
        try:
            shown = repr(self._read())
        except Exception:  # repr must not raise (no session, closed store, ...)
            shown = "<unbound>"
        return f"managed_{self._kind}({self._name!r}, {shown})"


class ManagedDict(_Handle, MutableMapping[Any, Any]):
    """A dict bound to the session of the call that uses it (see the module docstring).

    Args:
        name: The container's name within its session.
        session: Bind to this session instead of the current one.
    """

    _kind = DICT

    def __getitem__(self, key: Any) -> Any:
        return self._read()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._write("set", key, value)

    def __delitem__(self, key: Any) -> None:
        if key not in self._read():
            raise KeyError(key)
        self._write("del", key)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._read()))

    def __len__(self) -> int:
        return len(self._read())

    def __contains__(self, key: object) -> bool:
        return key in self._read()

    def clear(self) -> None:
        """Remove every item (one write)."""
        self._write("clear")

    def copy(self) -> dict[Any, Any]:
        """Return a plain dict with the current items."""
        return dict(self._read())


class ManagedList(_Handle, MutableSequence[Any]):
    """A list bound to the session of the call that uses it (see the module docstring).

    Args:
        name: The container's name within its session.
        session: Bind to this session instead of the current one.
    """

    _kind = LIST

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self._read()[index]

    @overload
    def __setitem__(self, index: int, value: Any) -> None: ...
    @overload
    def __setitem__(self, index: slice, value: Iterable[Any]) -> None: ...
    def __setitem__(self, index: int | slice, value: Any) -> None:
        if isinstance(index, slice):
            self._write("set", index, list(value))
            return
        self._read()[index]  # an IndexError now, not a silent skip at commit
        self._write("set", index, value)

    def __delitem__(self, index: int | slice) -> None:
        if not isinstance(index, slice):
            self._read()[index]
        self._write("del", index)

    def __len__(self) -> int:
        return len(self._read())

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._read()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, ManagedList)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def insert(self, index: int, value: Any) -> None:
        """Insert ``value`` before ``index`` (a position as of commit)."""
        self._write("insert", index, value)

    def append(self, value: Any) -> None:
        """Append ``value``; appends of concurrent calls all land, in commit order."""
        self._write("append", value)

    def extend(self, values: Iterable[Any]) -> None:
        """Append every item of ``values`` (one write)."""
        items = list(values)
        if items:
            self._write("extend", items)

    def clear(self) -> None:
        """Remove every item (one write)."""
        self._write("clear")

    def copy(self) -> list[Any]:
        """Return a plain list with the current items."""
        return list(self._read())


def managed_dict(name: str, *, session: str | None = None) -> ManagedDict:
    """Return the session-scoped dict ``name`` (the paper's managedDict).

    Args:
        name: The dict's name within its session.
        session: Bind to this session instead of the session of the running
            call (or of the ``rt.session`` block, in a driver).

    Returns:
        A handle that behaves like a ``dict``.

    Raises:
        StateError: ``name`` is not a non-empty str.
    """
    return ManagedDict(name, session)


def managed_list(name: str, *, session: str | None = None) -> ManagedList:
    """Return the session-scoped list ``name`` (the paper's managedList).

    Args:
        name: The list's name within its session.
        session: Bind to this session instead of the session of the running
            call (or of the ``rt.session`` block, in a driver).

    Returns:
        A handle that behaves like a ``list``.

    Raises:
        StateError: ``name`` is not a non-empty str.
    """
    return ManagedList(name, session)
