"""How a shipped model or tool, and its arguments, reach a worker process.

Adapter calls run where their objects live (in the caller, after the
controllers admit them) unless shipping was asked for: a chat model deployed
with ``rt.deploy_model`` (its calls run on the instance the controllers pick),
or ``rt.callback(ship=...)`` for tools. Shipping to a worker in another
process sends an object in one of two ways:

* a tool defined at module level travels as an import reference; a LangChain
  object that does not pickle (a ``ChatOpenAI`` holds HTTP clients) travels as
  its constructor fields when the class rebuilds the rest itself; anything
  else travels pickled;
* **not at all** when neither works: :class:`NotSendable` names the object,
  and the call runs where it lives under the same scheduling, with an
  :class:`InProcessWarning` (once per object).
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections import OrderedDict
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from langgraph.store.memory import InMemoryStore

from ..context import new_id
from ..errors import NalarError, NalarWarning
from ..links import dumps

__all__ = [
    "InProcessWarning",
    "Lazy",
    "NotSendable",
    "check_sendable",
    "resolve",
    "sendable",
]


class InProcessWarning(NalarWarning):
    """A tool or model could not be sent to a worker and runs in the caller's process."""


class NotSendable(NalarError, TypeError):
    """An object of an adapter call cannot be sent to a Dask worker process.

    Attributes:
        what: Which object, e.g. ``"tool 'lookup'"``.
        reason: The serialisation error.
    """

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what} cannot be sent to a Dask worker process: {reason}")
        self.what = what
        self.reason = reason


class Lazy:
    """A stand-in that travels as plain data and becomes its object on the worker.

    Nothing happens when it is unpickled: Dask's scheduler unpickles a task's
    arguments and pickles them again for the worker, and an object made there
    (a rebuilt ``ChatOpenAI``) would not pickle a second time. The worker calls
    :func:`resolve`.
    """

    __slots__ = ()

    def resolve(self) -> Any:
        """The object this stands for, in this process."""
        raise NotImplementedError


def resolve(value: Any) -> Any:
    """``value``'s object if it is a :class:`Lazy` stand-in, else ``value``."""
    return value.resolve() if isinstance(value, Lazy) else value


def _dumps(obj: Any) -> bytes:
    # Dask's own pickle helper logs every failure at ERROR level; a failed probe
    # here is an expected outcome, not an error.
    return dumps(obj)


class _ImportRef(Lazy):
    """An object importable as ``module.attr`` travels as that name."""

    __slots__ = ("attr", "module")

    def __init__(self, module: str, attr: str) -> None:
        self.module = module
        self.attr = attr

    @property
    def name(self) -> str:
        """The attribute name (a tool's name for the journal's identity)."""
        return self.attr

    def resolve(self) -> Any:
        """Import the object."""
        return getattr(importlib.import_module(self.module), self.attr)


def _import_ref(obj: Any) -> _ImportRef | None:
    # A @tool at module level replaces its function in the module: the module
    # attribute named like the function is the tool itself.
    fn = getattr(obj, "func", None) or getattr(obj, "coroutine", None)
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__name__", None)
    if not module or not name or module == "__main__":
        return None
    mod = sys.modules.get(module)
    if mod is not None and getattr(mod, name, None) is obj:
        return _ImportRef(module, name)
    return None


_REBUILT: OrderedDict[str, Any] = OrderedDict()  # recipe id -> object, per process
_REBUILT_LOCK = threading.Lock()


class _Rebuild(Lazy):
    """A pydantic object sent as its class and the constructor fields that pickle.

    A worker builds it once per recipe and reuses it (clients and caches stay warm).
    """

    __slots__ = ("cls", "fields", "id")

    def __init__(self, cls: type, fields: dict[str, Any]) -> None:
        self.id = new_id("rebuild")
        self.cls = cls
        self.fields = fields

    @property
    def name(self) -> str:
        """The object's ``name`` field, if any (a tool's name)."""
        return str(self.fields.get("name") or self.cls.__name__)

    def resolve(self) -> Any:
        """The rebuilt object."""
        with _REBUILT_LOCK:
            obj = _REBUILT.get(self.id)
            if obj is None:
                obj = _REBUILT[self.id] = self.cls(**self.fields)
                while len(_REBUILT) > 256:
                    _REBUILT.popitem(last=False)
            return obj


# id(obj) -> (obj, what is sent); the object is kept so its id stays its own.
_SENDABLE: dict[int, tuple[Any, Any]] = {}
_SENDABLE_LOCK = threading.Lock()
_SENDABLE_MAX = 4096


def _remade(original: Any, rebuilt: Any) -> bool:
    """Whether the rebuilt object made an equivalent of a field that could not travel."""
    if rebuilt is None:
        return False
    if isinstance(original, (dict, list, tuple, set, frozenset)):
        return bool(original == rebuilt)  # data the user gave must come back equal
    return type(rebuilt) is type(original)  # a client or cache of the same kind


def _rebuild_recipe(obj: Any, what: str, first_error: Exception) -> _Rebuild:
    fields_set = getattr(obj, "model_fields_set", None)
    if fields_set is None:
        raise NotSendable(what, str(first_error))
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for name in sorted(fields_set):
        value = getattr(obj, name, None)
        try:
            _dumps(value)
        except Exception:
            dropped.append(name)
        else:
            kept[name] = value
    try:
        rebuilt = type(obj)(**kept)
    except Exception as exc:
        raise NotSendable(what, f"{first_error}; rebuilding it from its fields failed: {exc}") from exc
    # Only what the class makes again by itself (clients, caches) may be left out;
    # an unpicklable value the user passed in would be silently lost.
    lost = [n for n in dropped if not _remade(getattr(obj, n, None), getattr(rebuilt, n, None))]
    if lost:
        raise NotSendable(what, f"{first_error}; its field(s) {lost} do not pickle")
    return _Rebuild(type(obj), kept)


def _process_local(obj: Any) -> str | None:
    """Why ``obj`` must not be copied to another process, if it must not."""
    if isinstance(obj, InMemoryStore):
        return ("it keeps its data in this process's memory, and a worker process would write to a copy; "
                "use a shared store such as nalar_plugin.state.DiskcacheStore")
    return None


def sendable(obj: Any, what: str) -> Any:
    """Return what to send for ``obj`` to a worker in another process.

    Args:
        obj: The tool, model, store or argument.
        what: How to name it in an error, e.g. ``"tool 'lookup'"``.

    Returns:
        ``obj`` itself, an import reference, or a rebuild recipe.

    Raises:
        NotSendable: Nothing of that works.
    """
    if obj is None or isinstance(obj, (str, int, float, bool, bytes)):
        return obj
    local = _process_local(obj)
    if local is not None:
        raise NotSendable(what, local)
    with _SENDABLE_LOCK:
        hit = _SENDABLE.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    sent: Any = _import_ref(obj)
    if sent is None:
        try:
            _dumps(obj)
            sent = obj
        except Exception as exc:
            sent = _rebuild_recipe(obj, what, exc)
    # Tools and models are long-lived; arguments are not worth remembering.
    if _is_component(obj):
        with _SENDABLE_LOCK:
            if len(_SENDABLE) >= _SENDABLE_MAX:
                _SENDABLE.clear()
            _SENDABLE[id(obj)] = (obj, sent)
    return sent


def _is_component(obj: Any) -> bool:
    return isinstance(obj, (BaseTool, BaseChatModel))


def check_sendable(value: Any, what: str) -> Any:
    """Like :func:`sendable` for a plain argument (no import reference, no rebuild)."""
    if value is None or isinstance(value, (str, int, float, bool, bytes)):
        return value
    local = _process_local(value)
    if local is not None:
        raise NotSendable(what, local)
    try:
        _dumps(value)
    except Exception as exc:
        raise NotSendable(what, str(exc)) from exc
    return value
