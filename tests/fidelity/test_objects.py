"""Objects with identity and state: stateful models, unpicklable tools, closures, module state, patched ids.

An app's objects live in the app's process. Whatever nalar does with them, the
app must see what it sees without nalar: a copy that advanced on a worker, or a
patch that did not reach it, would show here.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.tools import tool

from . import _kit
from ._harness import Fidelity, Run
from ._kit import StepChat, TurnChat, add, ask, make_id, multiply, note, react, roll, steps


def test_stateful_model_walks_its_responses(fid: Fidelity) -> None:
    """A model that walks a list of responses (module-level StepChat): same sequence, same final ``i``."""
    def scenario(run: Run) -> None:
        model = StepChat(responses=steps({"name": "add", "args": {"a": 1, "b": 2}},
                                         {"name": "multiply", "args": {"a": 3, "b": 4}}, "3 then 12"))
        # A model that falls out of step loops; the limit keeps that to a few steps.
        run.observe("output", react(model, [add, multiply]).invoke(ask("go"), run.config(recursion_limit=12)))
        run.observe("model position", model.i)

    fid.check(scenario)


def test_stateful_model_under_astream(fid: Fidelity) -> None:
    """The stateful model streamed with astream(stream_mode="messages")."""
    async def scenario(run: Run) -> None:
        model = StepChat(responses=steps({"name": "add", "args": {"a": 5, "b": 5}}, "ten"))
        app = react(model, [add])
        chunks = [c async for c in app.astream(ask("go"), run.config(recursion_limit=12), stream_mode="messages")]
        run.observe("chunks", chunks)
        run.observe("model position", model.i)

    fid.check(scenario)


def test_model_class_defined_in_the_test(fid: Fidelity) -> None:
    """A stateless BaseChatModel subclass defined inside the test function."""
    class Echo(BaseChatModel):
        prefix: str

        @property
        def _llm_type(self) -> str:
            return "echo"

        def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                      **kwargs: Any) -> ChatResult:
            return ChatResult(generations=[ChatGeneration(message=AIMessage(f"{self.prefix}{messages[-1].content}"))])

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    def scenario(run: Run) -> None:
        run.observe("output", react(Echo(prefix="echo: "), []).invoke(ask("hello"), run.config()))

    fid.check(scenario)


def test_model_holding_a_lock(fid: Fidelity) -> None:
    """A model whose metadata holds a lock (it does not pickle)."""
    def scenario(run: Run) -> None:
        model = TurnChat(script=[{"name": "add", "args": {"a": 1, "b": 1}}, "2"], metadata={"guard": threading.Lock()})
        run.observe("output", react(model, [add]).invoke(ask("1+1"), run.config()))

    fid.check(scenario)


def test_model_with_a_rate_limiter(fid: Fidelity) -> None:
    """A model with an InMemoryRateLimiter (threading state inside)."""
    def scenario(run: Run) -> None:
        limiter = InMemoryRateLimiter(requests_per_second=500, check_every_n_seconds=0.001, max_bucket_size=5)
        model = TurnChat(script=[{"name": "add", "args": {"a": 1, "b": 1}}, "2"], rate_limiter=limiter)
        run.observe("output", react(model, [add]).invoke(ask("1+1"), run.config()))

    fid.check(scenario)


def test_tool_defined_in_the_test(fid: Fidelity) -> None:
    """A stateless @tool defined inside the test function."""
    @tool
    def reverse(text: str) -> str:
        """Reverse a text."""
        return text[::-1]

    def scenario(run: Run) -> None:
        app = react(TurnChat(script=[{"name": "reverse", "args": {"text": "abc"}}, "cba"]), [reverse])
        run.observe("output", app.invoke(ask("reverse"), run.config()))

    fid.check(scenario)


def test_tool_closing_over_a_lock(fid: Fidelity) -> None:
    """A tool whose function closes over a lock (it does not pickle)."""
    def scenario(run: Run) -> None:
        guard = threading.Lock()

        @tool
        def guarded(text: str) -> str:
            """Upper-case under a lock."""
            with guard:
                return text.upper()

        app = react(TurnChat(script=[{"name": "guarded", "args": {"text": "abc"}}, "ABC"]), [guarded])
        run.observe("output", app.invoke(ask("guard"), run.config()))

    fid.check(scenario)


def test_tool_closing_over_a_generator(fid: Fidelity) -> None:
    """A tool that draws ticket numbers from a generator in its closure, across three calls."""
    def scenario(run: Run) -> None:
        def counter() -> Iterator[int]:
            n = 100
            while True:
                yield n
                n += 1

        tickets = counter()

        @tool
        def ticket(who: str) -> str:
            """Give the next ticket."""
            return f"{who}: #{next(tickets)}"

        calls = [{"name": "ticket", "args": {"who": w}} for w in ("ann", "bob")]
        script = [calls[0], calls[1], {"name": "ticket", "args": {"who": "cy"}}, "three tickets"]
        run.observe("output", react(TurnChat(script=script), [ticket]).invoke(ask("tickets"), run.config()))
        run.observe("next ticket", next(tickets))

    fid.check(scenario)


def test_tool_writing_to_an_open_file(fid: Fidelity) -> None:
    """A tool that writes to a file object the app opened (it does not pickle)."""
    def scenario(run: Run) -> None:
        path = run.path("journal.txt")
        with open(path, "w", encoding="utf-8") as journal:
            @tool
            def record(entry: str) -> str:
                """Write an entry to the journal."""
                journal.write(entry + "\n")
                journal.flush()
                return f"recorded {entry}"

            script = [{"name": "record", "args": {"entry": "one"}}, {"name": "record", "args": {"entry": "two"}}, "ok"]
            run.observe("output", react(TurnChat(script=script), [record]).invoke(ask("write"), run.config()))
        run.observe("journal", path.read_text(encoding="utf-8"))

    fid.check(scenario)


def test_tool_keeping_state_in_a_closure(fid: Fidelity) -> None:
    """A tool that counts its calls in a dict it closes over (picklable, so a copy could travel)."""
    def scenario(run: Run) -> None:
        tally: dict[str, int] = {}

        @tool
        def vote(option: str) -> str:
            """Vote for an option; report the tally."""
            tally[option] = tally.get(option, 0) + 1
            return f"{option}: {tally[option]}"

        script = [{"name": "vote", "args": {"option": "a"}}, {"name": "vote", "args": {"option": "a"}}, "two votes"]
        run.observe("output", react(TurnChat(script=script), [vote]).invoke(ask("vote"), run.config()))
        run.observe("tally", tally)

    fid.check(scenario)


def test_tool_mutating_module_state(fid: Fidelity) -> None:
    """A module-level tool that appends to a module-level list; the app reads the list afterwards."""
    def scenario(run: Run) -> None:
        _kit.NOTES.clear()
        script = [{"name": "note", "args": {"text": "first"}}, {"name": "note", "args": {"text": "second"}}, "noted"]
        run.observe("output", react(TurnChat(script=script), [note]).invoke(ask("note"), run.config()))
        run.observe("notes", list(_kit.NOTES))

    fid.check(scenario)


def test_tool_drawing_ids_from_a_patched_uuid4(fid: Fidelity) -> None:
    """A tool that calls uuid.uuid4(), which the test patched for deterministic ids."""
    def scenario(run: Run) -> None:
        script = [{"name": "make_id", "args": {"prefix": "order"}}, "made"]
        run.observe("output", react(TurnChat(script=script), [make_id]).invoke(ask("id"), run.config()))
        run.observe("next id", str(uuid.uuid4()))

    fid.check(scenario)


def test_tool_drawing_from_a_seeded_random(fid: Fidelity) -> None:
    """A tool that draws from the random module, which the test seeded."""
    def scenario(run: Run) -> None:
        script = [{"name": "roll", "args": {"sides": 1000}}, {"name": "roll", "args": {"sides": 1000}}, "rolled"]
        run.observe("output", react(TurnChat(script=script), [roll]).invoke(ask("roll"), run.config()))

    fid.check(scenario)


def test_tool_returning_an_unpicklable_artifact(fid: Fidelity) -> None:
    """A content_and_artifact tool whose artifact holds a lock: the app gets that very kind of object."""
    def scenario(run: Run) -> None:
        @tool(response_format="content_and_artifact")
        def handle(name: str) -> tuple[str, Any]:
            """Open a handle (an object with a lock)."""
            return f"opened {name}", {"name": name, "lock": threading.Lock()}

        app = react(TurnChat(script=[{"name": "handle", "args": {"name": "h"}}, "opened"]), [handle])
        out = app.invoke(ask("open"), run.config())
        artifact = out["messages"][2].artifact
        run.observe("output", out)
        run.observe("artifact lock type", type(artifact["lock"]).__name__)

    fid.check(scenario)
