"""Node retries (``RetryPolicy``) with flaky tools and models; node caching (``CachePolicy``); model caches."""

from __future__ import annotations

from typing import Any

from langchain_core.caches import InMemoryCache as ModelCache
from langgraph.cache.memory import InMemoryCache
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import CachePolicy, RetryPolicy
from typing_extensions import TypedDict

from ._harness import Fidelity, Run
from ._kit import CountingChat, FileFlakyChat, ask, flaky, lines, log_call

FAST_RETRY = RetryPolicy(max_attempts=3, initial_interval=0.001, backoff_factor=1.0, jitter=False)


class Job(TypedDict):
    key: str
    result: str


def _one_node(node: Any, **kwargs: Any) -> Any:
    g = StateGraph(Job)
    g.add_node("work", node, **kwargs)
    g.add_edge(START, "work")
    g.add_edge("work", END)
    return g


def test_retry_policy_with_a_flaky_tool(fid: Fidelity) -> None:
    """RetryPolicy on a node whose tool fails once (a flag file): the retry succeeds."""
    def scenario(run: Run) -> None:
        flag = run.path("flag")
        flag.touch()

        def work(state: Job) -> dict[str, Any]:
            return {"result": flaky.invoke({"key": state["key"], "flag": str(flag)})}

        app = _one_node(work, retry_policy=FAST_RETRY).compile()
        run.observe("output", app.invoke({"key": "k", "result": ""}, run.config()))

    fid.check(scenario)


def test_retry_policy_with_an_in_memory_flaky_tool(fid: Fidelity) -> None:
    """A flaky tool that counts its attempts in a closure: the second attempt must see the first."""
    from langchain_core.tools import tool

    def scenario(run: Run) -> None:
        attempts: list[int] = []

        @tool
        def wobbly(key: str) -> str:
            """Fail on the first attempt, succeed on the next."""
            attempts.append(1)
            if len(attempts) == 1:
                raise ConnectionError(f"{key}: first attempt dropped")
            return f"{key}: attempt {len(attempts)}"

        def work(state: Job) -> dict[str, Any]:
            return {"result": wobbly.invoke({"key": state["key"]})}

        app = _one_node(work, retry_policy=FAST_RETRY).compile()
        run.observe("output", app.invoke({"key": "k", "result": ""}, run.config()))
        run.observe("attempts", len(attempts))

    fid.check(scenario)


def test_retry_policy_gives_up(fid: Fidelity) -> None:
    """A tool that always fails: after max_attempts the error reaches invoke, with its traceback."""
    from ._kit import explode

    def scenario(run: Run) -> None:
        def work(state: Job) -> dict[str, Any]:
            return {"result": explode.invoke({"reason": state["key"]})}

        app = _one_node(work, retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False,
                                                       retry_on=RuntimeError)).compile()
        with run.raises("error"):
            app.invoke({"key": "k", "result": ""}, run.config())

    fid.check(scenario)


def test_retry_policy_with_a_flaky_model(fid: Fidelity) -> None:
    """RetryPolicy on a model node whose model fails once (ConnectionError, a flag file)."""
    def scenario(run: Run) -> None:
        flag = run.path("flag")
        flag.touch()
        model = FileFlakyChat(script=["back online"], flag=str(flag))

        def agent(state: MessagesState) -> dict[str, Any]:
            return {"messages": [model.invoke(state["messages"])]}

        g = StateGraph(MessagesState)
        g.add_node("agent", agent, retry_policy=FAST_RETRY)
        g.add_edge(START, "agent")
        run.observe("output", g.compile().invoke(ask("hello"), run.config()))

    fid.check(scenario)


def test_cache_policy_skips_a_cached_node(fid: Fidelity) -> None:
    """CachePolicy + InMemoryCache: the second invoke with the same input does not run the node's tool."""
    def scenario(run: Run) -> None:
        log = run.path("log")

        def work(state: Job) -> dict[str, Any]:
            return {"result": log_call.invoke({"key": state["key"], "log": str(log)})}

        app = _one_node(work, cache_policy=CachePolicy(ttl=60)).compile(cache=InMemoryCache())
        run.observe("first", list(app.stream({"key": "k", "result": ""}, run.config("a"), stream_mode="updates")))
        run.observe("second", list(app.stream({"key": "k", "result": ""}, run.config("b"), stream_mode="updates")))
        run.observe("other input", app.invoke({"key": "j", "result": ""}, run.config("c")))
        run.observe("tool executions", lines(log))

    fid.check(scenario)


def test_model_cache_answers_the_second_call(fid: Fidelity) -> None:
    """A model with cache=InMemoryCache(): the second identical prompt is answered from the cache."""
    def scenario(run: Run) -> None:
        log = run.path("log")
        model = CountingChat(script=["cached answer"], log=str(log), cache=ModelCache())

        def agent(state: MessagesState) -> dict[str, Any]:
            return {"messages": [model.invoke(state["messages"][:1])]}

        g = StateGraph(MessagesState)
        g.add_node("agent", agent)
        g.add_edge(START, "agent")
        app = g.compile()
        run.observe("first", app.invoke(ask("same"), run.config("a")))
        run.observe("second", app.invoke(ask("same"), run.config("b")))
        run.observe("model executions", lines(log))

    fid.check(scenario)


def test_retry_then_cache_in_one_graph(fid: Fidelity) -> None:
    """A retried node feeding a cached node, invoked twice: retries, cache hits and the outputs."""
    class S(TypedDict):
        seed: str
        text: str
        tag: str

    def scenario(run: Run) -> None:
        flag = run.path("flag")
        flag.touch()
        log = run.path("log")
        model = FileFlakyChat(script=["tagged"], flag=str(flag))

        def fetch(state: S) -> dict[str, Any]:
            return {"text": str(model.invoke(state["seed"]).content)}

        def tag(state: S) -> dict[str, Any]:
            return {"tag": log_call.invoke({"key": state["text"], "log": str(log)})}

        g = StateGraph(S)
        g.add_node("fetch", fetch, retry_policy=FAST_RETRY)
        g.add_node("tag", tag, cache_policy=CachePolicy())
        g.add_edge(START, "fetch")
        g.add_edge("fetch", "tag")
        app = g.compile(cache=InMemoryCache())
        start = {"seed": "seed", "text": "", "tag": ""}
        run.observe("first", app.invoke(start, run.config("a")))
        run.observe("second", app.invoke(start, run.config("b")))
        run.observe("tag executions", lines(log))

    fid.check(scenario)
