"""Callbacks as the app uses them: custom events, tags and metadata, its own handlers, run names and ids."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langgraph.graph import START, MessagesState, StateGraph

from ._harness import Fidelity, Run, plain
from ._kit import TurnChat, aannounce, add, announce, ask, react


def test_dispatch_custom_event_from_a_sync_tool(fid: Fidelity) -> None:
    """dispatch_custom_event() inside a sync tool: the app's handlers get on_custom_event, in order."""
    def scenario(run: Run) -> None:
        app = react(TurnChat(script=[{"name": "announce", "args": {"text": "hello"}}, "ok"]), [announce])
        run.observe("output", app.invoke(ask("announce"), run.config()))

    fid.check(scenario)


def test_adispatch_custom_event_from_an_async_tool(fid: Fidelity) -> None:
    """adispatch_custom_event() inside an async tool under ainvoke."""
    async def scenario(run: Run) -> None:
        app = react(TurnChat(script=[{"name": "aannounce", "args": {"text": "hello"}}, "ok"]), [aannounce])
        run.observe("output", await app.ainvoke(ask("announce"), run.config()))

    fid.check(scenario)


def test_custom_events_in_astream_events(fid: Fidelity) -> None:
    """astream_events(version="v2") yields on_custom_event for a tool's custom events."""
    async def scenario(run: Run) -> None:
        app = react(TurnChat(script=[{"name": "aannounce", "args": {"text": "hey"}}, "ok"]), [aannounce])
        events = [e async for e in app.astream_events(ask("announce"), run.config(), version="v2")]
        run.observe("custom", [(e["name"], e["data"], e["run_id"], e["parent_ids"]) for e in events
                               if e["event"] == "on_custom_event"])
        run.observe("names", [(e["event"], e["name"]) for e in events])

    fid.check(scenario)


def test_tags_and_metadata_propagate(fid: Fidelity) -> None:
    """Config tags/metadata, a model's with_config tags and a tool's own tags reach every event."""
    def scenario(run: Run) -> None:
        tagged_add = add.model_copy(update={"tags": ["tool-tag"], "metadata": {"tool_meta": 1}})
        model = TurnChat(script=[{"name": "add", "args": {"a": 1, "b": 1}}, "2"])
        app = react(model.with_config(tags=["model-tag"], metadata={"model_meta": "m"}), [tagged_add])
        cfg = run.config(tags=["run-tag"], metadata={"user": "u1", "nested": {"k": [1, 2]}})
        run.observe("output", app.invoke(ask("1+1"), cfg))

    fid.check(scenario)


def test_run_name_and_run_id_from_the_config(fid: Fidelity) -> None:
    """config run_name and a fixed run_id name the root run; the recorder and astream_events agree."""
    def scenario(run: Run) -> None:
        app = react(TurnChat(script=[{"name": "add", "args": {"a": 1, "b": 2}}, "3"]), [add])
        fixed = UUID(int=42, version=4)
        run.observe("output", app.invoke(ask("1+2"), run.config(run_name="my-agent", run_id=fixed)))
        run.observe("root run", [(e.kind, e.data.get("run_name")) for e in run.recorder.events
                                 if e.run_id == str(fixed)])

    fid.check(scenario)


class _Collect(BaseCallbackHandler):
    """The app's own sync handler: keeps (event, name or token) pairs."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def _add(self, item: tuple[str, Any]) -> None:
        with self.lock:
            self.seen.append(item)

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, **kwargs: Any) -> None:
        self._add(("tool_start", serialized.get("name")))

    def on_tool_end(self, output: Any, **kwargs: Any) -> None:
        self._add(("tool_end", plain(output)))

    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, **kwargs: Any) -> None:
        self._add(("chat_model_start", len(messages[0])))

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self._add(("token", token))

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self._add(("llm_end", response.generations[0][0].text))


def test_app_handler_in_the_config_without_run_inline(fid: Fidelity) -> None:
    """An ordinary handler of the app (not run inline) in config["callbacks"], next to the recorder."""
    def scenario(run: Run) -> None:
        mine = _Collect()
        app = react(TurnChat(script=[{"name": "add", "args": {"a": 1, "b": 2}}, "3"]), [add])
        run.observe("output", app.invoke(ask("1+2"), run.config(callbacks=[mine])))
        run.observe("handler saw", mine.seen)

    fid.check(scenario)


def test_async_handler_of_the_app(fid: Fidelity) -> None:
    """An AsyncCallbackHandler of the app under ainvoke, with token streaming (messages mode)."""
    class Tokens(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.seen: list[Any] = []

        async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            self.seen.append(("token", token))

        async def on_tool_end(self, output: Any, **kwargs: Any) -> None:
            self.seen.append(("tool_end", str(getattr(output, "content", output))))

    async def scenario(run: Run) -> None:
        mine = Tokens()
        app = react(TurnChat(script=[{"name": "add", "args": {"a": 1, "b": 2}}, "three it is"]), [add])
        chunks = [c async for c in app.astream(ask("1+2"), run.config(callbacks=[mine]), stream_mode="messages")]
        run.observe("chunks", chunks)
        run.observe("handler saw", mine.seen)

    fid.check(scenario)


def test_handler_given_to_the_model_at_construction(fid: Fidelity) -> None:
    """A handler passed as the model's own callbacks=[...]: it sees the model's start, tokens and end."""
    def scenario(run: Run) -> None:
        mine = _Collect()
        model = TurnChat(script=["constructed with callbacks"], callbacks=[mine])

        def agent(state: MessagesState) -> dict[str, Any]:
            return {"messages": [model.invoke(state["messages"])]}

        g = StateGraph(MessagesState)
        g.add_node("agent", agent)
        g.add_edge(START, "agent")
        run.observe("output", g.compile().invoke(ask("hi"), run.config()))
        run.observe("handler saw", mine.seen)

    fid.check(scenario)


def test_handler_passed_to_a_tool_invoke_inside_a_node(fid: Fidelity) -> None:
    """A node calls tool.invoke(args, config={"callbacks": [handler]}) with its own handler."""
    def scenario(run: Run) -> None:
        mine = _Collect()

        def work(state: MessagesState) -> dict[str, Any]:
            result = add.invoke({"a": 2, "b": 5}, config={"callbacks": [mine], "tags": ["inner"]})
            return {"messages": [("ai", f"got {result}")]}

        g = StateGraph(MessagesState)
        g.add_node("work", work)
        g.add_edge(START, "work")
        run.observe("output", g.compile().invoke(ask("add"), run.config()))
        run.observe("handler saw", mine.seen)

    fid.check(scenario)
