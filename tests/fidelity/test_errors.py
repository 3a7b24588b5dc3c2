"""Exceptions as the app catches them: type, message, attributes, cause, traceback, ``except`` clauses."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

from ._harness import Fidelity, Run
from ._kit import TurnChat, ask, explode, react, shout


class QuotaExceeded(Exception):
    """An app error with attributes of its own."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@tool
def charge(amount: int) -> str:
    """Charge an amount; fails with QuotaExceeded, caused by a KeyError."""
    try:
        {}["quota"]
    except KeyError as exc:
        raise QuotaExceeded(f"cannot charge {amount}", code=429) from exc
    return "charged"


class BrokenModel(BaseChatModel):
    """A model whose provider call fails."""

    @property
    def _llm_type(self) -> str:
        return "broken"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        raise ValueError("provider returned HTTP 500")

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


class MidStreamFailure(BaseChatModel):
    """A model that streams two tokens, then fails."""

    @property
    def _llm_type(self) -> str:
        return "mid-stream-failure"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        raise RuntimeError("not used: this model only streams")

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content="partial "))
        yield ChatGenerationChunk(message=AIMessageChunk(content="answer "))
        raise ConnectionResetError("stream cut after two tokens")

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def test_custom_exception_with_attributes_and_cause(fid: Fidelity) -> None:
    """A tool raises QuotaExceeded(code=429) from a KeyError: class, attribute and cause survive."""
    def scenario(run: Run) -> None:
        app = react(TurnChat(script=[{"name": "charge", "args": {"amount": 5}}, "no"]), [charge])
        try:
            app.invoke(ask("charge"), run.config())
        except QuotaExceeded as exc:
            run.observe("caught", {"class is the app's": type(exc) is QuotaExceeded, "code": exc.code,
                                   "cause": repr(exc.__cause__)})
            with run.raises("error"):
                raise

    fid.check(scenario)


def test_exception_class_defined_in_the_test(fid: Fidelity) -> None:
    """A tool raising an exception class defined inside the test: ``except`` on that class catches it."""
    class LocalError(Exception):
        pass

    @tool
    def refuse(why: str) -> str:
        """Refuse, with the test's own exception class."""
        raise LocalError(f"refused: {why}")

    def scenario(run: Run) -> None:
        app = react(TurnChat(script=[{"name": "refuse", "args": {"why": "policy"}}, "no"]), [refuse])
        try:
            app.invoke(ask("do it"), run.config())
            run.observe("caught", "nothing raised")
        except LocalError as exc:
            run.observe("caught", f"LocalError: {exc}")
        except Exception as exc:
            run.observe("caught", f"not a LocalError: {type(exc).__qualname__}: {exc}")

    fid.check(scenario)


def test_model_error_reaches_invoke(fid: Fidelity) -> None:
    """The model's provider call raises ValueError: invoke raises it, with the model's frame."""
    def scenario(run: Run) -> None:
        with run.raises("error"):
            react(BrokenModel(), [shout]).invoke(ask("hi"), run.config())

    fid.check(scenario)


def test_model_error_reaches_ainvoke(fid: Fidelity) -> None:
    """The same under ainvoke (the sync provider call runs in an executor)."""
    async def scenario(run: Run) -> None:
        with run.raises("error"):
            await react(BrokenModel(), [shout]).ainvoke(ask("hi"), run.config())

    fid.check(scenario)


def test_model_fails_mid_stream(fid: Fidelity) -> None:
    """stream_mode="messages": the tokens before the failure arrive, then the error."""
    def scenario(run: Run) -> None:
        chunks: list[Any] = []
        model = MidStreamFailure()
        g = StateGraph(MessagesState)
        g.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
        g.add_edge(START, "agent")
        with run.raises("error"):
            for chunk in g.compile().stream(ask("hi"), run.config(), stream_mode="messages"):
                chunks.append(chunk)
        run.observe("chunks before the error", chunks)

    fid.check(scenario)


class Fan(TypedDict):
    items: list[str]
    done: Annotated[list[str], operator.add]


def test_error_in_one_send_branch(fid: Fidelity) -> None:
    """Three Send branches, one tool fails: the error invoke raises."""
    def branch(state: dict[str, Any]) -> dict[str, Any]:
        if state["item"] == "bad":
            explode.invoke({"reason": "bad item"})
        return {"done": [shout.invoke({"text": state["item"]})]}

    def scenario(run: Run) -> None:
        g = StateGraph(Fan)
        g.add_node("start", lambda s: {})
        g.add_node("branch", branch)
        g.add_edge(START, "start")
        g.add_conditional_edges("start", lambda s: [Send("branch", {"item": i}) for i in s["items"]], ["branch"])
        g.add_edge("branch", END)
        with run.raises("error"):
            g.compile().invoke({"items": ["a", "bad", "c"], "done": []}, run.config())

    fid.check(scenario, concurrent=True)


def test_batch_with_return_exceptions(fid: Fidelity) -> None:
    """batch(return_exceptions=True): the failing input's exception in its place, the others' outputs."""
    def scenario(run: Run) -> None:
        ok = [{"name": "shout", "args": {"text": "ok"}}, "fine"]
        app_ok = react(TurnChat(script=ok), [shout, explode])
        outs = app_ok.batch([ask("a"), ask("b")], [run.config("a", max_concurrency=1), run.config("b")],
                            return_exceptions=True)
        bad = react(TurnChat(script=[{"name": "explode", "args": {"reason": "b"}}, "x"]), [explode])
        mixed = bad.batch([ask("c")], [run.config("c")], return_exceptions=True)
        run.observe("outputs", outs + mixed)

    fid.check(scenario, concurrent=True, uuid4_order=False)


def test_error_raised_by_a_node_after_its_tool(fid: Fidelity) -> None:
    """A node that calls a tool, then raises itself: the node's own error and frame."""
    def scenario(run: Run) -> None:
        def work(state: MessagesState) -> dict[str, Any]:
            loud = shout.invoke({"text": "almost"})
            raise KeyError(f"missing after {loud}")

        g = StateGraph(MessagesState)
        g.add_node("work", work)
        g.add_edge(START, "work")
        with run.raises("error"):
            g.compile().invoke(ask("go"), run.config())

    fid.check(scenario)
