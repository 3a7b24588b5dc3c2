"""The LangChain callback handler: the switch and the sensor of a run.

Adding ``rt.callback()`` to a run's ``config["callbacks"]`` is all a user does.
The handler marks the run as served by nalar (the wrapped execution paths find
it among the run's handlers, including in nested runs, which inherit it), and it
records the run tree: every run with its LangGraph node and step, its thread id
as session, and its parent run. The calls themselves are made by the seams
(:mod:`._seams`); the app's own callbacks still see every event, in the caller.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from .activation import Switch, SwitchCarrier
from .recorder import Recorder, RunRecord

__all__ = ["NalarCallbackHandler"]


def _name(serialized: dict[str, Any] | None, kwargs: dict[str, Any], default: str) -> str:
    name = kwargs.get("name")
    if name:
        return str(name)
    if serialized:
        if serialized.get("name"):
            return str(serialized["name"])
        ident = serialized.get("id")
        if isinstance(ident, list) and ident:
            return str(ident[-1])
    return default


class NalarCallbackHandler(BaseCallbackHandler, SwitchCarrier):
    """Serve a LangChain run's tool and chat-model calls as nalar futures.

    Made by :meth:`nalar_plugin.Runtime.callback`. Every tool call and chat-model
    call of a run that carries this handler (nested ones included) runs as a
    call on the Dask cluster, scheduled by the controllers; runs without it are
    untouched.

    Args:
        switch: The Runtime and the run-wide options.
        recorder: Where the run tree is kept.
        plugins: The Runtime's plugin manager (``nalar_adapter_run`` observers).
    """

    run_inline = True  # record a run before its body can make a call
    raise_error = False

    def __init__(self, switch: Switch, recorder: Recorder, plugins: Any) -> None:
        self.nalar_switch = switch
        self.recorder = recorder
        self._plugins = plugins

    # -- recording -----------------------------------------------------------------
    def _start(self, kind: str, name: str, run_id: UUID, parent_run_id: UUID | None,
               metadata: dict[str, Any] | None, tool_call_id: str | None = None) -> None:
        md = metadata or {}
        switch = self.nalar_switch
        assert switch is not None
        session = md.get("nalar_session") or switch.session or md.get("thread_id")
        step = md.get("langgraph_step")
        record = RunRecord(
            run_id=run_id, parent_run_id=parent_run_id, kind=kind, name=name,
            session=str(session) if session else None, node=md.get("langgraph_node"),
            step=step if isinstance(step, int) else None,
            checkpoint_ns=md.get("langgraph_checkpoint_ns"), tool_call_id=tool_call_id,
        )
        self.recorder.start(record)
        if self._plugins.implemented("nalar_adapter_run"):
            self._plugins.notify("nalar_adapter_run", run=record)

    def on_chain_start(self, serialized: dict[str, Any], inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
                       **kwargs: Any) -> None:
        """Record a chain run (a graph, a LangGraph node, a runnable)."""
        self._start("chain", _name(serialized, kwargs, "chain"), run_id, parent_run_id, metadata)

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
                      **kwargs: Any) -> None:
        """Record a tool run."""
        self._start("tool", _name(serialized, kwargs, "tool"), run_id, parent_run_id, metadata,
                    tool_call_id=kwargs.get("tool_call_id"))

    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, *, run_id: UUID,
                            parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
                            **kwargs: Any) -> None:
        """Record a chat-model run."""
        self._start("chat_model", _name(serialized, kwargs, "chat_model"), run_id, parent_run_id, metadata)

    def on_llm_start(self, serialized: dict[str, Any], prompts: Any, *, run_id: UUID,
                     parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
                     **kwargs: Any) -> None:
        """Record an LLM run."""
        self._start("llm", _name(serialized, kwargs, "llm"), run_id, parent_run_id, metadata)

    def on_retriever_start(self, serialized: dict[str, Any], query: str, *, run_id: UUID,
                           parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
                           **kwargs: Any) -> None:
        """Record a retriever run."""
        self._start("retriever", _name(serialized, kwargs, "retriever"), run_id, parent_run_id, metadata)

    def _end(self, run_id: UUID, status: str) -> None:
        self.recorder.end(run_id, status)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a chain run's end."""
        self._end(run_id, "finished")

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a chain run's failure (an interrupt also ends a run this way)."""
        self._end(run_id, "error")

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a tool run's end."""
        self._end(run_id, "finished")

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a tool run's failure."""
        self._end(run_id, "error")

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a model run's end."""
        self._end(run_id, "finished")

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a model run's failure."""
        self._end(run_id, "error")

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a retriever run's end."""
        self._end(run_id, "finished")

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a retriever run's failure."""
        self._end(run_id, "error")

    # -- views -------------------------------------------------------------------------
    def runs(self, session: str | None = None) -> list[RunRecord]:
        """The runs recorded so far (of one session, e.g. a thread id), oldest first."""
        return self.recorder.runs(session)

    def tree(self, session: str | None = None) -> list[dict[str, Any]]:
        """The run tree: root runs with their ``children``, as plain data."""
        records = [r.to_dict() for r in self.runs(session)]
        by_id = {r["run_id"]: {**r, "children": []} for r in records}
        roots: list[dict[str, Any]] = []
        for node in by_id.values():
            parent = by_id.get(node["parent_run_id"] or "")
            (parent["children"] if parent is not None else roots).append(node)
        return roots

    def __repr__(self) -> str:
        switch = self.nalar_switch
        service = switch.service if switch is not None else None
        return f"<nalar callback for runtime {getattr(service, 'token', None)}>"
