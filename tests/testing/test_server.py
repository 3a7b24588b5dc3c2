"""EngineServer: the OpenAI-compatible API, driven by a real ChatOpenAI client."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from nalar_plugin.errors import ConfigError, RuntimeStateError
from nalar_plugin.testing import (
    EngineConfig,
    EngineFarm,
    EngineServer,
    SimulatedChatModel,
    SimulatedEngine,
)

CFG = EngineConfig(time_scale=0.001)


@tool
def lookup(city: str) -> str:
    """Look up the weather of a city."""
    return "sunny"


SCRIPT: list[Any] = [
    {"content": "Let me check.", "tool_calls": [{"name": "lookup", "args": {"city": "Paris"}}]},
    "It is sunny in Paris.",
]


def _client(server: EngineServer, model: str = "e0", **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=server.url, api_key="x", max_retries=0, **kwargs)  # type: ignore[arg-type]


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_chat_openai_plain_answer(engine: SimulatedEngine) -> None:
    with EngineServer(engine, script=["Hello from the simulated engine."]) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/v1")
        reply = _client(server).invoke("hi")
    assert reply.content == "Hello from the simulated engine."
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.response_metadata["model_name"] == "e0"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 8
    assert engine.metrics().served == 1


def test_chat_openai_tool_calls_round_trip(engine: SimulatedEngine) -> None:
    with EngineServer(engine, script=SCRIPT) as server:
        llm = _client(server, model_kwargs={"user": "sess"}).bind_tools([lookup])
        first = llm.invoke([HumanMessage("weather in Paris?")])
        assert first.content == "Let me check."
        assert first.response_metadata["finish_reason"] == "tool_calls"
        assert first.tool_calls == [{"name": "lookup", "args": {"city": "Paris"}, "id": "call_0_0", "type": "tool_call"}]
        result = ToolMessage(lookup.invoke(first.tool_calls[0]["args"]), tool_call_id=first.tool_calls[0]["id"])
        second = llm.invoke([HumanMessage("weather in Paris?"), first, result])
    assert second.content == "It is sunny in Paris."
    assert not second.tool_calls
    # "user" is the session: the follow-up hit the prefix cache.
    details = second.response_metadata["token_usage"]["prompt_tokens_details"]
    assert details["cached_tokens"] > 0
    assert engine.cached_prefix("sess") > 0


async def test_chat_openai_async_and_streaming(engine: SimulatedEngine) -> None:
    with EngineServer(engine, script=SCRIPT) as server:
        llm = _client(server, stream_usage=True)
        chunks: list[AIMessageChunk] = [c async for c in llm.astream("weather?")]
        merged = chunks[0]
        for chunk in chunks[1:]:
            merged = merged + chunk
        assert merged.content == "Let me check."
        assert merged.tool_calls[0]["name"] == "lookup" and merged.tool_calls[0]["args"] == {"city": "Paris"}
        assert merged.usage_metadata is not None and merged.usage_metadata["input_tokens"] > 0
        replies = await asyncio.gather(*(llm.ainvoke("hi") for _ in range(5)))
    assert all(r.tool_calls for r in replies)
    assert engine.metrics().served == 6


def test_farm_routing_by_engine_and_pool_name() -> None:
    farm = EngineFarm({"analyst": 1, "coder": 2}, config=CFG)
    with EngineServer(farm, script=["ok"]) as server:
        status, models = _get(f"{server.url}/models")
        assert status == 200
        assert [m["id"] for m in models["data"]] == ["analyst-0", "coder-0", "coder-1"]
        assert _client(server, model="coder-1").invoke("x").response_metadata["model_name"] == "coder-1"
        # A pool name routes to one of its engines; a session sticks to its cache.
        sticky = _client(server, model="coder", model_kwargs={"user": "s"})
        names = {sticky.invoke("x" * 400).response_metadata["model_name"] for _ in range(3)}
        assert len(names) == 1 and names.pop().startswith("coder-")
        status, metrics = _get(f"{server.url}/metrics")
        assert status == 200 and sum(m["admitted"] for m in metrics.values()) == 4
        status, error = _get(f"{server.url}/models/nope")
        assert status == 404 and "error" in error
        with pytest.raises(openai.NotFoundError):
            _client(server, model="nope").invoke("x")


def test_bad_requests_get_openai_errors(engine: SimulatedEngine) -> None:
    with EngineServer(engine) as server:
        req = urllib.request.Request(
            f"{server.url}/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 400
        assert "invalid JSON" in json.loads(info.value.read())["error"]["message"]
        info.value.close()
        status, _ = _get(f"{server.url}/nowhere")
        assert status == 404


def test_failing_script_becomes_server_error(engine: SimulatedEngine) -> None:
    def broken(messages: list[Any]) -> str:
        raise KeyError("boom")

    with EngineServer(engine, script=broken) as server:
        with pytest.raises(openai.InternalServerError):
            _client(server).invoke("x")
        with pytest.raises(RuntimeStateError, match="boom"):
            SimulatedChatModel(engine=server.url).invoke("x")


def test_server_only_binds_loopback(engine: SimulatedEngine) -> None:
    with pytest.raises(ConfigError):
        EngineServer(engine, host="0.0.0.0")
    server = EngineServer(engine)
    with pytest.raises(RuntimeStateError):
        _ = server.url  # not started yet
    server.start()
    server.close()
    server.close()  # idempotent
