"""The run tree and the data flow between adapter calls.

The callback handler records every LangChain run it sees (:class:`RunRecord`:
LangGraph node and step, thread id as session, parent run). The adapters
record every call that finished, by call id, and the recorder derives each new
call's dependencies from them (edges of the session's call graph):

* a tool call depends on the model call whose message asked for it
  (matched by tool-call id);
* a model call depends on the tool calls whose results it reads (the tool
  messages after the last AI message), else on the model call that wrote the
  last AI message it reads;
* otherwise a call depends on the calls of the latest earlier LangGraph step
  of its graph (a subgraph's first step looks at its parent graph's step).

Only calls that finished are recorded: a failed tool call whose error the
graph handled does not become an input of the next model call. Nothing here
holds a future, a value or an object of the run: ids and names only. The data
flow of a session is dropped when its root run ends; the run records are kept
for the most recent runs only.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

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


class _Flow:
    """The data flow of one session: which finished call wrote what."""

    __slots__ = ("asked", "seq", "steps", "task_step", "tools", "wrote")

    def __init__(self) -> None:
        self.asked: dict[str, str] = {}  # tool call id -> the model call that asked for it
        self.tools: dict[str, str] = {}  # tool call id -> the tool call that answered
        self.wrote: dict[str, str] = {}  # message id -> the model call that wrote it
        self.steps: dict[str, dict[int, list[str]]] = {}  # graph ns -> step -> call ids
        self.task_step: dict[str, tuple[str, int]] = {}  # task ns -> (graph ns, step)
        self.seq: dict[str, int] = {}  # key scope -> calls made


class Recorder:
    """The run tree and the call data flow of one Runtime (thread-safe, bounded).

    Args:
        cap: Run records kept (the oldest are forgotten first), and sessions
            whose data flow is kept while their root run has not ended.
    """

    def __init__(self, cap: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._cap = cap
        self._runs: OrderedDict[UUID, RunRecord] = OrderedDict()
        self._flows: OrderedDict[str, _Flow] = OrderedDict()

    def _flow(self, session: str) -> _Flow:
        flow = self._flows.get(session)
        if flow is None:
            flow = self._flows[session] = _Flow()
            while len(self._flows) > self._cap:
                self._flows.popitem(last=False)
        return flow

    # -- run tree -------------------------------------------------------------
    def start(self, record: RunRecord) -> None:
        """Record a run's start; a run without a session inherits its parent's."""
        with self._lock:
            parent = self._runs.get(record.parent_run_id) if record.parent_run_id is not None else None
            if record.session is None and parent is not None:
                record.session = parent.session
            self._runs[record.run_id] = record
            while len(self._runs) > self._cap:
                self._runs.popitem(last=False)
            if record.session and record.checkpoint_ns and record.step is not None and record.kind == "chain":
                self._flow(record.session).task_step[record.checkpoint_ns] = (graph_ns(record.checkpoint_ns), record.step)

    def end(self, run_id: UUID, status: str) -> None:
        """Record a run's end; a root run's end drops its session's data flow."""
        with self._lock:
            record = self._runs.get(run_id)
            if record is None:
                return
            record.ended = time.time()
            record.status = status
            if record.parent_run_id is None and record.session:
                self._flows.pop(record.session, None)

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

    def forget(self, session: str) -> None:
        """Drop a session's data flow and run records."""
        with self._lock:
            self._flows.pop(session, None)
            for run_id in [k for k, r in self._runs.items() if r.session == session]:
                del self._runs[run_id]

    def sessions(self) -> int:
        """Sessions whose data flow is kept now."""
        with self._lock:
            return len(self._flows)

    # -- data flow ------------------------------------------------------------
    def next_seq(self, session: str, scope: str) -> int:
        """A per-scope counter for deterministic idempotency keys."""
        with self._lock:
            flow = self._flow(session)
            n = flow.seq.get(scope, -1) + 1
            flow.seq[scope] = n
            return n

    def note_call(self, info: RunInfo, session: str, call_id: str, tool_call_id: str | None = None) -> None:
        """Record a finished call made for ``info``'s run."""
        with self._lock:
            flow = self._flow(session)
            if tool_call_id:
                flow.tools[tool_call_id] = call_id
            if info.step is not None:
                flow.steps.setdefault(info.graph, {}).setdefault(info.step, []).append(call_id)
                if info.task_ns:
                    flow.task_step[info.task_ns] = (info.graph, info.step)

    def note_model_result(self, session: str, call_id: str, result: Any) -> None:
        """Record which messages and tool calls a finished model call wrote."""
        with self._lock:
            flow = self._flow(session)
            for gen in getattr(result, "generations", None) or []:
                message = getattr(gen, "message", None)
                if message is None:
                    continue
                if getattr(message, "id", None):
                    flow.wrote[message.id] = call_id
                for tc in getattr(message, "tool_calls", None) or []:
                    if tc.get("id"):
                        flow.asked[tc["id"]] = call_id

    def _step_deps(self, flow: _Flow, graph: str, step: int | None, depth: int = 0) -> list[str]:
        if step is None or depth > 32:
            return []
        steps = flow.steps.get(graph) or {}
        earlier = [s for s in steps if s < step]
        if earlier:
            return list(dict.fromkeys(steps[max(earlier)]))
        if graph and graph in flow.task_step:
            parent_graph, parent_step = flow.task_step[graph]
            return self._step_deps(flow, parent_graph, parent_step, depth + 1)
        return []

    def deps_for_tool(self, info: RunInfo, session: str, tool_call_id: str | None) -> list[str]:
        """The calls a tool call depends on."""
        with self._lock:
            flow = self._flows.get(session)
            if flow is None:
                return []
            if tool_call_id and tool_call_id in flow.asked:
                return [flow.asked[tool_call_id]]
            return self._step_deps(flow, info.graph, info.step)

    def deps_for_model(self, info: RunInfo, session: str, messages: list[Any]) -> list[str]:
        """The calls a model call depends on."""
        with self._lock:
            flow = self._flows.get(session)
            if flow is None:
                return []
            found: list[str] = []
            for message in reversed(messages):
                kind = getattr(message, "type", None)
                if kind == "tool":
                    call_id = flow.tools.get(getattr(message, "tool_call_id", ""))
                    if call_id is not None:
                        found.append(call_id)
                    continue
                if kind == "ai" and not found and getattr(message, "id", None):
                    call_id = flow.wrote.get(message.id)
                    if call_id is not None:
                        found.append(call_id)
                break
            if found:
                return list(dict.fromkeys(found))
            return self._step_deps(flow, info.graph, info.step)
