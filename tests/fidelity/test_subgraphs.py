"""Subgraphs: as nodes, called inside a node, streamed with ``subgraphs=True``, interrupted inside."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from ._harness import Fidelity, Run
from ._kit import TurnChat, add, ask, multiply, react

SCRIPT: list[Any] = [
    "(intro)",
    {"tool_calls": [{"name": "add", "args": {"a": 1, "b": 2}}, {"name": "multiply", "args": {"a": 3, "b": 4}}]},
    "3 and 12",
]


def parent_of(inner: Any, *, checkpointer: Any = None) -> Any:
    """intro -> the compiled subgraph as a node -> outro."""
    def intro(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage("Let me compute that.")]}

    def outro(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"Answer: {state['messages'][-1].content}")]}

    g = StateGraph(MessagesState)
    g.add_node("intro", intro)
    g.add_node("compute", inner)
    g.add_node("outro", outro)
    g.add_edge(START, "intro")
    g.add_edge("intro", "compute")
    g.add_edge("compute", "outro")
    g.add_edge("outro", END)
    return g.compile(checkpointer=checkpointer)


def test_subgraph_as_a_node(fid: Fidelity) -> None:
    """A compiled ReAct subgraph as the parent's middle node: the final messages."""
    def scenario(run: Run) -> None:
        app = parent_of(react(TurnChat(script=SCRIPT), [add, multiply]))
        run.observe("output", app.invoke(ask("1+2 and 3*4?"), run.config()))

    fid.check(scenario, concurrent=True)


def test_subgraph_stream_updates_with_namespaces(fid: Fidelity) -> None:
    """stream(subgraphs=True, stream_mode="updates"): (namespace, update) pairs from both levels."""
    def scenario(run: Run) -> None:
        app = parent_of(react(TurnChat(script=SCRIPT[:1] + [{"name": "add", "args": {"a": 1, "b": 2}}, "3"]),
                              [add]))
        run.observe("chunks", list(app.stream(ask("1+2?"), run.config(), subgraphs=True, stream_mode="updates")))

    fid.check(scenario)


def test_subgraph_astream_values_and_messages(fid: Fidelity) -> None:
    """astream(subgraphs=True) with values and messages modes: tokens carry the subgraph's namespace."""
    async def scenario(run: Run) -> None:
        app = parent_of(react(TurnChat(script=SCRIPT[:1] + [{"name": "add", "args": {"a": 1, "b": 2}}, "3"]),
                              [add]))
        chunks = [c async for c in app.astream(ask("1+2?"), run.config(), subgraphs=True,
                                               stream_mode=["values", "messages"])]
        run.observe("chunks", chunks)

    fid.check(scenario)


def test_subgraph_invoked_inside_a_node(fid: Fidelity) -> None:
    """A node that calls a compiled subgraph's invoke itself, passing its config on."""
    class Outer(TypedDict):
        question: str
        answer: str

    def scenario(run: Run) -> None:
        inner = react(TurnChat(script=[{"name": "multiply", "args": {"a": 6, "b": 7}}, "42"]), [multiply])

        def delegate(state: Outer, config: RunnableConfig) -> dict[str, Any]:
            result = inner.invoke(ask(state["question"]), config)
            return {"answer": str(result["messages"][-1].content)}

        g = StateGraph(Outer)
        g.add_node("delegate", delegate)
        g.add_edge(START, "delegate")
        g.add_edge("delegate", END)
        run.observe("output", g.compile().invoke({"question": "6*7?"}, run.config()))

    fid.check(scenario)


def test_subgraph_with_its_own_state_schema(fid: Fidelity) -> None:
    """A subgraph with a different state schema, called from an async node with transformed input."""
    class Inner(TypedDict):
        text: str
        shouted: str

    class Outer(TypedDict):
        words: list[str]
        results: list[str]

    async def scenario(run: Run) -> None:
        model = TurnChat(script=["LOUD"])

        async def loud(state: Inner) -> dict[str, Any]:
            reply = await model.ainvoke(state["text"])
            return {"shouted": f"{reply.content}:{state['text']}"}

        sub = StateGraph(Inner)
        sub.add_node("loud", loud)
        sub.add_edge(START, "loud")
        inner = sub.compile()

        async def each(state: Outer) -> dict[str, Any]:
            out = [(await inner.ainvoke({"text": w}))["shouted"] for w in state["words"]]
            return {"results": out}

        g = StateGraph(Outer)
        g.add_node("each", each)
        g.add_edge(START, "each")
        run.observe("output", await g.compile().ainvoke({"words": ["a", "b"], "results": []}, run.config()))

    fid.check(scenario)


def test_interrupt_inside_a_subgraph(fid: Fidelity) -> None:
    """interrupt() in a subgraph node: the parent's state with subgraphs=True, then resume."""
    def scenario(run: Run) -> None:
        model = TurnChat(script=["(intro)", "checked"])

        def review(state: MessagesState) -> dict[str, Any]:
            verdict = interrupt({"review": state["messages"][-1].content})
            return {"messages": [AIMessage(f"reviewed: {verdict}")]}

        def answer(state: MessagesState) -> dict[str, Any]:
            return {"messages": [model.invoke(state["messages"])]}

        sub = StateGraph(MessagesState)
        sub.add_node("review", review)
        sub.add_node("answer", answer)
        sub.add_edge(START, "review")
        sub.add_edge("review", "answer")
        app = parent_of(sub.compile(), checkpointer=InMemorySaver())
        cfg = run.config()
        run.observe("paused", app.invoke(ask("check this"), cfg))
        run.observe_state("paused", app, cfg, history=False, subgraphs=True)
        run.observe("resumed", app.invoke(Command(resume="fine"), cfg))
        run.observe_state("done", app, cfg)

    fid.check(scenario)
