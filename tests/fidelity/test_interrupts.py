"""Interrupts and human-in-the-loop: ``interrupt()``, ``Command(resume=...)``, static breakpoints."""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from ._harness import Fidelity, Run
from ._kit import TurnChat, add, ask, ask_human, react, shout


def _approval_app(model: TurnChat) -> Any:
    """agent -> human_review (interrupt) -> tools | agent, the documented review-a-tool-call pattern."""
    tools = [shout, add]
    bound = model.bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    def human_review(state: MessagesState) -> Command[Any]:
        call = state["messages"][-1].tool_calls[0]
        decision = interrupt({"question": "run this tool?", "tool_call": call})
        if decision["action"] == "approve":
            return Command(goto="tools")
        if decision["action"] == "edit":
            edited = AIMessage(content="", id=state["messages"][-1].id,
                               tool_calls=[{**call, "args": decision["args"]}])
            return Command(goto="tools", update={"messages": [edited]})
        return Command(goto="agent", update={"messages": [
            {"role": "tool", "content": f"rejected: {decision['reason']}", "tool_call_id": call["id"],
             "name": call["name"]}]})

    def route(state: MessagesState) -> str:
        return "human_review" if tools_condition(state) == "tools" else END

    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("human_review", human_review, destinations=("tools", "agent"))
    g.add_node("tools", ToolNode(tools))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route, ["human_review", END])
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=InMemorySaver())


def test_interrupt_in_a_node_and_resume(fid: Fidelity) -> None:
    """interrupt() in a node: the __interrupt__ output, the paused checkpoint, then the resumed run."""
    class S(TypedDict):
        draft: str
        final: str

    def scenario(run: Run) -> None:
        model = TurnChat(script=["a polished draft"])

        def write(state: S) -> dict[str, Any]:
            return {"draft": str(model.invoke(state["draft"]).content)}

        def approve(state: S) -> dict[str, Any]:
            answer = interrupt({"draft": state["draft"]})
            return {"final": f"{state['draft']} ({answer})"}

        g = StateGraph(S)
        g.add_node("write", write)
        g.add_node("approve", approve)
        g.add_edge(START, "write")
        g.add_edge("write", "approve")
        g.add_edge("approve", END)
        app = g.compile(checkpointer=InMemorySaver())
        cfg = run.config()
        run.observe("paused", app.invoke({"draft": "text", "final": ""}, cfg))
        run.observe_state("paused", app, cfg, history=False)
        run.observe("resumed", app.invoke(Command(resume="approved"), cfg))
        run.observe_state("done", app, cfg)

    fid.check(scenario)


def test_human_review_of_a_tool_call(fid: Fidelity) -> None:
    """Review each tool call: approve one, edit the next one's arguments, reject the last."""
    script = [{"name": "shout", "args": {"text": "hello"}}, {"name": "add", "args": {"a": 1, "b": 1}},
              {"name": "shout", "args": {"text": "bye"}}, "finished"]

    def scenario(run: Run) -> None:
        app = _approval_app(TurnChat(script=script))
        cfg = run.config()
        run.observe("1 paused", app.invoke(ask("go"), cfg))
        run.observe("2 approved", app.invoke(Command(resume={"action": "approve"}), cfg))
        run.observe("3 edited", app.invoke(Command(resume={"action": "edit", "args": {"a": 20, "b": 22}}), cfg))
        run.observe("4 rejected", app.invoke(Command(resume={"action": "reject", "reason": "no"}), cfg))
        run.observe_state("thread", app, cfg)

    fid.check(scenario)


def test_interrupt_inside_a_tool(fid: Fidelity) -> None:
    """A tool that calls interrupt() (ask_human) in a ToolNode, resumed with the human's answer."""
    script = [{"name": "ask_human", "args": {"question": "colour?"}}, "You chose a colour."]

    def scenario(run: Run) -> None:
        app = react(TurnChat(script=script), [ask_human], checkpointer=InMemorySaver())
        cfg = run.config()
        run.observe("paused", app.invoke(ask("pick"), cfg))
        run.observe("resumed", app.invoke(Command(resume="blue"), cfg))

    fid.check(scenario)


def test_two_parallel_interrupts_resumed_by_id(fid: Fidelity) -> None:
    """Two parallel nodes interrupt; both are resumed at once with a map of interrupt id to answer."""
    class S(TypedDict):
        answers: Annotated[list[str], operator.add]

    def scenario(run: Run) -> None:
        def node(name: str) -> Any:
            def ask_one(state: S) -> dict[str, Any]:
                return {"answers": [f"{name}={interrupt(name)}"]}
            return ask_one

        g = StateGraph(S)
        g.add_node("left", node("left"))
        g.add_node("right", node("right"))
        g.add_edge(START, "left")
        g.add_edge(START, "right")
        app = g.compile(checkpointer=InMemorySaver())
        cfg = run.config()
        paused = app.invoke({"answers": []}, cfg)
        run.observe("interrupt values", sorted(i.value for i in paused["__interrupt__"]))
        resume = {i.id: i.value.upper() for i in paused["__interrupt__"]}
        run.observe("resumed", app.invoke(Command(resume=resume), cfg))

    fid.check(scenario, concurrent=True)


def test_static_breakpoint_before_tools(fid: Fidelity) -> None:
    """interrupt_before=["tools"]: the paused state's next, then invoke(None) continues."""
    script = [{"name": "add", "args": {"a": 4, "b": 4}}, "8"]

    def scenario(run: Run) -> None:
        app = react(TurnChat(script=script), [add], checkpointer=InMemorySaver(), interrupt_before=["tools"])
        cfg = run.config()
        run.observe("paused", app.invoke(ask("4+4"), cfg))
        run.observe_state("paused", app, cfg, history=False)
        run.observe("continued", app.invoke(None, cfg))
        run.observe_state("done", app, cfg)

    fid.check(scenario)


def test_astream_shows_the_interrupt(fid: Fidelity) -> None:
    """astream(stream_mode="updates") yields an __interrupt__ chunk; the resumed stream finishes."""
    script = [{"name": "shout", "args": {"text": "hey"}}, "done"]

    async def scenario(run: Run) -> None:
        app = _approval_app(TurnChat(script=script))
        cfg = run.config()
        run.observe("paused", [c async for c in app.astream(ask("go"), cfg, stream_mode="updates")])
        run.observe("resumed", [c async for c in app.astream(Command(resume={"action": "approve"}), cfg,
                                                             stream_mode="updates")])
        await run.aobserve_state("thread", app, cfg)

    fid.check(scenario)
