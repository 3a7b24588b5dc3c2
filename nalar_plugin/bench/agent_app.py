"""The app of ``nalar bench agent``, and one round of it, in a process of its own.

Run as a script (``python agent_app.py '<spec JSON>'``) it prints one round's JSON
line. It imports only LangChain and LangGraph, and nalar only for the ``nalar``
systems, so the ``langgraph`` rounds run in a process that never loaded nalar or
Dask, as the app would without nalar.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import itertools
import json
import resource
import sys
import time
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool

CALLS_PER_RUN = 3
_tool_call_ids = itertools.count()


class ScriptedAgentModel(BaseChatModel):
    """Asks for one ``lookup`` call (a new tool-call id each time), then answers.

    Attributes:
        latency_s: How long each call awaits, as a model served elsewhere would.
    """

    latency_s: float = 0.002

    @property
    def _llm_type(self) -> str:
        return "scripted-agent"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _reply(self, messages: list[BaseMessage]) -> ChatResult:
        if isinstance(messages[-1], ToolMessage):
            message = AIMessage(content=f"found: {messages[-1].content}")
        else:
            call = {"name": "lookup", "args": {"topic": "agents"}, "id": f"call-{next(_tool_call_ids)}",
                    "type": "tool_call"}
            message = AIMessage(content="", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        time.sleep(self.latency_s)
        return self._reply(messages)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        await asyncio.sleep(self.latency_s)
        return self._reply(messages)


@tool
async def lookup(topic: str) -> str:
    """Look a topic up (an I/O-bound tool: it awaits)."""
    await asyncio.sleep(0.002)
    return f"notes on {topic}"


class NoOpHandler(BaseCallbackHandler):
    """A callback handler that only counts its events: what LangChain's callback events cost on their own.

    ``run_inline`` as nalar's handler has, so the events are called on the loop, not
    sent to an executor; it takes the same start and end events as nalar's handler.
    """

    run_inline = True

    def __init__(self) -> None:
        self.events = 0

    def _count(self, *args: Any, **kwargs: Any) -> None:
        self.events += 1

    on_chain_start = on_chain_end = on_chain_error = _count
    on_tool_start = on_tool_end = on_tool_error = _count
    on_chat_model_start = on_llm_start = on_llm_end = on_llm_error = _count


def build_app() -> Any:
    """``create_agent`` on the scripted model with the one tool."""
    return importlib.import_module("langchain.agents").create_agent(ScriptedAgentModel(), [lookup])


def _cpu_s() -> float:  # as in bench.calls, which this process must not import (it loads Dask)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _GcClock:
    """Seconds the cyclic collector ran while it is installed in ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


async def _drive(app: Any, runs: int, concurrency: int, config: Any) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            out = await app.ainvoke({"messages": [("user", f"question {i}")]}, config(i))
            if not str(out["messages"][-1].content).startswith("found: "):
                raise RuntimeError(f"run {i} ended with {out['messages'][-1]!r}")

    await asyncio.gather(*(one(i) for i in range(runs)))


def measure(app: Any, runs: int, concurrency: int, config: Any) -> dict[str, float]:
    """One round: CPU, GC and wall time per call, and the objects the collector tracks."""
    gc.collect()  # what came before is not this round's to collect
    clock = _GcClock()
    gc.callbacks.append(clock)
    try:
        c0, t0 = _cpu_s(), time.perf_counter()
        asyncio.run(_drive(app, runs, concurrency, config))
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    finally:
        gc.callbacks.remove(clock)
    calls = runs * CALLS_PER_RUN
    frozen = gc.get_freeze_count()
    return {"cpu_per_call_us": cpu / calls * 1e6, "wall_s": wall, "gc_per_call_us": clock.seconds / calls * 1e6,
            "tracked_objects": len(gc.get_objects()) + frozen, "frozen_objects": frozen,
            "dask_loaded": float("distributed" in sys.modules)}


def run_round(spec: dict[str, Any]) -> dict[str, float]:
    """Warm up, then measure one round of ``spec["system"]``."""
    app, runs, concurrency = build_app(), int(spec["runs"]), int(spec["concurrency"])
    warm = max(1, runs // 10)
    if spec["system"].startswith("langgraph"):
        handler = NoOpHandler()
        plain = spec["system"] == "langgraph"

        def lg_config(i: int) -> Any:
            return {} if plain else {"callbacks": [handler]}

        measure(app, warm, concurrency, lg_config)
        handler.events = 0
        row = measure(app, runs, concurrency, lg_config)
        if not plain:
            row["callback_events"] = float(handler.events)
        return row
    nl = importlib.import_module("nalar_plugin")
    with nl.Runtime(**spec.get("runtime", {})) as rt:
        def config(i: int) -> Any:
            return {"callbacks": [rt.callback()]}

        measure(app, warm, concurrency, config)
        return measure(app, runs, concurrency, config)


if __name__ == "__main__":
    print(json.dumps(run_round(json.loads(sys.argv[1]))))
