"""The run tree and the data flow between adapter calls, per Runtime.

The callback handler records every LangChain run it sees (:class:`RunRecord`:
LangGraph node and step, thread id as session, parent run). The adapters record
every call they make, and the recorder derives each new call's dependencies
from them:

* a tool call depends on the model call whose message asked for it
  (matched by tool-call id);
* a model call depends on the tool calls whose results it reads (the tool
  messages after the last AI message), else on the model call that wrote the
  last AI message it reads;
* otherwise a call depends on the calls of the latest earlier LangGraph step
  of its graph (a subgraph's first step looks at its parent graph's step).

Only calls that finished are used as dependencies: a failed tool call whose
error the graph handled must not fail the next model call.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from ..future import FINISHED, Future

__all__ = ["Recorder", "RunInfo", "RunRecord", "graph_ns"]


def graph_ns(task_ns: str | None) -> str:
    """The namespace of the graph a LangGraph task belongs to (``""`` for the root graph)."""
    if not task_ns:
        return ""
    return task_ns.rsplit("|", 1)[0] if "|" in task_ns else ""


@dataclass
class RunInfo:
    """What an adapter call learns about the LangChain run it serves."""

    run_id: UUID | None
    session: str | None
    priority: float | None
    deadline: float | None
    expected_s: float | None
    node: str | None
    step: int | None
    task_ns: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def graph(self) -> str:
        """The namespace of the run's graph."""
        return graph_ns(self.task_ns)


@dataclass
class RunRecord:
    """One LangChain run seen by the callback handler.

    Attributes:
        run_id: LangChain's run id.
        parent_run_id: The parent run, ``None`` for a root run.
        kind: ``chain``, ``tool``, ``chat_model``, ``llm`` or ``retriever``.
        name: The run's name (node, tool or model).
        session: Its thread id, when it has one.
        node: LangGraph node (``langgraph_node``).
        step: LangGraph step (``langgraph_step``).
        checkpoint_ns: LangGraph task namespace.
        started: Start time (``time.time()``).
        ended: End time, once ended.
        status: ``running``, ``finished`` or ``error``.
        call_id: The nalar call that served it, if any.
        tool_call_id: The tool-call id of a tool run.
    """

    run_id: UUID
    parent_run_id: UUID | None
    kind: str
    name: str
    session: str | None = None
    node: str | None = None
    step: int | None = None
    checkpoint_ns: str | None = None
    started: float = field(default_factory=time.time)
    ended: float | None = None
    status: str = "running"
    call_id: str | None = None
    tool_call_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data (run ids as strings)."""
        d = dict(self.__dict__)
        d["run_id"] = str(self.run_id)
        d["parent_run_id"] = str(self.parent_run_id) if self.parent_run_id else None
        return d


def _finished(futs: list[Future]) -> list[Future]:
    return [f for f in dict.fromkeys(futs) if f.status == FINISHED]


class Recorder:
    """The run tree and the call data flow of one Runtime (thread-safe, bounded).

    Args:
        cap: Records and data-flow entries kept; the oldest are forgotten first.
    """

    def __init__(self, cap: int = 20_000) -> None:
        self._lock = threading.Lock()
        self._cap = cap
        self._runs: OrderedDict[UUID, RunRecord] = OrderedDict()
        self._asked: OrderedDict[tuple[str, str], Future] = OrderedDict()  # tool call id -> model call
        self._tools: OrderedDict[tuple[str, str], Future] = OrderedDict()  # tool call id -> tool call
        self._wrote: OrderedDict[tuple[str, str], Future] = OrderedDict()  # message id -> model call
        self._steps: OrderedDict[tuple[str, str], dict[int, list[Future]]] = OrderedDict()
        self._task_step: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._seq: dict[str, int] = {}

    def _put(self, table: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self._cap:
            table.popitem(last=False)

    # -- run tree -------------------------------------------------------------
    def start(self, record: RunRecord) -> None:
        """Record a run's start; a run without a session inherits its parent's."""
        with self._lock:
            parent = self._runs.get(record.parent_run_id) if record.parent_run_id is not None else None
            if record.session is None and parent is not None:
                record.session = parent.session
            self._put(self._runs, record.run_id, record)
            if record.checkpoint_ns and record.step is not None and record.kind == "chain":
                self._put(self._task_step, record.checkpoint_ns, (graph_ns(record.checkpoint_ns), record.step))

    def end(self, run_id: UUID, status: str) -> None:
        """Record a run's end."""
        with self._lock:
            record = self._runs.get(run_id)
            if record is not None:
                record.ended = time.time()
                record.status = status

    def attach(self, run_id: UUID | None, call_id: str) -> None:
        """Note which call served a run."""
        with self._lock:
            record = self._runs.get(run_id) if run_id is not None else None
            if record is not None:
                record.call_id = call_id

    def root_session(self, run_id: UUID | None) -> str | None:
        """A session for a run without a thread id: its root run's."""
        with self._lock:
            seen = 0
            while run_id is not None and run_id in self._runs and seen < 1000:
                record = self._runs[run_id]
                if record.session:
                    return record.session
                if record.parent_run_id is None:
                    return f"run-{record.run_id}"
                run_id, seen = record.parent_run_id, seen + 1
        return None

    def runs(self, session: str | None = None) -> list[RunRecord]:
        """The recorded runs, oldest first (of one session if given)."""
        with self._lock:
            return [r for r in self._runs.values() if session is None or r.session == session]

    # -- data flow ------------------------------------------------------------
    def next_seq(self, scope: str) -> int:
        """A per-scope counter for deterministic idempotency keys."""
        with self._lock:
            n = self._seq.get(scope, -1) + 1
            self._seq[scope] = n
            if len(self._seq) > self._cap:
                self._seq.pop(next(iter(self._seq)))
            return n

    def note_call(self, info: RunInfo, session: str, fut: Future, tool_call_id: str | None = None) -> None:
        """Record a call made for ``info``'s run."""
        with self._lock:
            if tool_call_id:
                self._put(self._tools, (session, tool_call_id), fut)
            if info.step is not None:
                steps = self._steps.get((session, info.graph))
                if steps is None:
                    steps = {}
                    self._put(self._steps, (session, info.graph), steps)
                steps.setdefault(info.step, []).append(fut)
                if info.task_ns:
                    self._put(self._task_step, info.task_ns, (info.graph, info.step))

    def note_model_result(self, session: str, fut: Future, result: Any) -> None:
        """Record which messages and tool calls a finished model call wrote."""
        with self._lock:
            for gen in getattr(result, "generations", None) or []:
                message = getattr(gen, "message", None)
                if message is None:
                    continue
                if getattr(message, "id", None):
                    self._put(self._wrote, (session, message.id), fut)
                for tc in getattr(message, "tool_calls", None) or []:
                    if tc.get("id"):
                        self._put(self._asked, (session, tc["id"]), fut)

    def _step_deps(self, session: str, graph: str, step: int | None, depth: int = 0) -> list[Future]:
        if step is None or depth > 32:
            return []
        steps = self._steps.get((session, graph)) or {}
        earlier = [s for s in steps if s < step]
        if earlier:
            return _finished(steps[max(earlier)])
        if graph and graph in self._task_step:
            parent_graph, parent_step = self._task_step[graph]
            return self._step_deps(session, parent_graph, parent_step, depth + 1)
        return []

    def deps_for_tool(self, info: RunInfo, session: str, tool_call_id: str | None) -> list[Future]:
        """The calls a tool call depends on."""
        with self._lock:
            if tool_call_id and (session, tool_call_id) in self._asked:
                return _finished([self._asked[(session, tool_call_id)]])
            return self._step_deps(session, info.graph, info.step)

    def deps_for_model(self, info: RunInfo, session: str, messages: list[Any]) -> list[Future]:
        """The calls a model call depends on."""
        with self._lock:
            found: list[Future] = []
            for message in reversed(messages):
                kind = getattr(message, "type", None)
                if kind == "tool":
                    fut = self._tools.get((session, getattr(message, "tool_call_id", "")))
                    if fut is not None:
                        found.append(fut)
                    continue
                if kind == "ai" and not found and getattr(message, "id", None):
                    fut = self._wrote.get((session, message.id))
                    if fut is not None:
                        found.append(fut)
                break
            if found:
                return _finished(found)
            return self._step_deps(session, info.graph, info.step)
