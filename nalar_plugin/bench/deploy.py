"""The engines, chat models and tools of one benchmark run, the same for every system.

A :class:`Deployment` holds the simulated engine farm, split into one pool per
agent type in proportion to demand, and one :class:`TraceChatModel` per (agent
type, engine) pair: any engine can serve any agent type once re-assigned to it.
The app picks its model through a :class:`StaticRouter` (the client-side router
users write today: round robin for stateless agents, sticky per session for
stateful ones). Under nalar the same model objects are declared as components
(``rt.deploy_model``), so the controllers choose the instance of every call
whatever the app picked, and :class:`ModelProvisioner` carries out re-allocation
by moving an engine from one agent type to another, and autoscaling by adding a
new engine to an agent type and by removing one (drained first).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata
from langchain_core.messages.tool import ToolCall
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict

from ..hookspecs import hookimpl
from ..testing import EngineConfig, EngineFarm, Generation, PendingMoves, SimulatedChatModel
from .trace import ModelStep, Shared, TraceBook

__all__ = ["Deployment", "Ledger", "ModelProvisioner", "StaticRouter", "TraceChatModel", "TraceTool"]

logger = logging.getLogger(__name__)


class Ledger(Shared):
    """Every generation of a run (thread-safe), for the time breakdown of the report."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.generations: list[Generation] = []
        self.tool_calls = 0

    def add(self, gen: Generation) -> None:
        with self._lock:
            self.generations.append(gen)

    def tool(self) -> None:
        with self._lock:
            self.tool_calls += 1


def _answer(step: ModelStep) -> AIMessage:
    calls = [ToolCall(name=name, args={"key": key}, id=call_id, type="tool_call") for name, key, call_id in step.tool_calls]
    return AIMessage(content=step.content, tool_calls=calls)


def _result(step: ModelStep, gen: Generation) -> ChatResult:
    message = _answer(step)
    message.usage_metadata = UsageMetadata(
        input_tokens=gen.prompt_tokens, output_tokens=gen.output_tokens,
        total_tokens=gen.prompt_tokens + gen.output_tokens,
        input_token_details=InputTokenDetails(cache_read=gen.cached_tokens),
    )
    message.response_metadata = {"model_name": gen.engine, "nalar_generation": gen._asdict()}
    return ChatResult(generations=[ChatGeneration(message=message)], llm_output={"model_name": gen.engine})


class TraceChatModel(SimulatedChatModel):
    """A simulated chat model whose answer and token counts come from the trace.

    The app passes the call's trace key (``model.ainvoke(messages, trace_key=...)``):
    the trace plays the LLM's part (its answer decides the control flow) and fixes
    the tokens the engine reads and writes, so every system does the same work.
    A call without a key behaves as a plain :class:`SimulatedChatModel`.
    """

    book: Any = None
    """The :class:`~nalar_plugin.bench.trace.TraceBook` of the run."""
    ledger: Any = None
    """A :class:`Ledger` that records every generation, or ``None``."""

    def _step(self, kwargs: Mapping[str, Any]) -> ModelStep | None:
        key = kwargs.get("trace_key")
        return None if key is None else self.book.model(key)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        step = self._step(kwargs)
        if step is None:
            return super()._generate(messages, stop, run_manager, **kwargs)
        gen = self.engine.generate_sync(step.prompt, step.output, step.session)
        if self.ledger is not None:
            self.ledger.add(gen)
        return _result(step, gen)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        step = self._step(kwargs)
        if step is None:
            return await super()._agenerate(messages, stop, run_manager, **kwargs)
        gen = await self.engine.generate(step.prompt, step.output, step.session)
        if self.ledger is not None:
            self.ledger.add(gen)
        return _result(step, gen)


class _ToolArgs(BaseModel):
    key: str


class TraceTool(BaseTool):
    """A tool whose latency and result come from the trace (the model's tool call names the step)."""

    args_schema: type[BaseModel] = _ToolArgs
    book: Any = None
    time_scale: float = 1.0
    ledger: Any = None

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _run(self, key: str, run_manager: CallbackManagerForToolRun | None = None) -> str:
        step = self.book.tool(key)
        time.sleep(step.latency_s * self.time_scale)
        if self.ledger is not None:
            self.ledger.tool()
        return str(step.content)

    async def _arun(self, key: str, run_manager: AsyncCallbackManagerForToolRun | None = None) -> str:
        step = self.book.tool(key)
        await asyncio.sleep(step.latency_s * self.time_scale)
        if self.ledger is not None:
            self.ledger.tool()
        return str(step.content)


class StaticRouter:
    """The app's client-side router: round robin, sticky per session for stateful agents.

    It only knows the engines each agent type had at the start (the static split).
    """

    def __init__(self, models: Mapping[str, Sequence[TraceChatModel]], stateful: frozenset[str]) -> None:
        self._models = {a: list(ms) for a, ms in models.items()}
        self._stateful = stateful
        self._rr = {a: itertools.count() for a in models}
        self._sticky: dict[tuple[str, str], TraceChatModel] = {}
        self._lock = threading.Lock()

    def pick(self, agent: str, session: str | None = None) -> TraceChatModel:
        """The model (engine) the app sends this call to."""
        with self._lock:
            if agent in self._stateful and session is not None:
                hit = self._sticky.get((agent, session))
                if hit is None:
                    models = self._models[agent]
                    hit = self._sticky[(agent, session)] = models[next(self._rr[agent]) % len(models)]
                return hit
            models = self._models[agent]
            return models[next(self._rr[agent]) % len(models)]


class Deployment:
    """The farm, the chat models and the tools of one run.

    Args:
        book: The trace's steps.
        pools: Engines per agent type at the start.
        config: The engine model.
        stateful: Agent types whose sessions keep their engine.
        tools: Tool names of the workload.
        seed: Seed of the farm.
    """

    def __init__(self, book: TraceBook, pools: Mapping[str, int], config: EngineConfig, stateful: frozenset[str],
                 tools: Sequence[str], seed: int) -> None:
        self.book = book
        self.config = config
        self.stateful = stateful
        self.ledger = Ledger()
        self.farm = EngineFarm(dict(pools), config=config, seed=seed)
        self.initial = self.farm.pools()
        engines = [e for names in self.initial.values() for e in names]
        # One model object per (agent type, engine): an engine re-assigned to another
        # agent type serves it through that type's model object.
        self.models: dict[str, dict[str, TraceChatModel]] = {
            agent: {name: TraceChatModel(engine=self.farm.engine(name), book=book, ledger=self.ledger,
                                         model_name=f"{agent}@{name}") for name in engines}
            for agent in pools
        }
        self.router = StaticRouter({a: [self.models[a][n] for n in self.initial[a]] for a in pools}, stateful)
        self.tools = {name: TraceTool(name=name, description=f"the {name} tool of the trace", book=book,
                                      time_scale=config.time_scale, ledger=self.ledger) for name in tools}

    def busy_s(self) -> dict[str, float]:
        """Model seconds each engine was busy."""
        return {name: m.busy_s for name, m in self.farm.metrics().items()}


class ModelProvisioner:
    """Carries out ``provision`` decisions for chat-model components by re-assigning an engine.

    Every (agent type, engine) model is declared with ``rt.deploy_model``; the
    instances of engines outside an agent type's initial pool are withdrawn at
    once and kept aside, so moving an engine to another agent type re-adds the
    instance that type already has for it, after the farm's warm-up.

    Moves are make-before-break by default (``nalar.make-before-break``; see
    :mod:`nalar_plugin.testing.provisioner`): the engine keeps serving its old
    agent type while it warms up for the new one, then leaves it.

    ``Provision(agent, where=None)`` (the ``autoscale`` policy's) grows the farm: a
    new engine in the agent type's pool, with its model object, joins the component
    as one more instance once warm. ``Kill(instance)`` withdraws the instance; its
    admitted calls finish (it drains), then its engine is killed, so its engine time
    stops counting and no call is lost.

    Args:
        rt: The Runtime.
        deployment: The run's deployment.
        make_before_break: Override ``nalar.make-before-break``.
        max_engines: The farm grows to at most this many live engines (``None``: as
            many as the policy asks for).
    """

    def __init__(self, rt: Any, deployment: Deployment, *, make_before_break: bool | None = None,
                 max_engines: int | None = None) -> None:
        self.rt = rt
        self.dep = deployment
        self._endpoints: dict[tuple[str, str], Any] = {}  # (agent type, engine) -> instance address
        self._engine_of: dict[str, str] = {}  # instance id -> engine name
        self.moves: list[tuple[str, str, str]] = []  # (engine, from agent type, to agent type)
        self.move_times: list[float] = []  # wall time of each move
        self.provisions: list[tuple[float, str, str]] = []  # (wall time, engine, agent type): new engines
        self.kills: list[tuple[float, str, str]] = []  # (wall time, engine, agent type): engines removed
        self.max_engines = max_engines
        self.capacity: int | None = None
        self.make_before_break = bool(rt.config.get("make-before-break", True) if make_before_break is None
                                      else make_before_break)
        self.pending = PendingMoves()

    @property
    def move_cost_s(self) -> float:
        """Wall seconds a move costs: the farm's warm-up."""
        return float(self.dep.config.warmup_s * self.dep.config.time_scale)

    def deploy(self, capacity: int | None, *, slo_s: float | None = None) -> None:
        """Declare every agent type as a model component (``capacity`` calls admitted per instance).

        Args:
            capacity: Calls admitted per instance at once.
            slo_s: Each component's admission SLO per call, wall seconds (``None``: none).
        """
        plane = self.rt.plane
        self.capacity = capacity
        for agent, by_engine in self.dep.models.items():
            names = list(by_engine)
            ids = self.rt.deploy_model(agent, [by_engine[n] for n in names], capacity=capacity,
                                       stateful=agent in self.dep.stateful, slo_s=slo_s)
            addresses = self.rt.instances(agent)
            for iid, name in zip(ids, names):
                self._endpoints[(agent, name)] = addresses[iid]
                if name in self.dep.initial[agent]:
                    self._engine_of[iid] = name
                    plane.set_move_cost(iid, self.move_cost_s)
                else:
                    plane.remove_instance(iid)
        self.rt.register_plugin(self, name="nalar-bench-model-provisioner")

    def _address(self, agent: str, name: str) -> Any:
        """The instance address of engine ``name`` serving ``agent`` (its model object made if new)."""
        address = self._endpoints.get((agent, name))
        if address is None:
            model = self.dep.models[agent].get(name)
            if model is None:
                model = self.dep.models[agent][name] = TraceChatModel(
                    engine=self.dep.farm.engine(name), book=self.dep.book, ledger=self.dep.ledger,
                    model_name=f"{agent}@{name}")
            address = self._endpoints[(agent, name)] = self.rt.components.endpoint(
                agent, model, len(self.dep.models[agent]) - 1)
        return address

    def _grow(self, agent: str) -> str | None:
        """A new engine for ``agent``: it warms up, then serves as one more instance."""
        if self.max_engines is not None and len(self.dep.farm) >= self.max_engines:
            logger.info("not adding an engine to %s: the farm has %d engines, its bound", agent, len(self.dep.farm))
            return None
        engine = self.dep.farm.provision(agent)
        address = self._address(agent, engine.name)
        plane = self.rt.plane
        iid: str = plane.add_instance(agent, self.capacity, address=address,
                                      ready_at=max(time.monotonic(), engine.ready_at))
        plane.set_ready_at(iid, max(time.monotonic(), engine.ready_at))
        plane.set_move_cost(iid, self.move_cost_s)
        self._engine_of[iid] = engine.name
        self.provisions.append((time.monotonic(), engine.name, agent))
        logger.info("added engine %s to %s", engine.name, agent)
        return iid

    @hookimpl
    def nalar_provision(self, component: str, where: Any) -> str | None:
        """Move the engine of instance ``where`` to ``component`` (after a warm-up), or add a new one (``None``)."""
        plane = self.rt.plane
        if component in self.dep.models and where is None:
            return self._grow(component)
        if component not in self.dep.models or not isinstance(where, str) or where not in self._engine_of:
            return None
        ctl = plane.instances[where]
        old = ctl.component
        if len(plane.components.get(old, [])) <= 1:
            return None
        if ctl.draining or ctl.moving_to is not None or self.pending.involves(where):
            return None  # already moving
        if self.make_before_break:
            return self._make(where, old, component)
        name = self._engine_of.pop(where)
        plane.remove_instance(where)
        engine = self.dep.farm.reassign(name, component)
        iid: str = plane.add_instance(component, self.capacity, address=self._address(component, name))
        self._engine_of[iid] = name
        plane.set_ready_at(iid, max(time.monotonic(), engine.ready_at))
        plane.set_move_cost(iid, self.move_cost_s)
        self.moves.append((name, old, component))
        self.move_times.append(time.monotonic())
        logger.info("moved engine %s from %s to %s", name, old, component)
        return iid

    def _make(self, where: str, old: str, component: str) -> str:
        """Start a make-before-break move of the engine of ``where`` to ``component``."""
        plane = self.rt.plane
        name = self._engine_of[where]
        warm = self.move_cost_s
        iid: str = plane.add_instance(component, self.capacity, address=self._address(component, name))
        plane.set_ready_at(iid, time.monotonic() + warm)
        plane.set_move_cost(iid, warm)
        plane.mark_moving(where, component)
        self._engine_of[iid] = name
        self.moves.append((name, old, component))
        self.move_times.append(time.monotonic())
        logger.info("moving engine %s from %s to %s (make before break)", name, old, component)

        def brk() -> bool:
            if where in plane.components.get(old, []) and (len(plane.components[old]) <= 1 or plane.queued(old)):
                # The old agent type is queueing now (or has nothing else): the move is given up.
                plane.mark_moving(where, None)
                self._engine_of.pop(iid, None)
                plane.remove_instance(iid)
                logger.info("gave up moving engine %s: %s cannot spare it now", name, old)
                return False
            self._engine_of.pop(where, None)
            if where in plane.instances:
                plane.remove_instance(where)
            engine = self.dep.farm.reassign(name, component, warmup_s=0.0)
            plane.set_ready_at(iid, max(time.monotonic(), engine.ready_at))  # once its old calls drain
            return True

        self.pending.start(where, iid, warm, brk)
        return iid

    @hookimpl
    def nalar_kill(self, instance: str) -> bool | None:
        """Withdraw ``instance``; once its admitted calls finish, its engine is killed.

        The last instance of an agent type, and one in a pending move, stay (``False``).
        """
        if instance not in self._engine_of:
            return None
        plane = self.rt.plane
        ctl = plane.instances.get(instance)
        if ctl is None or ctl.draining or ctl.moving_to is not None or self.pending.involves(instance):
            return False
        if len(plane.components.get(ctl.component, [])) <= 1:
            return False
        name = self._engine_of.pop(instance)
        self.kills.append((time.monotonic(), name, ctl.component))
        plane.remove_instance(instance, on_drained=lambda: self._retire(name))
        return True

    def _retire(self, engine: str) -> None:
        """Kill an engine whose instance has drained (unless another instance took it meanwhile)."""
        if engine in self.dep.farm and engine not in self._engine_of.values():
            self.dep.farm.kill(engine)

    @hookimpl
    def nalar_runtime_closing(self, runtime: Any) -> None:
        """Forget the moves still pending."""
        if runtime is self.rt:
            self.pending.cancel_all()
