"""``langchain.agents.create_agent``: tools, errors, structured output, middleware, local model classes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import (
    HumanInTheLoopMiddleware,
    ModelCallLimitMiddleware,
    ModelRetryMiddleware,
    ToolRetryMiddleware,
    after_model,
    before_model,
    wrap_tool_call,
)
from langchain.agents.structured_output import ToolStrategy
from langchain_core.language_models.fake_chat_models import (
    FakeMessagesListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from pydantic import BaseModel, Field

from ._harness import Fidelity, Run
from ._kit import (
    FileFlakyChat,
    TurnChat,
    add,
    ask,
    explode,
    flaky,
    fragile,
    multiply,
    shout,
    steps,
    to_ai,
)

SEVERAL: list[Any] = [
    {"name": "add", "args": {"a": 2, "b": 3}},
    {"name": "multiply", "args": {"a": 5, "b": 4}},
    {"name": "shout", "args": {"text": "twenty"}},
    "2+3=5, 5*4=20, TWENTY.",
]


def test_agent_with_several_tools(fid: Fidelity) -> None:
    """create_agent with a system prompt and three tools, one call per turn."""
    def scenario(run: Run) -> None:
        agent = create_agent(TurnChat(script=SEVERAL), [add, multiply, shout], system_prompt="Be exact.")
        run.observe("output", agent.invoke(ask("compute"), run.config()))

    fid.check(scenario)


async def _agent_ainvoke(run: Run) -> None:
    agent = create_agent(TurnChat(script=SEVERAL), [add, multiply, shout], system_prompt="Be exact.")
    run.observe("output", await agent.ainvoke(ask("compute"), run.config()))


def test_agent_ainvoke(fid: Fidelity) -> None:
    """create_agent under ainvoke (the async model and tool paths)."""
    fid.check(_agent_ainvoke)


def test_agent_parallel_tool_calls_stream_updates(fid: Fidelity) -> None:
    """create_agent with two tool calls in one turn, streamed as updates."""
    script = [{"tool_calls": [{"name": "add", "args": {"a": 1, "b": 1}},
                              {"name": "shout", "args": {"text": "hi"}}]}, "2 and HI"]

    def scenario(run: Run) -> None:
        agent = create_agent(TurnChat(script=script), [add, shout])
        run.observe("chunks", list(agent.stream(ask("go"), run.config(), stream_mode="updates")), unordered=True)

    # create_agent runs each tool call as its own task; LangGraph stamps the ids of their
    # streamed ToolMessages as the tasks finish, in an order it does not fix.
    fid.check(scenario, concurrent=True, uuid4_order=False)


def test_agent_tool_errors(fid: Fidelity) -> None:
    """A tool error the tool handles (ToolException) and one that ends the run (RuntimeError)."""
    def scenario(run: Run) -> None:
        handled = create_agent(TurnChat(script=[{"name": "fragile", "args": {"x": 1}}, "refused"]), [fragile])
        run.observe("handled", handled.invoke(ask("try"), run.config("handled")))
        raised = create_agent(TurnChat(script=[{"name": "explode", "args": {"reason": "x"}}, "no"]), [explode])
        with run.raises("raised"):
            raised.invoke(ask("boom"), run.config("raised"))

    fid.check(scenario)


class Weather(BaseModel):
    """The weather in a city."""

    city: str = Field(description="The city")
    celsius: int = Field(description="Temperature")


def test_agent_structured_response(fid: Fidelity) -> None:
    """response_format=ToolStrategy(schema): the structured_response and the messages around it."""
    script = [{"name": "add", "args": {"a": 20, "b": 1}},
              {"name": "Weather", "args": {"city": "Oslo", "celsius": 21}}]

    def scenario(run: Run) -> None:
        agent = create_agent(TurnChat(script=script), [add], response_format=ToolStrategy(Weather))
        run.observe("output", agent.invoke(ask("weather in Oslo?"), run.config()))

    fid.check(scenario)


def test_agent_user_middleware_hooks(fid: Fidelity) -> None:
    """The app's own before_model / after_model / wrap_tool_call middleware (defined in the test)."""
    def scenario(run: Run) -> None:
        seen: list[str] = []

        @before_model
        def count_turns(state: Any, runtime: Any) -> dict[str, Any] | None:
            seen.append(f"before:{len(state['messages'])}")
            return None

        @after_model
        def tag_answer(state: Any, runtime: Any) -> dict[str, Any] | None:
            seen.append(f"after:{state['messages'][-1].type}")
            return None

        @wrap_tool_call
        def audited(request: Any, handler: Any) -> Any:
            seen.append(f"tool:{request.tool_call['name']}")
            result = handler(request)
            seen.append(f"result:{result.content}")
            return result

        agent = create_agent(TurnChat(script=SEVERAL), [add, multiply, shout],
                             middleware=[count_turns, tag_answer, audited])
        run.observe("output", agent.invoke(ask("compute"), run.config()))
        run.observe("middleware saw", seen)

    fid.check(scenario)


def test_agent_multi_turn_with_checkpointer(fid: Fidelity) -> None:
    """Two invokes on one thread with InMemorySaver: the second sees the first; checkpoints match."""
    script = [{"name": "add", "args": {"a": 1, "b": 2}}, "3", {"name": "multiply", "args": {"a": 3, "b": 3}}, "9"]

    def scenario(run: Run) -> None:
        agent = create_agent(TurnChat(script=script), [add, multiply], checkpointer=InMemorySaver())
        cfg = run.config()
        run.observe("first", agent.invoke(ask("1+2"), cfg))
        run.observe("second", agent.invoke(ask("and times 3"), cfg))
        run.observe_state("thread", agent, cfg)

    fid.check(scenario)


def test_agent_astream_messages(fid: Fidelity) -> None:
    """astream(stream_mode="messages"): the model's tokens and the tool messages, with metadata."""
    async def scenario(run: Run) -> None:
        agent = create_agent(TurnChat(script=SEVERAL[:1] + ["the sum is five"]), [add])
        run.observe("chunks", [c async for c in agent.astream(ask("add"), run.config(), stream_mode="messages")])

    fid.check(scenario)


def test_agent_with_a_generic_fake_model_defined_here(fid: Fidelity) -> None:
    """A GenericFakeChatModel subclass defined in the test, fed an iterator of messages.

    The iterator is state: every model call must advance this very object (a
    recursion limit keeps a model that fell out of step from looping long).
    """
    class LocalFake(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    def scenario(run: Run) -> None:
        model = LocalFake(messages=iter(steps(*SEVERAL)))
        agent = create_agent(model, [add, multiply, shout])
        run.observe("output", agent.invoke(ask("compute"), run.config(recursion_limit=20)))

    fid.check(scenario)


def test_agent_with_a_messages_list_model_defined_here(fid: Fidelity) -> None:
    """A FakeMessagesListChatModel subclass defined in the test: it walks its responses (``i``)."""
    class LocalList(FakeMessagesListChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    def scenario(run: Run) -> None:
        model = LocalList(responses=steps(*SEVERAL))
        agent = create_agent(model, [add, multiply, shout])
        run.observe("output", agent.invoke(ask("compute"), run.config(recursion_limit=20)))
        run.observe("calls counted by the model", model.i)

    fid.check(scenario)


def test_agent_with_a_generator_fed_model(fid: Fidelity) -> None:
    """GenericFakeChatModel fed a generator (which does not pickle)."""
    class GeneratorFake(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    def answers() -> Iterator[AIMessage]:
        for i, entry in enumerate(SEVERAL):
            yield to_ai(entry, i)

    def scenario(run: Run) -> None:
        agent = create_agent(GeneratorFake(messages=answers()), [add, multiply, shout])
        run.observe("output", agent.invoke(ask("compute"), run.config(recursion_limit=20)))

    fid.check(scenario)


def test_agent_human_in_the_loop_middleware(fid: Fidelity) -> None:
    """HumanInTheLoopMiddleware interrupts before a tool; resume with an edit, then an approval."""
    script = [{"name": "shout", "args": {"text": "launch"}}, {"name": "add", "args": {"a": 1, "b": 1}}, "done"]

    def scenario(run: Run) -> None:
        agent = create_agent(TurnChat(script=script), [shout, add], checkpointer=InMemorySaver(),
                             middleware=[HumanInTheLoopMiddleware(interrupt_on={"shout": True, "add": True})])
        cfg = run.config()
        run.observe("paused", agent.invoke(ask("go"), cfg))
        edit = {"type": "edit", "edited_action": {"name": "shout", "args": {"text": "wait"}}}
        run.observe("edited", agent.invoke(Command(resume={"decisions": [edit]}), cfg))
        run.observe("approved", agent.invoke(Command(resume={"decisions": [{"type": "approve"}]}), cfg))
        run.observe_state("thread", agent, cfg)

    fid.check(scenario)


def test_agent_model_call_limit(fid: Fidelity) -> None:
    """ModelCallLimitMiddleware(run_limit=2) ends a model that keeps calling tools."""
    def scenario(run: Run) -> None:
        agent = create_agent(TurnChat(script=[{"name": "shout", "args": {"text": "more"}}]), [shout],
                             middleware=[ModelCallLimitMiddleware(run_limit=2, exit_behavior="end")])
        run.observe("output", agent.invoke(ask("loop"), run.config()))

    fid.check(scenario)


def test_agent_tool_retry_middleware(fid: Fidelity) -> None:
    """ToolRetryMiddleware retries a tool that fails once (a flag file), then it succeeds."""
    def scenario(run: Run) -> None:
        flag = run.path("flag")
        flag.touch()
        script = [{"name": "flaky", "args": {"key": "k", "flag": str(flag)}}, "it worked"]
        agent = create_agent(TurnChat(script=script), [flaky],
                             middleware=[ToolRetryMiddleware(max_retries=2, initial_delay=0.001, jitter=False)])
        run.observe("output", agent.invoke(ask("try"), run.config()))
        run.observe("flag left", flag.exists())

    fid.check(scenario)


def test_agent_model_retry_middleware(fid: Fidelity) -> None:
    """ModelRetryMiddleware retries a model call that fails once (a flag file)."""
    def scenario(run: Run) -> None:
        flag = run.path("flag")
        flag.touch()
        model = FileFlakyChat(script=["recovered"], flag=str(flag))
        agent = create_agent(model, [add],
                             middleware=[ModelRetryMiddleware(max_retries=2, initial_delay=0.001, jitter=False)])
        run.observe("output", agent.invoke(ask("hello"), run.config()))

    fid.check(scenario)
