"""SimulatedChatModel: scripts, tools in create_agent, sessions, pickling, HTTP."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
from typing import Any

import cloudpickle
import distributed
import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from nalar_plugin.errors import ConfigError, RuntimeStateError
from nalar_plugin.testing import (
    EngineConfig,
    EngineServer,
    SimulatedChatModel,
    SimulatedEngine,
    TokenSampler,
)

CALLS: list[tuple[int, int]] = []


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    CALLS.append((a, b))
    return a + b


SCRIPT: list[Any] = [{"name": "add", "args": {"a": 2, "b": 3}}, "The sum is 5."]


def _generation(message: BaseMessage) -> dict[str, Any]:
    return message.response_metadata["nalar_generation"]  # type: ignore[no-any-return]


def test_agent_calls_tool_then_answers(engine: SimulatedEngine) -> None:
    CALLS.clear()
    model = SimulatedChatModel(engine=engine, script=SCRIPT)
    agent = create_agent(model, [add], checkpointer=InMemorySaver())
    out = agent.invoke({"messages": [HumanMessage("add 2 and 3")]}, {"configurable": {"thread_id": "t1"}})
    kinds = [type(m) for m in out["messages"]]
    assert kinds == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    assert CALLS == [(2, 3)]
    assert out["messages"][2].content == "5"
    final = out["messages"][-1]
    assert final.content == "The sum is 5."
    first_gen, final_gen = _generation(out["messages"][1]), _generation(final)
    # The session is the LangGraph thread: the second call reuses its prefix.
    assert first_gen["session"] == final_gen["session"] == "t1"
    assert first_gen["cached_tokens"] == 0 and final_gen["cached_tokens"] > 0
    assert final.usage_metadata is not None
    assert final.usage_metadata["input_token_details"]["cache_read"] == final_gen["cached_tokens"]
    assert engine.metrics().served == 2


async def test_agent_async_on_another_thread_has_own_position(engine: SimulatedEngine) -> None:
    model = SimulatedChatModel(engine=engine, script=SCRIPT)
    agent = create_agent(model, [add])
    outs = await asyncio.gather(
        agent.ainvoke({"messages": [HumanMessage("a")]}, {"configurable": {"thread_id": "x"}}),
        agent.ainvoke({"messages": [HumanMessage("b")]}, {"configurable": {"thread_id": "y"}}),
    )
    for out, thread in zip(outs, ("x", "y")):
        assert out["messages"][-1].content == "The sum is 5."
        assert _generation(out["messages"][-1])["session"] == thread


def test_bind_tools_returns_runnable_carrying_schemas(engine: SimulatedEngine) -> None:
    model = SimulatedChatModel(engine=engine, script=SCRIPT)
    bound = model.bind_tools([add], tool_choice="auto")
    assert bound.kwargs["tools"][0]["function"]["name"] == "add"  # type: ignore[attr-defined]
    reply = bound.invoke("add")
    assert reply.tool_calls == [{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_0_0", "type": "tool_call"}]


def test_script_forms(engine: SimulatedEngine) -> None:
    scripted = AIMessage(content="", tool_calls=[{"name": "add", "args": {"a": 1, "b": 1}, "id": "fixed"}])
    model = SimulatedChatModel(engine=engine, script=[scripted, {"content": "x", "tool_calls": []}, "last"])
    history: list[BaseMessage] = [HumanMessage("q")]
    assert model.invoke(history).tool_calls[0]["id"] == "fixed"
    history += [AIMessage("1")]
    assert model.invoke(history).content == "x"
    history += [AIMessage("2"), AIMessage("3")]
    assert model.invoke(history).content == "last"  # past the end, the last repeats
    assert scripted.id is None  # the script's own message is never mutated

    echo = SimulatedChatModel(engine=engine, script=lambda msgs: f"seen {len(msgs)}")
    assert echo.invoke([HumanMessage("a"), HumanMessage("b")]).content == "seen 2"
    assert SimulatedChatModel(engine=engine).invoke("hi").content  # default reply


def test_token_counts_fixed_estimated_and_sampled(engine: SimulatedEngine) -> None:
    fixed = SimulatedChatModel(engine=engine, prompt_tokens=1234, output_tokens=56)
    gen = _generation(fixed.invoke("hi"))
    assert (gen["prompt_tokens"], gen["output_tokens"]) == (1234, 56)

    estimated = SimulatedChatModel(engine=engine, script=["y" * 400])
    gen = _generation(estimated.invoke("x" * 4000))
    assert 1000 <= gen["prompt_tokens"] <= 1010 and gen["output_tokens"] == 100

    sampler = TokenSampler("code", seed=3)
    sampled = SimulatedChatModel(engine=engine, sampler=sampler, session="s")
    gen = _generation(sampled.invoke("hi"))
    assert (gen["prompt_tokens"], gen["output_tokens"]) == sampler.sample_at("s", 0)


def test_bound_session_keyword(engine: SimulatedEngine) -> None:
    model = SimulatedChatModel(engine=engine).bind(session="bound")
    assert _generation(model.invoke("hi"))["session"] == "bound"


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_pickle_round_trip_in_process(engine: SimulatedEngine, dumps: Any) -> None:
    model = SimulatedChatModel(engine=engine, script=SCRIPT, session="p")
    copy = pickle.loads(dumps(model.bind_tools([add])))
    reply = copy.invoke("add")
    assert reply.tool_calls[0]["name"] == "add"
    assert engine.metrics().served == 1  # the copy used the very same engine


def test_model_runs_on_dask_threads_cluster(engine: SimulatedEngine) -> None:
    model = SimulatedChatModel(engine=engine, script=["from dask"])

    def call(m: SimulatedChatModel, text: str) -> str:
        return str(m.invoke(text).content)

    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        assert client.gather(client.map(call, [model] * 4, ["a", "b", "c", "d"])) == ["from dask"] * 4
    assert engine.metrics().served == 4


def test_invalid_arguments_raise_config_error(engine: SimulatedEngine) -> None:
    with pytest.raises(ConfigError):
        SimulatedChatModel(engine="ftp://nowhere")
    with pytest.raises(ConfigError):
        SimulatedChatModel(engine=object())
    with pytest.raises(ConfigError):
        SimulatedChatModel(engine=engine, script="not a list")
    with pytest.raises(ConfigError):
        SimulatedChatModel(engine=engine, output_tokens=-1)
    with pytest.raises(ConfigError):
        SimulatedChatModel(engine=engine, script=[42]).invoke("hi")


def test_killed_engine_surfaces_runtime_state_error(engine: SimulatedEngine) -> None:
    model = SimulatedChatModel(engine=engine)
    engine.kill()
    with pytest.raises(RuntimeStateError):
        model.invoke("hi")


async def test_http_backed_model_sync_and_async(engine: SimulatedEngine) -> None:
    with EngineServer(engine, script=["from the server"]) as server:
        remote = SimulatedChatModel(engine=server.url)
        assert (await remote.ainvoke("hi")).content == "from the server"
        local_script = SimulatedChatModel(engine=server.url, script=SCRIPT, session="h")
        reply = await asyncio.to_thread(local_script.bind_tools([add]).invoke, "add")
        assert reply.tool_calls[0]["args"] == {"a": 2, "b": 3}
        again = await local_script.ainvoke([HumanMessage("add"), reply, ToolMessage("5", tool_call_id="call_0_0")])
        assert again.content == "The sum is 5."
        assert _generation(again)["cached_tokens"] > 0  # same session, same engine
    assert engine.metrics().served == 3


def test_http_backed_model_works_from_another_process(engine: SimulatedEngine) -> None:
    code = (
        "import pickle, sys\n"
        "model = pickle.loads(sys.stdin.buffer.read())\n"
        "print(model.invoke('hi').content)\n"
    )
    with EngineServer(engine) as server:
        model = SimulatedChatModel(engine=server.url, script=["remote ok"])
        out = subprocess.run(
            [sys.executable, "-c", code], input=pickle.dumps(model), capture_output=True, timeout=60, check=True
        )
    assert out.stdout.strip() == b"remote ok"
    assert engine.metrics().served == 1


def test_http_errors_are_mapped(engine: SimulatedEngine) -> None:
    farm_less = SimulatedEngine("other", EngineConfig(time_scale=0.001))
    with EngineServer(farm_less) as server:
        url = server.url
        farm_less.kill()
        with pytest.raises(RuntimeStateError):
            SimulatedChatModel(engine=url).invoke("hi")
    with pytest.raises(RuntimeStateError):
        SimulatedChatModel(engine=url).invoke("hi")  # server gone
