"""The drop-in fidelity harness: one scenario, run without and with ``rt.callback()``.

A scenario is a function (sync or ``async def``) that builds an unmodified
LangGraph app, runs it with ``run.config()`` and records what the app can
observe with ``run.observe(...)``, ``run.raises(...)`` and
``run.observe_state(...)``. :meth:`Fidelity.check` runs it three times:

1. without the callback, 2. without the callback again, 3. with ``rt.callback()``
   added to every config the scenario asks for.

Runs 1 and 2 must agree (otherwise the scenario itself is not deterministic and
the harness, not nalar, is wrong: the failure says ``HARNESS``); run 3 must agree
with run 1. Every run gets the same deterministic ``uuid.uuid4`` (a counter reset
before the run; the ``uuid4`` bindings that LangChain and LangGraph modules
imported by name get the same counter), the same ``random`` seed, the same
thread ids and a fresh, empty work directory at the same path, so whatever
differs in run 3 was caused by nalar. How many ids were drawn from
``uuid.uuid4`` in this process, and the state of the global ``random``
generator after the run, are observations too: nalar must draw from neither.

Set ``FIDELITY_DUMP=<dir>`` to write the normalised runs of every scenario
there; set ``FIDELITY_SELF_CHECK=1`` to make run 3 a run without the callback as
well, which checks the harness itself (the whole suite must then pass).

What is compared, after normalisation (:class:`Canon`):

* every observation the scenario made (outputs with message ids, stream chunks,
  checkpoints, exceptions with their type, message, exception chain and the
  frames of this test package in their tracebacks);
* the events of a recording callback handler (:class:`EventRecorder`) that the
  harness adds to both runs: each run's own events in order (name, inputs,
  outputs, tags, metadata, tokens ...) keyed by the run's place in the run tree,
  and, unless the scenario runs LangGraph tasks concurrently, the global order of
  all events.

Normalisation only removes what differs between two runs of LangGraph itself:
run ids (time-based uuid7) become the run's path in the run tree (so
``lc_run--<run id>`` message ids still name the model run that made them);
other uuids and 32-hex ids that LangGraph derives from time-based checkpoint ids
(task ids, checkpoint ids, interrupt ids) become placeholders; timestamps and
memory addresses are dropped. Ids drawn from ``uuid.uuid4`` are kept verbatim.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import enum
import hashlib
import inspect
import itertools
import os
import pprint
import random
import re
import shutil
import sys
import threading
import traceback
import uuid
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Union, cast
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

from nalar_plugin import Runtime
from nalar_plugin.errors import NalarWarning

__all__ = [
    "FIDELITY_DIR",
    "MODES",
    "Canon",
    "CountingUUID4",
    "Event",
    "EventRecorder",
    "Fidelity",
    "Run",
    "Scenario",
    "describe_error",
    "plain",
]

MODES = ("threads", "processes")
FIDELITY_DIR = str(Path(__file__).resolve().parent)
SEED = 1729

Scenario = Callable[["Run"], Union[None, Awaitable[None]]]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_COUNTER = re.compile(r"00000000-0000-4000-8000-[0-9a-f]{12}")
_HEX32 = re.compile(r"(?<![0-9a-fA-F])[0-9a-f]{32}(?![0-9a-fA-F])")
_COUNTER_HEX = re.compile(r"0{12}40008[0-9a-f]{15}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_TIME_KEYS = frozenset({"created_at", "timestamp", "ts"})
_MAX_DIFF_LINES = 60


# -- determinism --------------------------------------------------------------------
class CountingUUID4:
    """A deterministic ``uuid.uuid4``: ``00000000-0000-4000-8000-<n>``, n = 1, 2, ...

    Thread-safe; a new instance starts again at 1.
    """

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> UUID:
        """Return the next id."""
        with self._lock:
            self.count += 1
            n = self.count
        return UUID(int=n, version=4)


# -- plain data -----------------------------------------------------------------------
def _key(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, tuple):
        return tuple(_key(v) for v in value)
    return _ADDRESS.sub("0x?", repr(value))


def plain(value: Any, _depth: int = 0) -> Any:
    """``value`` as plain, comparable data (dicts, lists, tuples, str, numbers).

    Messages, pydantic models, dataclasses and named tuples become dicts tagged
    with their class; exceptions their type and message; other objects (functions,
    handlers, locks) their type name. Nothing is mutated.

    Args:
        value: Anything an app can observe.

    Returns:
        A structure of builtins that compares with ``==`` and prints with pprint.
    """
    if _depth > 30:
        return "<too deep>"
    d = _depth + 1
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return {"__bytes__": value.hex()}
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, (datetime, date, time, timedelta)):
        return "<time>"
    if isinstance(value, BaseException):
        return {"__error__": f"{type(value).__module__}.{type(value).__qualname__}", "message": str(value)}
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        return {"__class__": type(value).__qualname__,
                **{name: plain(getattr(value, name, None), d) for name in fields}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__class__": type(value).__qualname__,
                **{f.name: plain(getattr(value, f.name, None), d) for f in dataclasses.fields(value)}}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {"__class__": type(value).__qualname__, **{k: plain(getattr(value, k), d) for k in value._fields}}
    slots = getattr(type(value), "__slots__", None)
    if type(value).__module__.startswith("langgraph") and slots and not isinstance(value, Mapping):
        # Send, Overwrite and other slotted LangGraph values.
        return {"__class__": type(value).__qualname__, **{k: plain(getattr(value, k, None), d) for k in slots}}
    if isinstance(value, Mapping):
        return {_key(k): plain(v, d) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v, d) for v in value)
    if isinstance(value, list):
        return [plain(v, d) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"__set__": sorted((plain(v, d) for v in value), key=repr)}
    return f"<{type(value).__qualname__}>"


# -- the recording handler ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Event:
    """One callback event as the app's handler saw it.

    Attributes:
        seq: Position in the run's global event order.
        kind: The handler method, e.g. ``"on_tool_start"``.
        run_id: The event's run id, as a str.
        parent_run_id: The parent run's id, or None.
        data: Every other argument, as plain data (``run_name`` and ``inputs`` on starts).
    """

    seq: int
    kind: str
    run_id: str
    parent_run_id: str | None
    data: dict[str, Any]


_EVENTS = (
    "on_llm_start", "on_chat_model_start", "on_llm_new_token", "on_llm_end", "on_llm_error",
    "on_stream_event", "on_chain_start", "on_chain_end", "on_chain_error", "on_agent_action",
    "on_agent_finish", "on_tool_start", "on_tool_end", "on_tool_error", "on_retriever_start",
    "on_retriever_end", "on_retriever_error", "on_text", "on_retry", "on_custom_event",
)


def _run_name(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if kwargs.get("name"):
        return str(kwargs["name"])
    serialized = args[0] if args and isinstance(args[0], dict) else None
    if serialized:
        if serialized.get("name"):
            return str(serialized["name"])
        ident = serialized.get("id")
        if isinstance(ident, list) and ident:
            return str(ident[-1])
    return "?"


class EventRecorder(BaseCallbackHandler):
    """Records every ``on_*`` callback event with its run, parent and arguments.

    Runs inline (``run_inline``) so that LangChain calls it in the order it
    emits events, also on async runs, instead of from a thread pool.

    The arguments are converted to plain data when the run is over, not when the
    event fires: LangChain merges handler lists through sets, so the order in which
    handlers see an event varies from run to run, and LangGraph's own stream
    handlers mutate the objects an event carries (they stamp message ids, add
    ``tags`` to the metadata). Converted at the end, every event shows the objects
    in their final form, whichever handler ran first.
    """

    run_inline = True
    raise_error = False

    def __init__(self) -> None:
        self._raw: list[tuple[int, str, str, str | None, tuple[Any, ...], dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._events: list[Event] | None = None

    def record(self, kind: str, args: tuple[Any, ...], run_id: Any, parent_run_id: Any,
               kwargs: dict[str, Any]) -> None:
        """Store one event (converted to plain data by :attr:`events`)."""
        with self._lock:
            self._raw.append((next(self._seq), kind, str(run_id),
                              str(parent_run_id) if parent_run_id is not None else None, args, dict(kwargs)))

    @property
    def events(self) -> list[Event]:
        """The recorded events, as plain data (converted once, on first access)."""
        with self._lock:
            if self._events is None:
                self._events = [Event(seq, kind, run_id, parent, _event_data(kind, args, kwargs))
                                for seq, kind, run_id, parent, args, kwargs in self._raw]
            return self._events


def _event_data(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        data: dict[str, Any] = {"args": plain(args), **{k: plain(v) for k, v in kwargs.items()}}
        if kind.endswith("_start"):
            data["run_name"] = _run_name(args, kwargs)
            data["inputs"] = plain((args[1] if len(args) > 1 else None, kwargs.get("inputs")))
    except Exception as exc:  # a recorder failure must show in the comparison, not vanish
        data = {"recorder_error": f"{type(exc).__name__}: {exc}"}
    return data


def _recording(name: str) -> Callable[..., None]:
    def method(self: EventRecorder, *args: Any, run_id: Any = None, parent_run_id: Any = None,
               **kwargs: Any) -> None:
        self.record(name, args, run_id, parent_run_id, kwargs)

    method.__name__ = name
    method.__doc__ = f"Record ``{name}``."
    return method


for _event_name in _EVENTS:
    setattr(EventRecorder, _event_name, _recording(_event_name))


# -- normalisation ----------------------------------------------------------------------
class _Unordered:
    """An observation whose order LangGraph does not fix: compared as a sorted list."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items


class _Grouped:
    """An observation compared per group, each group in order (e.g. chunks per message)."""

    def __init__(self, items: list[Any], key: Callable[[Any], Any]) -> None:
        self.items = items
        self.key = key


def _digest(value: Any) -> str:
    return hashlib.sha1(repr(value).encode()).hexdigest()[:6]


class Canon:
    """Replaces what differs between two runs of LangGraph itself by stable names.

    Each run id becomes its path in the run tree: ``/LangGraph#0/agent#0/Model#0``,
    where ``#k`` counts siblings of the same name in start order. When tasks run
    concurrently their start order is not fixed, so each step of the path also
    carries a digest of the run's inputs, ``/research{3fa2c1}#0`` (computed with
    ids drawn from ``uuid.uuid4`` masked, so a shifted id does not rename runs).

    Args:
        events: The recorded events of one run.
        concurrent: Disambiguate siblings by their inputs, not their start order.
        mask_uuid4: Replace ids drawn from the deterministic ``uuid.uuid4`` by
            ``<uuid4>`` too (for diagnosis, or when concurrent graphs draw them in
            an order LangGraph does not fix).
        scrub: Regular expressions whose matches in any string become ``<*>``.
    """

    def __init__(self, events: Sequence[Event], *, concurrent: bool, mask_uuid4: bool = False,
                 scrub: Sequence[str] = ()) -> None:
        self.paths: dict[str, str] = {}
        self.mask_uuid4 = mask_uuid4
        self.scrub = [re.compile(p) for p in scrub]
        seen: Counter[str] = Counter()
        for ev in events:
            if ev.run_id in self.paths or not ev.kind.endswith("_start"):
                continue
            parent = "" if ev.parent_run_id is None else self.paths.get(ev.parent_run_id, "/?")
            label = str(ev.data.get("run_name", "?"))
            if concurrent:
                masked, self.mask_uuid4 = self.mask_uuid4, True
                label += "{" + _digest(self.apply(ev.data.get("inputs"), unknown="?")) + "}"
                self.mask_uuid4 = masked
            base = f"{parent}/{label}"
            self.paths[ev.run_id] = f"{base}#{seen[base]}"
            seen[base] += 1

    def path(self, run_id: str | None) -> str:
        """The path of a run id (``"?"`` for a run that never started)."""
        if run_id is None:
            return ""
        return self.paths.get(run_id, "?")

    def _string(self, text: str, unknown: str) -> str:
        def uuid_name(m: re.Match[str]) -> str:
            raw = m.group(0).lower()
            if _COUNTER.fullmatch(raw):
                return "<uuid4>" if self.mask_uuid4 else m.group(0)
            known = self.paths.get(raw)
            return f"run:{known}" if known is not None else unknown

        text = _UUID.sub(uuid_name, text)
        def hex_name(m: re.Match[str]) -> str:
            if _COUNTER_HEX.fullmatch(m.group(0)):
                return "<uuid4>" if self.mask_uuid4 else m.group(0)
            return "<hex>"

        text = _HEX32.sub(hex_name, text)
        for pattern in self.scrub:
            text = pattern.sub("<*>", text)
        return _ADDRESS.sub("0x?", text)

    def apply(self, value: Any, unknown: str = "<uuid>") -> Any:
        """``value`` (plain data) with run ids, other ids, timestamps and addresses normalised."""
        if isinstance(value, str):
            return self._string(value, unknown)
        if isinstance(value, _Unordered):
            return sorted((self.apply(v, unknown) for v in value.items), key=repr)
        if isinstance(value, _Grouped):
            groups: dict[str, list[Any]] = {}
            for item in value.items:
                canon = self.apply(item, unknown)
                groups.setdefault(repr(value.key(canon)), []).append(canon)
            return groups
        if isinstance(value, dict):
            return {self.apply(k, unknown): ("<time>" if k in _TIME_KEYS else self.apply(v, unknown))
                    for k, v in value.items()}
        if isinstance(value, tuple):
            return tuple(self.apply(v, unknown) for v in value)
        if isinstance(value, list):
            return [self.apply(v, unknown) for v in value]
        return value


# -- exceptions ---------------------------------------------------------------------------
def _user_frames(tb: Any) -> list[tuple[str, str, int | None]]:
    """The frames of the scenarios and their tools (this package, the harness left out)."""
    out = []
    for frame in traceback.extract_tb(tb):
        path = Path(frame.filename)
        if str(path.resolve()).startswith(FIDELITY_DIR) and path.name != "_harness.py":
            out.append((path.name, frame.name, frame.lineno))
    return out


def describe_error(exc: BaseException, scrub: Sequence[str] = ()) -> dict[str, Any]:
    """What an app can see of an exception.

    Args:
        exc: The exception the app caught.
        scrub: Regular expressions whose matches in messages are replaced by ``<*>``
            (for parts LangGraph itself does not fix, such as elapsed times).

    Returns:
        The chain (``__cause__``, else unsuppressed ``__context__``) of exceptions,
        each with its type, message and the frames of this test package in its
        traceback; whether ``traceback.format_exception`` renders; and which of
        those frames' function names the rendered text names.
    """
    def clean(text: str) -> str:
        for pattern in scrub:
            text = re.sub(pattern, "<*>", text)
        return text

    chain: list[dict[str, Any]] = []
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append({"type": f"{type(current).__module__}.{type(current).__qualname__}",
                      "message": clean(str(current)), "user_frames": _user_frames(current.__traceback__)})
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    text = "".join(traceback.format_exception(exc))
    names = sorted({frame[1] for link in chain for frame in link["user_frames"]})
    return {"chain": chain, "renders": bool(text.strip()),
            "named_in_rendering": [n for n in names if f", in {n}\n" in text]}


# -- one run ----------------------------------------------------------------------------------
class Run:
    """One run of a scenario: its configs, its observations, its recorded events.

    Args:
        rt: The Runtime under test.
        served: Whether configs carry ``rt.callback()``.
        thread_prefix: Prefix of every thread id (the test's name).
        workdir: An empty directory, at the same path in every run of the scenario.
    """

    def __init__(self, rt: Runtime, served: bool, thread_prefix: str, workdir: Path) -> None:
        self.rt = rt
        self.served = served
        self.thread_prefix = thread_prefix
        self.workdir = workdir
        self.recorder = EventRecorder()
        self.parts: dict[str, Any] = {}
        self.in_process: list[str] = []

    @property
    def mode(self) -> str:
        """``"threads"`` or ``"processes"``."""
        return "processes" if self.rt.config["processes"] else "threads"

    def thread_id(self, thread: str = "main") -> str:
        """The thread id of ``thread`` (equal in every run of the scenario)."""
        return f"{self.thread_prefix}-{thread}"

    def callbacks(self, *extra: Any, record: bool = True) -> list[Any]:
        """The handlers of a run: the recorder, ``extra``, and ``rt.callback()`` when served."""
        handlers: list[Any] = [self.recorder] if record else []
        handlers.extend(extra)
        if self.served:
            handlers.append(self.rt.callback())
        return handlers

    def config(self, thread: str | None = "main", *, record: bool = True, callbacks: Sequence[Any] = (),
               **extra: Any) -> RunnableConfig:
        """A run config: ``thread_id``, the handlers of :meth:`callbacks`, and ``extra`` merged in.

        Args:
            thread: Which thread (None: no ``thread_id``).
            record: Add the recording handler.
            callbacks: The app's own further handlers.
            **extra: More config (``configurable`` and ``metadata`` are merged, the rest set).

        Returns:
            The config.
        """
        cfg: dict[str, Any] = {"configurable": {}, "callbacks": self.callbacks(*callbacks, record=record)}
        if thread is not None:
            cfg["configurable"]["thread_id"] = self.thread_id(thread)
        for key, value in extra.items():
            if key in ("configurable", "metadata") and isinstance(value, Mapping):
                cfg.setdefault(key, {}).update(value)
            else:
                cfg[key] = value
        return cast(RunnableConfig, cfg)

    def path(self, name: str) -> Path:
        """A file in the work directory."""
        return self.workdir / name

    def _put(self, name: str, value: Any) -> None:
        if name in self.parts:
            raise ValueError(f"observation {name!r} made twice")
        self.parts[name] = value

    def observe(self, name: str, value: Any, *, unordered: bool = False) -> Any:
        """Record what the app saw under ``name`` (``unordered``: order not fixed by LangGraph).

        Returns:
            ``value``, for chaining.
        """
        items = plain(value)
        self._put(name, _Unordered(list(items)) if unordered else items)
        return value

    def observe_grouped(self, name: str, items: Sequence[Any], key: Callable[[Any], Any]) -> None:
        """Record items whose interleaving is not fixed, compared per ``key`` group in order."""
        self._put(name, _Grouped([plain(i) for i in items], key))

    @contextlib.contextmanager
    def raises(self, name: str, *, scrub: Sequence[str] = ()) -> Iterator[None]:
        """Record the exception the block raises (or that it raised none) under ``name``."""
        try:
            yield
        except Exception as exc:
            self._put(name, describe_error(exc, scrub))
        else:
            self._put(name, {"raised": None})

    def observe_state(self, name: str, app: Any, config: Any, *, history: bool = True,
                      subgraphs: bool = False) -> None:
        """Record the thread's current checkpoint and, with ``history``, every earlier one."""
        cfg = {"configurable": dict(config.get("configurable") or {})}
        self._put(f"{name}: state", _snapshot(app.get_state(cfg, subgraphs=subgraphs)))
        if history:
            self._put(f"{name}: history", _history(list(app.get_state_history(cfg))))

    async def aobserve_state(self, name: str, app: Any, config: Any, *,
                             history: bool = True, subgraphs: bool = False) -> None:
        """The async twin of :meth:`observe_state` (``aget_state``, ``aget_state_history``)."""
        cfg = {"configurable": dict(config.get("configurable") or {})}
        self._put(f"{name}: state", _snapshot(await app.aget_state(cfg, subgraphs=subgraphs)))
        if history:
            self._put(f"{name}: history", _history([s async for s in app.aget_state_history(cfg)]))


def _snapshot(snap: Any) -> dict[str, Any]:
    """A StateSnapshot as plain data.

    A task's ``result`` is left out: it comes from the task's pending writes, which
    LangGraph serialises on its checkpointer thread while the loop stamps ids on
    the very message objects, so whether it shows an id is not fixed. The values of
    the next checkpoint show the same writes, applied.
    """
    tasks = []
    for task in snap.tasks:
        tasks.append({"name": task.name, "path": plain(task.path), "error": plain(task.error),
                      "interrupts": plain(task.interrupts), "has_result": task.result is not None,
                      "state": _snapshot(task.state) if hasattr(task.state, "tasks") else plain(task.state)})
    return {"values": plain(snap.values), "next": plain(snap.next), "metadata": plain(snap.metadata),
            "tasks": tasks, "interrupts": plain(snap.interrupts),
            "checkpoint_ns": (snap.config.get("configurable") or {}).get("checkpoint_ns")}


def _history(snaps: list[Any]) -> list[dict[str, Any]]:
    ids = [(s.config.get("configurable") or {}).get("checkpoint_id") for s in snaps]
    out = []
    for snap in snaps:
        parent = ((snap.parent_config or {}).get("configurable") or {}).get("checkpoint_id")
        out.append({**_snapshot(snap), "parent_index": ids.index(parent) if parent in ids else None})
    return out


# -- the check ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Outcome:
    """A run's normalised observations and events."""

    parts: dict[str, Any]
    masked: dict[str, Any]
    in_process: list[str]


def _events_view(events: Sequence[Event], canon: Canon, ordered: bool) -> dict[str, Any]:
    per_run: dict[str, list[Any]] = {}
    for ev in events:
        data = {k: v for k, v in ev.data.items() if k not in ("run_name", "inputs")}
        per_run.setdefault(canon.path(ev.run_id), []).append((ev.kind, canon.apply(data)))
    view: dict[str, Any] = {"events: runs and their parents": sorted(per_run),
                            "events: each run's own events": per_run}
    if ordered:
        view["events: global order"] = [(ev.kind, canon.path(ev.run_id)) for ev in events]
    return view


def _diff(a: Any, b: Any) -> str:
    left = pprint.pformat(a, width=110, sort_dicts=True).splitlines()
    right = pprint.pformat(b, width=110, sort_dicts=True).splitlines()
    lines = list(difflib.unified_diff(left, right, "without rt.callback()", "compared run", lineterm="", n=2))
    if len(lines) > _MAX_DIFF_LINES:
        lines = lines[:_MAX_DIFF_LINES] + [f"... ({len(lines) - _MAX_DIFF_LINES} more diff lines)"]
    return "\n".join(lines)


def _differing(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    missing = object()
    names = list(dict.fromkeys([*expected, *actual]))
    return [n for n in names if expected.get(n, missing) != actual.get(n, missing)]


def _compare(expected: Outcome, actual: Outcome, header: str) -> None:
    differing = _differing(expected.parts, actual.parts)
    if not differing:
        return
    total = len(set(expected.parts) | set(actual.parts))
    chunks = [f"{header}: {len(differing)} of {total} observation(s) differ: {differing}"]
    still = _differing(expected.masked, actual.masked)
    if still != differing:
        # Say whether all that moved is what someone else drew from uuid.uuid4 and random.
        chunks.append("with ids from uuid.uuid4 masked and the draws from uuid.uuid4 and random set aside, "
                      + (f"{len(still)} still differ: {still}" if still else "nothing else differs"))
    shown = still or differing
    source_of = {n: (expected.masked, actual.masked) if still else (expected.parts, actual.parts) for n in shown}
    for name in shown[:4]:
        left, right = source_of[name]
        chunks.append(f"--- {name} ---\n" + _diff(left.get(name, "<not observed>"),
                                                  right.get(name, "<not observed>")))
    raise AssertionError("\n".join(chunks))


class Fidelity:
    """Runs scenarios without and with ``rt.callback()`` on one Runtime and compares them.

    Args:
        rt: The Runtime (threads or processes mode).
        monkeypatch: The test's monkeypatch (patches ``uuid.uuid4`` per run).
        name: The scenario's name (prefix of its thread ids).
        base: A directory of the test's own; each run's work directory is ``base/work``.
    """

    def __init__(self, rt: Runtime, monkeypatch: pytest.MonkeyPatch, name: str, base: Path) -> None:
        self.rt = rt
        self.monkeypatch = monkeypatch
        self.name = name
        self.base = base
        self.mode = "processes" if rt.config["processes"] else "threads"
        self.in_process: list[str] = []

    def check(self, scenario: Scenario, *, concurrent: bool = False, uuid4_order: bool = True,
              scrub: Sequence[str] = ()) -> None:
        """Assert that ``scenario`` is deterministic and that ``rt.callback()`` changes nothing.

        Args:
            scenario: The scenario.
            concurrent: LangGraph runs some of its tasks concurrently, so the global
                event order (and sibling start order) is not fixed; runs are then
                matched by their inputs and only each run's own events are ordered.
            uuid4_order: LangGraph draws ids from ``uuid.uuid4`` in a fixed order (one
                graph at a time). False for concurrent graphs (``batch``), whose ids
                are then compared masked; how many ids were drawn is still compared.
            scrub: Regular expressions for parts of strings no run fixes (elapsed times
                in timeout messages); their matches become ``<*>`` everywhere.

        Raises:
            AssertionError: ``HARNESS ...`` when two runs without the callback differ;
                otherwise the observations the callback changed, with a diff.
        """
        def run(served: bool) -> Outcome:
            return self._run(scenario, served=served, concurrent=concurrent, uuid4_order=uuid4_order, scrub=scrub)

        first = run(False)
        second = run(False)
        # FIDELITY_SELF_CHECK=1: the third run is without the callback too, so the whole
        # suite must pass; it checks the harness (every scenario is deterministic).
        serve = os.environ.get("FIDELITY_SELF_CHECK") != "1"
        _compare(first, second, f"HARNESS [{self.mode}] {self.name} is not deterministic without nalar "
                                "(two runs without rt.callback() differ)")
        served = run(serve)
        self.in_process = served.in_process
        self._dump({"without": first, "again without": second, "with": served})
        _compare(first, served, f"[{self.mode}] {self.name}: rt.callback() changed what the app observes")

    def _dump(self, outcomes: dict[str, Outcome]) -> None:
        """Write the normalised outcomes to ``$FIDELITY_DUMP/<mode>/<test>.txt``, when that is set."""
        target = os.environ.get("FIDELITY_DUMP")
        if not target:
            return
        path = Path(target) / self.mode / f"{self.name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = [f"== {label} ==\n{pprint.pformat(o.parts, width=110)}" for label, o in outcomes.items()]
        path.write_text("\n".join(text), encoding="utf-8")

    def _run(self, scenario: Scenario, *, served: bool, concurrent: bool, uuid4_order: bool,
             scrub: Sequence[str]) -> Outcome:
        draws = CountingUUID4()
        self.monkeypatch.setattr(uuid, "uuid4", draws)
        for module in _uuid4_importers():
            self.monkeypatch.setattr(module, "uuid4", draws)
        random.seed(SEED)
        workdir = self.base / "work"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        run = Run(self.rt, served, self.name, workdir)
        with contextlib.ExitStack() as stack:
            caught: list[warnings.WarningMessage] = []
            if served:
                caught = stack.enter_context(warnings.catch_warnings(record=True))
                warnings.simplefilter("always", NalarWarning)
            try:
                result = scenario(run)
                if inspect.isawaitable(result):
                    asyncio.run(_awaited(result))
            except Exception as exc:
                if not served:
                    raise
                info = describe_error(exc)
                raise AssertionError(
                    f"[{self.mode}] {self.name}: the run with rt.callback() raised where the run without "
                    f"it did not: {info['chain'][0]['type']}: {info['chain'][0]['message']}") from exc
            run.in_process = [str(w.message) for w in caught if issubclass(w.category, NalarWarning)]
        drawn = draws.count
        state = random.getstate()
        views = []
        for masked in (False, True):
            canon = Canon(run.recorder.events, concurrent=concurrent, mask_uuid4=masked or not uuid4_order,
                          scrub=scrub)
            parts = {name: canon.apply(value) for name, value in run.parts.items()}
            parts.update(_events_view(run.recorder.events, canon, ordered=not concurrent))
            if not masked:
                parts["uuid.uuid4 calls in the caller's process"] = drawn
                parts["random: state of the global generator after the run"] = _digest(state)
            views.append(parts)
        return Outcome(views[0], views[1], run.in_process)


_ORIGINAL_UUID4 = uuid.uuid4


def _uuid4_importers() -> list[Any]:
    """LangChain and LangGraph modules that bound ``uuid4`` with ``from uuid import uuid4``.

    An app that patches ``uuid.uuid4`` for deterministic ids patches these too
    (LangGraph's message stream stamps ids through its own binding).
    """
    found = []
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("langgraph", "langchain")):
            continue
        bound = getattr(module, "uuid4", None)
        if bound is _ORIGINAL_UUID4 or isinstance(bound, CountingUUID4):
            found.append(module)
    return found


async def _awaited(result: Awaitable[None]) -> None:
    await result
