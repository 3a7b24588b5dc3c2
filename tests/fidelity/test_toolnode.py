"""A StateGraph with a ToolNode: entry points, tool errors, injected arguments, tool results."""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph.graph import MessagesState
from langgraph.prebuilt import ToolNode

from ._harness import Fidelity, Run
from ._kit import (
    Lookup,
    TurnChat,
    aadd,
    add,
    aexplode,
    ask,
    call_id,
    explode,
    fragile,
    last_words,
    listing,
    log_call,
    multiply,
    react,
    set_topic,
    shout,
    state_size,
    whoami,
)

TWO_CALLS: list[Any] = [
    {"tool_calls": [{"name": "add", "args": {"a": 1, "b": 2}}, {"name": "multiply", "args": {"a": 3, "b": 4}}]},
    "The answers are 3 and 12.",
]


def _app(script: list[Any] = TWO_CALLS, tools: list[Any] | None = None, **kwargs: Any) -> Any:
    return react(TurnChat(script=script), tools if tools is not None else [add, multiply], **kwargs)


def test_invoke_with_parallel_tool_calls(fid: Fidelity) -> None:
    """invoke: two tool calls in one turn (run concurrently by the ToolNode), then an answer."""
    def scenario(run: Run) -> None:
        run.observe("output", _app().invoke(ask("What are 1+2 and 3*4?"), run.config()))

    fid.check(scenario, concurrent=True)


def test_ainvoke_with_parallel_tool_calls(fid: Fidelity) -> None:
    """ainvoke: the async model path and async ToolNode (sync tools in an executor)."""
    async def scenario(run: Run) -> None:
        run.observe("output", await _app().ainvoke(ask("What are 1+2 and 3*4?"), run.config()))

    fid.check(scenario, concurrent=True)


def test_sequential_tool_turns_keep_global_event_order(fid: Fidelity) -> None:
    """One tool call per turn, three turns: every event, in the global order, is the same."""
    script = [{"name": "add", "args": {"a": 1, "b": 2}}, {"name": "multiply", "args": {"a": 3, "b": 4}},
              {"name": "shout", "args": {"text": "done"}}, "3, 12, DONE"]

    def scenario(run: Run) -> None:
        run.observe("output", _app(script, [add, multiply, shout]).invoke(ask("go"), run.config()))

    fid.check(scenario)


def test_stream_values(fid: Fidelity) -> None:
    """stream(stream_mode="values"): every state after every step, message ids included."""
    def scenario(run: Run) -> None:
        run.observe("chunks", list(_app().stream(ask("compute"), run.config(), stream_mode="values")))

    fid.check(scenario, concurrent=True)


def test_stream_updates(fid: Fidelity) -> None:
    """stream(stream_mode="updates"): each node's update, in step order."""
    def scenario(run: Run) -> None:
        run.observe("chunks", list(_app().stream(ask("compute"), run.config(), stream_mode="updates")))

    fid.check(scenario, concurrent=True)


def test_astream_updates_and_values(fid: Fidelity) -> None:
    """astream with two stream modes at once: (mode, chunk) pairs in order."""
    async def scenario(run: Run) -> None:
        chunks = [c async for c in _app().astream(ask("compute"), run.config(),
                                                      stream_mode=["updates", "values"])]
        run.observe("chunks", chunks)

    fid.check(scenario, concurrent=True)


def test_batch(fid: Fidelity) -> None:
    """batch over two threads: outputs in input order."""
    def scenario(run: Run) -> None:
        app = _app()
        outs = app.batch([ask("first"), ask("second")], [run.config("a"), run.config("b")])
        run.observe("outputs", outs)

    fid.check(scenario, concurrent=True, uuid4_order=False)


def test_abatch(fid: Fidelity) -> None:
    """abatch over two threads."""
    async def scenario(run: Run) -> None:
        outs = await _app().abatch([ask("first"), ask("second")], [run.config("a"), run.config("b")])
        run.observe("outputs", outs)

    fid.check(scenario, concurrent=True, uuid4_order=False)


def test_batch_with_max_concurrency_one_is_sequential(fid: Fidelity) -> None:
    """batch with max_concurrency=1 runs the inputs one after the other: the global order is fixed."""
    script = [{"name": "add", "args": {"a": 2, "b": 2}}, "four"]

    def scenario(run: Run) -> None:
        app = _app(script)
        outs = app.batch([ask("x"), ask("y"), ask("z")],
                         [run.config(t, max_concurrency=1) for t in "xyz"])
        run.observe("outputs", outs)

    fid.check(scenario)


def test_tool_node_max_concurrency_one_runs_calls_in_order(fid: Fidelity) -> None:
    """max_concurrency=1 in the config: the ToolNode runs three calls one by one, in order."""
    script = [{"tool_calls": [{"name": "add", "args": {"a": i, "b": i}} for i in range(3)]}, "0, 2, 4"]

    def scenario(run: Run) -> None:
        run.observe("output", _app(script).invoke(ask("double"), run.config(max_concurrency=1)))

    fid.check(scenario)


def test_tool_error_is_raised_through_invoke(fid: Fidelity) -> None:
    """A tool that raises (ToolNode default handler lets it through): type, message, traceback frames."""
    script = [{"name": "explode", "args": {"reason": "no fuel"}}, "unreachable"]

    def scenario(run: Run) -> None:
        with run.raises("error"):
            _app(script, [explode]).invoke(ask("launch"), run.config())

    fid.check(scenario)


def test_async_tool_error_is_raised_through_ainvoke(fid: Fidelity) -> None:
    """An async tool that raises, under ainvoke."""
    script = [{"name": "aexplode", "args": {"reason": "keys"}}, "unreachable"]

    async def scenario(run: Run) -> None:
        with run.raises("error"):
            await _app(script, [aexplode]).ainvoke(ask("find"), run.config())

    fid.check(scenario)


def test_tool_errors_handled_by_the_tool_node(fid: Fidelity) -> None:
    """handle_tool_errors=True: the error becomes a ToolMessage with status "error" and the loop goes on."""
    script = [{"name": "explode", "args": {"reason": "rain"}}, "I could not launch."]

    def scenario(run: Run) -> None:
        app = _app(script, [explode], tool_node=ToolNode([explode], handle_tool_errors=True))
        run.observe("output", app.invoke(ask("launch"), run.config()))

    fid.check(scenario)


def test_tool_error_handled_by_the_tool_itself(fid: Fidelity) -> None:
    """A ToolException with handle_tool_error=True on the tool: an error message, no exception."""
    script = [{"name": "fragile", "args": {"x": 7}}, "It refused."]

    def scenario(run: Run) -> None:
        run.observe("output", _app(script, [fragile]).invoke(ask("try"), run.config()))

    fid.check(scenario)


def test_invalid_tool_arguments(fid: Fidelity) -> None:
    """The model passes arguments that fail validation: the ToolNode's error message is the same."""
    script = [{"name": "add", "args": {"a": "one", "b": 2}}, "Sorry."]

    def scenario(run: Run) -> None:
        run.observe("output", _app(script).invoke(ask("add"), run.config()))

    fid.check(scenario)


def test_async_tool_in_ainvoke(fid: Fidelity) -> None:
    """A native async tool (``async def``) awaited by the async ToolNode."""
    script = [{"name": "aadd", "args": {"a": 20, "b": 22}}, "42"]

    async def scenario(run: Run) -> None:
        run.observe("output", await _app(script, [aadd]).ainvoke(ask("add"), run.config()))

    fid.check(scenario)


def test_async_tool_in_sync_invoke(fid: Fidelity) -> None:
    """An async-only tool called from sync invoke: the error LangChain raises is the same."""
    script = [{"name": "aadd", "args": {"a": 1, "b": 1}}, "2"]

    def scenario(run: Run) -> None:
        with run.raises("error"):
            run.observe("output", _app(script, [aadd]).invoke(ask("add"), run.config()))

    fid.check(scenario)


def test_content_and_artifact(fid: Fidelity) -> None:
    """A tool with response_format="content_and_artifact": content and artifact of the ToolMessage."""
    script = [{"name": "listing", "args": {"n": 3}}, "Three items."]

    def scenario(run: Run) -> None:
        run.observe("output", _app(script, [listing]).invoke(ask("list"), run.config()))

    fid.check(scenario)


def test_injected_state_and_tool_call_id(fid: Fidelity) -> None:
    """InjectedState (whole state and one field) and InjectedToolCallId arguments."""
    calls = [{"name": "state_size", "args": {"label": "n"}}, {"name": "last_words", "args": {}},
             {"name": "call_id", "args": {"text": "who"}}]
    script = [{"tool_calls": calls}, "ok"]

    def scenario(run: Run) -> None:
        app = _app(script, [state_size, last_words, call_id])
        run.observe("output", app.invoke(ask("inspect the state please"), run.config()))

    fid.check(scenario, concurrent=True)


def test_injected_argument_of_a_tool_class(fid: Fidelity) -> None:
    """A BaseTool subclass whose schema omits an InjectedToolArg of its body: the argument still arrives."""

    def scenario(run: Run) -> None:
        tool = Lookup()  # new each run: nothing cached on it beforehand
        run.observe("sync", tool.invoke({"key": "a", "secret": "s1"}, run.config()))
        run.observe("async", asyncio.run(Lookup().ainvoke({"key": "b", "secret": "s2"}, run.config())))
        run.observe("again", tool.invoke({"key": "c", "secret": "s3"}, run.config()))

    fid.check(scenario)


class TopicState(MessagesState):
    topic: str


def test_tool_returning_command(fid: Fidelity) -> None:
    """A tool that returns Command(update=...) changes a custom state key and answers its call."""
    script = [{"name": "set_topic", "args": {"topic": "dask"}}, "Topic set."]

    def scenario(run: Run) -> None:
        app = _app(script, [set_topic], state=TopicState)
        run.observe("output", app.invoke({**ask("set it"), "topic": "none"}, run.config()))

    fid.check(scenario)


def test_runnable_config_reaches_the_tool(fid: Fidelity) -> None:
    """A tool with a RunnableConfig parameter sees the run's thread id, tags and metadata."""
    script = [{"name": "whoami", "args": {"question": "me?"}}, "ok"]

    def scenario(run: Run) -> None:
        cfg = run.config(tags=["fidelity"], metadata={"user": "u1"})
        run.observe("output", _app(script, [whoami]).invoke(ask("who"), cfg))

    fid.check(scenario)


def test_tool_call_ids_reused_across_turns(fid: Fidelity) -> None:
    """A model that reuses the same tool-call id in two turns: each call still runs with its own args."""
    script = [{"name": "add", "args": {"a": 1, "b": 1}, "id": "call-1"},
              {"name": "add", "args": {"a": 5, "b": 5}, "id": "call-1"}, "2 then 10"]

    def scenario(run: Run) -> None:
        run.observe("output", _app(script).invoke(ask("add twice"), run.config()))

    fid.check(scenario)


def test_the_same_tool_call_in_two_turns_runs_twice(fid: Fidelity) -> None:
    """A model that repeats a whole tool call (same id, same args) in a later turn: it runs again."""
    def scenario(run: Run) -> None:
        log = run.path("calls.log")
        call = {"name": "log_call", "args": {"key": "k", "log": str(log)}, "id": "call-1"}
        script = [call, call, "logged twice"]
        run.observe("output", _app(script, [log_call]).invoke(ask("log twice"), run.config()))
        run.observe("lines", log.read_text(encoding="utf-8"))

    fid.check(scenario)


def test_unknown_tool_name(fid: Fidelity) -> None:
    """The model calls a tool that does not exist: the ToolNode's error message."""
    script = [{"name": "divide", "args": {"a": 1, "b": 0}}, "No such tool."]

    def scenario(run: Run) -> None:
        run.observe("output", _app(script, [add, shout]).invoke(ask("divide"), run.config()))

    fid.check(scenario)


def test_recursion_limit(fid: Fidelity) -> None:
    """A model that always calls a tool hits recursion_limit: GraphRecursionError, same message."""
    script = [{"name": "shout", "args": {"text": "again"}}]

    def scenario(run: Run) -> None:
        with run.raises("error"):
            _app(script, [shout]).invoke(ask("loop"), run.config(recursion_limit=6))

    fid.check(scenario)


def test_sync_stream_and_async_astream_agree(fid: Fidelity) -> None:
    """stream in a thread and astream on a loop over the same app, one after the other."""
    def scenario(run: Run) -> None:
        app = _app()
        run.observe("sync", list(app.stream(ask("a"), run.config("sync"), stream_mode="updates")))

        async def collect() -> list[Any]:
            return [c async for c in app.astream(ask("b"), run.config("async"), stream_mode="updates")]

        run.observe("async", asyncio.run(collect()))

    fid.check(scenario, concurrent=True)

