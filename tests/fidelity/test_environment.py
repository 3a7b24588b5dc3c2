"""What a tool body sees of the app's process: context variables, environment, logging, warnings, its loop.

Without nalar a tool body runs in the app's process, in the app's context; an
unmodified app may rely on that (request-scoped context variables, settings it
put in ``os.environ``, its logging handlers, futures of its event loop, task
cancellation).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import warnings
from pathlib import Path
from typing import Any

from langchain_core.tools import tool
from langgraph.config import get_config, get_store
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.store.memory import InMemoryStore

from ._harness import Fidelity, Run
from ._kit import REQUEST_USER, TenantChat, TurnChat, ask, react

class AppWarning(UserWarning):
    """A warning category of the app."""


@tool
def current_user(greeting: str) -> str:
    """Greet the user of the current request (a context variable the app set)."""
    return f"{greeting}, {REQUEST_USER.get()}"


@tool
def read_setting(name: str) -> str:
    """Read a setting from the environment."""
    return f"{name}={os.environ.get(name, '<unset>')}"


@tool
def noisy(text: str) -> str:
    """Log a warning record and issue an AppWarning."""
    logging.getLogger("fidelity.app.tools").warning("noisy tool saw %s", text)
    warnings.warn(f"noisy tool warns about {text}", AppWarning, stacklevel=1)
    return text


@tool
def where_am_i() -> str:
    """Report the graph's store and config as seen from inside the tool body (get_store, get_config)."""
    store = get_store()
    thread = (get_config().get("configurable") or {}).get("thread_id")
    return f"thread={thread} store={type(store).__name__} facts={len(store.search(('facts',)))}"


def test_tool_reads_a_context_variable_of_the_app(fid: Fidelity) -> None:
    """A tool reads a ContextVar the app set around invoke (request-scoped context)."""
    def scenario(run: Run) -> None:
        token = REQUEST_USER.set("ada")
        try:
            app = react(TurnChat(script=[{"name": "current_user", "args": {"greeting": "hi"}}, "greeted"]),
                        [current_user])
            run.observe("output", app.invoke(ask("greet"), run.config()))
        finally:
            REQUEST_USER.reset(token)

    fid.check(scenario)


def test_tool_reads_an_environment_variable_set_by_the_app(fid: Fidelity, monkeypatch: Any) -> None:
    """A tool reads os.environ, which the app changed at run time."""
    def scenario(run: Run) -> None:
        monkeypatch.setenv("FIDELITY_REGION", "eu-north")
        app = react(TurnChat(script=[{"name": "read_setting", "args": {"name": "FIDELITY_REGION"}}, "ok"]),
                    [read_setting])
        run.observe("output", app.invoke(ask("region?"), run.config()))

    fid.check(scenario)


def test_tool_logs_and_warns_to_the_app(fid: Fidelity) -> None:
    """A tool's log records reach the app's logging handler; its warnings reach catch_warnings."""
    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.records: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(f"{record.name}:{record.levelname}:{record.getMessage()}")

    def scenario(run: Run) -> None:
        keep = Keep()
        logger = logging.getLogger("fidelity.app")
        logger.addHandler(keep)
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always", AppWarning)
                app = react(TurnChat(script=[{"name": "noisy", "args": {"text": "x"}}, "ok"]), [noisy])
                run.observe("output", app.invoke(ask("be noisy"), run.config()))
        finally:
            logger.removeHandler(keep)
        run.observe("log records", keep.records)
        run.observe("warnings", [f"{w.category.__name__}: {w.message}" for w in seen
                                 if issubclass(w.category, AppWarning)])

    fid.check(scenario)


def test_get_store_and_get_config_inside_a_tool(fid: Fidelity) -> None:
    """get_store() and get_config() called in a tool body (not injected arguments)."""
    def scenario(run: Run) -> None:
        store = InMemoryStore()
        store.put(("facts",), "sky", {"colour": "blue"})
        app = react(TurnChat(script=[{"name": "where_am_i", "args": {}}, "located"]), [where_am_i], store=store)
        run.observe("output", app.invoke(ask("where"), run.config()))

    fid.check(scenario)


def test_async_tool_awaits_a_future_of_the_apps_loop(fid: Fidelity) -> None:
    """An async tool awaits an asyncio.Future that the app resolves on its own event loop."""
    async def scenario(run: Run) -> None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()

        @tool
        async def wait_for_answer(question: str) -> str:
            """Wait for the app to answer."""
            return f"{question} -> {await answer}"

        app = react(TurnChat(script=[{"name": "wait_for_answer", "args": {"question": "ready?"}}, "done"]),
                    [wait_for_answer])
        task = asyncio.ensure_future(app.ainvoke(ask("wait"), run.config()))
        await asyncio.sleep(0.05)
        answer.set_result("yes")
        with run.raises("error"):
            run.observe("output", await asyncio.wait_for(task, 10))

    fid.check(scenario)


def test_cancelling_ainvoke_cancels_the_running_tool(fid: Fidelity) -> None:
    """asyncio.wait_for cancels ainvoke while an async tool sleeps: the tool never writes its file."""
    @tool
    async def slow_write(path: str) -> str:
        """Sleep, then write a file."""
        await asyncio.sleep(0.3)
        Path(path).write_text("written", encoding="utf-8")
        return "wrote"

    async def scenario(run: Run) -> None:
        target = run.path("late.txt")
        app = react(TurnChat(script=[{"name": "slow_write", "args": {"path": str(target)}}, "done"]), [slow_write])
        with run.raises("cancelled"):
            await asyncio.wait_for(app.ainvoke(ask("write"), run.config()), 0.1)
        await asyncio.sleep(0.6)
        run.observe("file written after the cancellation", target.exists())

    fid.check(scenario)


def test_node_reads_a_context_variable_around_a_model_call(fid: Fidelity) -> None:
    """A model whose answer depends on a ContextVar of the app (a tenant-scoped prompt prefix)."""
    def scenario(run: Run) -> None:
        model = TenantChat(script=["answer"])

        def work(state: MessagesState) -> dict[str, Any]:
            return {"messages": [model.invoke(state["messages"])]}

        g = StateGraph(MessagesState)
        g.add_node("work", work)
        g.add_edge(START, "work")
        token = REQUEST_USER.set("tenant-7")
        try:
            run.observe("output", g.compile().invoke(ask("hi"), run.config()))
        finally:
            REQUEST_USER.reset(token)

    fid.check(scenario)


def test_tool_reads_a_thread_local_the_node_set(fid: Fidelity) -> None:
    """A node sets a threading.local (a session per thread, as ORMs keep one) and calls a tool that reads it."""
    def scenario(run: Run) -> None:
        session = threading.local()

        @tool
        def current_session(query: str) -> str:
            """Run a query on the session of the current thread."""
            return f"{query} on {getattr(session, 'name', '<no session>')}"

        def work(state: MessagesState) -> dict[str, Any]:
            session.name = "session-1"
            try:
                return {"messages": [("ai", current_session.invoke({"query": "select 1"}))]}
            finally:
                del session.name

        g = StateGraph(MessagesState)
        g.add_node("work", work)
        g.add_edge(START, "work")
        run.observe("output", g.compile().invoke(ask("query"), run.config()))

    fid.check(scenario)


def test_tool_uses_a_sqlite_connection_of_the_node(fid: Fidelity) -> None:
    """A node opens a sqlite3 connection (usable from its own thread only) and a tool queries it."""
    def scenario(run: Run) -> None:
        holder: dict[str, sqlite3.Connection] = {}

        @tool
        def count_rows(table: str) -> str:
            """Count the rows of a table on the node's connection."""
            (n,) = holder["conn"].execute(f"select count(*) from {table}").fetchone()
            return f"{table}: {n} rows"

        def work(state: MessagesState) -> dict[str, Any]:
            conn = sqlite3.connect(":memory:")
            try:
                conn.execute("create table t (x)")
                conn.executemany("insert into t values (?)", [(1,), (2,)])
                holder["conn"] = conn
                return {"messages": [("ai", count_rows.invoke({"table": "t"}))]}
            finally:
                holder.pop("conn", None)
                conn.close()

        g = StateGraph(MessagesState)
        g.add_node("work", work)
        g.add_edge(START, "work")
        with run.raises("error"):
            run.observe("output", g.compile().invoke(ask("count"), run.config()))

    fid.check(scenario)
