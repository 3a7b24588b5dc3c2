"""Simulated LLM engine farm for tests and benchmarks on CPU-only machines.

Models LLM replicas with continuous batching, FCFS queues and per-engine prefix
caches, so that schedulers see real contention without a GPU:

* :class:`SimulatedEngine` / :class:`EngineConfig` - one replica and its
  performance model; :class:`Generation` and :class:`EngineMetrics` report on it.
* :class:`EngineFarm` - engines in pools per agent type, with reassign,
  provision and kill.
* :class:`TokenSampler` - seeded, heavy-tailed prompt/output lengths.
* :class:`SimulatedChatModel` - a LangChain chat model with scripted answers
  whose latency comes from an engine (in-process or over HTTP).
* :class:`EngineServer` - an OpenAI-compatible HTTP server over an engine or farm.
"""

from __future__ import annotations

from nalar_plugin.testing.chat_model import SimulatedChatModel
from nalar_plugin.testing.engine import SimulatedEngine
from nalar_plugin.testing.farm import EngineFarm
from nalar_plugin.testing.provisioner import FarmProvisioner, PendingMoves
from nalar_plugin.testing.records import EngineConfig, EngineMetrics, Generation
from nalar_plugin.testing.sampling import TRACE_SHAPES, TokenSampler, TraceShape
from nalar_plugin.testing.script import Script, ScriptEntry, scripted_response
from nalar_plugin.testing.server import EngineServer

__all__ = [
    "EngineConfig",
    "EngineFarm",
    "EngineMetrics",
    "EngineServer",
    "FarmProvisioner",
    "Generation",
    "PendingMoves",
    "Script",
    "ScriptEntry",
    "SimulatedChatModel",
    "SimulatedEngine",
    "TRACE_SHAPES",
    "TokenSampler",
    "TraceShape",
    "scripted_response",
]
