"""Checkpoints with ``InMemorySaver``: history, time travel, ``update_state``, durability.

``langgraph-checkpoint-sqlite`` is not installed in this environment, so the
suite uses ``InMemorySaver`` only.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver

from ._harness import Fidelity, Run
from ._kit import TurnChat, add, ask, lines, log_call, multiply, react


def _logged_app(run: Run, **kwargs: Any) -> Any:
    """A ReAct app whose tool appends to a log file, so re-executions show."""
    log = str(run.path("log"))
    script = [{"name": "log_call", "args": {"key": "first", "log": log}},
              {"name": "log_call", "args": {"key": "second", "log": log}}, "logged twice"]
    return react(TurnChat(script=script), [log_call], checkpointer=InMemorySaver(), **kwargs)


def test_history_of_a_run(fid: Fidelity) -> None:
    """get_state and get_state_history after a ReAct run: values, next, metadata, parents."""
    def scenario(run: Run) -> None:
        app = _logged_app(run)
        cfg = run.config()
        run.observe("output", app.invoke(ask("log"), cfg))
        run.observe_state("thread", app, cfg)
        run.observe("log", lines(run.path("log")))

    fid.check(scenario)


def test_time_travel_replays_from_an_earlier_checkpoint(fid: Fidelity) -> None:
    """invoke(None) from the checkpoint before the first tool call re-executes the rest of the run."""
    def scenario(run: Run) -> None:
        app = _logged_app(run)
        cfg = run.config()
        app.invoke(ask("log"), cfg)
        history = list(app.get_state_history(cfg))
        before_tools = [s for s in history if s.next == ("tools",)][-1]
        run.observe("replayed", app.invoke(None, before_tools.config))
        run.observe_state("thread", app, cfg)
        run.observe("log after replay", lines(run.path("log")))

    fid.check(scenario)


def test_fork_with_update_state(fid: Fidelity) -> None:
    """update_state on an earlier checkpoint (as the agent, with other tool arguments), then continue."""
    def scenario(run: Run) -> None:
        app = _logged_app(run)
        cfg = run.config()
        app.invoke(ask("log"), cfg)
        history = list(app.get_state_history(cfg))
        before_tools = [s for s in history if s.next == ("tools",)][-1]
        call = before_tools.values["messages"][-1].tool_calls[0]
        edited = AIMessage("", id=before_tools.values["messages"][-1].id,
                           tool_calls=[{**call, "args": {**call["args"], "key": "forked"}}])
        fork = app.update_state(before_tools.config, {"messages": [edited]}, as_node="agent")
        run.observe("forked", app.invoke(None, fork))
        run.observe_state("thread", app, cfg)
        run.observe("log", lines(run.path("log")))

    fid.check(scenario)


def test_update_state_at_a_breakpoint(fid: Fidelity) -> None:
    """interrupt_before=["tools"]; update_state replaces the tool call; the run continues with it."""
    def scenario(run: Run) -> None:
        script = [{"name": "add", "args": {"a": 1, "b": 1}}, "done"]
        app = react(TurnChat(script=script), [add, multiply], checkpointer=InMemorySaver(),
                    interrupt_before=["tools"])
        cfg = run.config()
        paused = app.invoke(ask("1+1"), cfg)
        last = paused["messages"][-1]
        replaced = AIMessage("", id=last.id, tool_calls=[{"name": "multiply", "args": {"a": 6, "b": 7},
                                                          "id": last.tool_calls[0]["id"], "type": "tool_call"}])
        app.update_state(cfg, {"messages": [replaced]})
        run.observe("continued", app.invoke(None, cfg))
        run.observe_state("thread", app, cfg)

    fid.check(scenario)


def test_history_filters_and_limits(fid: Fidelity) -> None:
    """get_state_history(limit=..., before=...) and get_state at a given checkpoint."""
    def scenario(run: Run) -> None:
        app = _logged_app(run)
        cfg = run.config()
        app.invoke(ask("log"), cfg)
        history = list(app.get_state_history(cfg))
        run.observe("length", len(history))
        run.observe("limited", [s.next for s in app.get_state_history(cfg, limit=2)])
        middle = history[len(history) // 2]
        run.observe("before the middle", [s.next for s in app.get_state_history(cfg, before=middle.config)])
        run.observe("state at the middle", app.get_state(middle.config).values)

    fid.check(scenario)


def test_durability_exit(fid: Fidelity) -> None:
    """invoke(durability="exit") saves only the final checkpoint: history length and values."""
    def scenario(run: Run) -> None:
        app = _logged_app(run)
        cfg = run.config()
        run.observe("output", app.invoke(ask("log"), cfg, durability="exit"))
        run.observe_state("thread", app, cfg)

    fid.check(scenario)


def test_async_multi_turn_history(fid: Fidelity) -> None:
    """Two ainvoke turns on one thread; aget_state and aget_state_history."""
    script = [{"name": "add", "args": {"a": 1, "b": 2}}, "3", {"name": "multiply", "args": {"a": 3, "b": 3}}, "9"]

    async def scenario(run: Run) -> None:
        app = react(TurnChat(script=script), [add, multiply], checkpointer=InMemorySaver())
        cfg = run.config()
        run.observe("first", await app.ainvoke(ask("1+2"), cfg))
        run.observe("second", await app.ainvoke(ask("times 3"), cfg))
        await run.aobserve_state("thread", app, cfg)

    fid.check(scenario)


def test_threads_are_kept_apart(fid: Fidelity) -> None:
    """Two threads on one checkpointer, interleaved: each thread's own history."""
    script = [{"name": "add", "args": {"a": 2, "b": 2}}, "4"]

    def scenario(run: Run) -> None:
        app = react(TurnChat(script=script), [add], checkpointer=InMemorySaver())
        run.observe("a1", app.invoke(ask("a"), run.config("a")))
        run.observe("b1", app.invoke(ask("b"), run.config("b")))
        run.observe("a2", app.invoke(ask("a again"), run.config("a")))
        run.observe_state("a", app, run.config("a"))
        run.observe_state("b", app, run.config("b"))

    fid.check(scenario)
