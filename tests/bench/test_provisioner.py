"""Re-allocation of chat-model components: an engine moves to another agent type."""

from __future__ import annotations

import asyncio
import time

from langchain_core.messages import HumanMessage

import nalar_plugin as nl
from nalar_plugin.bench.deploy import Deployment, ModelProvisioner, StaticRouter
from nalar_plugin.bench.trace import ModelStep, TraceBook
from nalar_plugin.scheduler import Kill, Provision
from nalar_plugin.testing import EngineConfig


def _deployment() -> Deployment:
    book = TraceBook()
    for i in range(4):
        book.add(ModelStep(f"c{i}", "coder", 200, 20, None, 0, content=f"patch {i}"))
    config = EngineConfig(max_batch=2, time_scale=0.01, warmup_s=5.0)
    return Deployment(book, {"chat": 2, "coder": 1}, config, frozenset(), (), seed=0)


def test_static_router_round_robins_and_keeps_stateful_sessions_on_one_engine() -> None:
    dep = _deployment()
    stateless = StaticRouter(dep.router._models, frozenset())
    assert {stateless.pick("chat").model_name for _ in range(4)} == {"chat@chat-0", "chat@chat-1"}
    sticky = StaticRouter(dep.router._models, frozenset({"chat"}))
    first = sticky.pick("chat", "s1")
    assert all(sticky.pick("chat", "s1") is first for _ in range(3))
    assert sticky.pick("chat", "s2") is not first


def test_provision_moves_an_engine_and_its_calls_run_there_after_the_warmup() -> None:
    dep = _deployment()
    with nl.Runtime(policy="fcfs") as rt:
        prov = ModelProvisioner(rt, dep, make_before_break=False)
        prov.deploy(capacity=2)
        assert len(rt.plane.components["chat"]) == 2 and len(rt.plane.components["coder"]) == 1
        donor = rt.plane.components["chat"][1]
        rt.controller.apply(Provision("coder", where=donor))
        assert len(rt.plane.components["chat"]) == 1 and len(rt.plane.components["coder"]) == 2
        assert prov.moves == [("chat-1", "chat", "coder")] and dep.farm.pools()["coder"] == ["coder-0", "chat-1"]
        # The new instance names the one it was moved from, so a policy can follow the engine.
        moved = rt.plane.snapshot().components["coder"].instances[rt.plane.components["coder"][1]]
        assert moved.moved_from == donor
        assert rt.plane.snapshot().components["coder"].instances[rt.plane.components["coder"][0]].moved_from is None
        # The app still holds only the coder model it started with; nalar spreads its calls
        # over both coder instances, the moved engine included.
        model = dep.router.pick("coder")
        cb = rt.callback()

        async def calls() -> list[str]:
            # Calls sent now would all wait for the warm-up, then take whichever slot frees first.
            await asyncio.sleep(max(0.0, dep.farm.engine("chat-1").ready_at - time.monotonic()))
            out = await asyncio.gather(*[model.ainvoke([HumanMessage("go")], {"callbacks": [cb]}, trace_key=f"c{i}")
                                         for i in range(4)])
            return [m.response_metadata["model_name"] for m in out]

        engines = asyncio.run(calls())
        assert set(engines) == {"coder-0", "chat-1"}
        # The last chat instance is never given away.
        rt.controller.apply(Provision("coder", where=rt.plane.components["chat"][0]))
        assert len(rt.plane.components["chat"]) == 1


def test_provision_without_a_donor_grows_the_farm_and_kill_retires_the_engine() -> None:
    dep = _deployment()
    with nl.Runtime(policy="fcfs") as rt:
        prov = ModelProvisioner(rt, dep, max_engines=4)
        prov.deploy(capacity=2)
        (first,) = rt.plane.components["coder"]
        rt.controller.apply(Provision("coder", where=None))
        assert len(rt.plane.components["coder"]) == 2 and len(dep.farm) == 4
        new = rt.plane.components["coder"][-1]
        assert [p[1:] for p in prov.provisions] == [("coder-1", "coder")]
        assert rt.plane.snapshot().components["coder"].instances[new].warming
        # The farm's bound: a fifth engine is refused.
        rt.controller.apply(Provision("chat", where=None))
        assert len(rt.plane.components["chat"]) == 2 and len(dep.farm) == 4
        model = dep.router.pick("coder")
        cb = rt.callback()

        async def calls() -> list[str]:
            await asyncio.sleep(max(0.0, dep.farm.engine("coder-1").ready_at - time.monotonic()))
            out = await asyncio.gather(*[model.ainvoke([HumanMessage("go")], {"callbacks": [cb]}, trace_key=f"c{i}")
                                         for i in range(4)])
            return [m.response_metadata["model_name"] for m in out]

        assert set(asyncio.run(calls())) == {"coder-0", "coder-1"}
        # Removing the new instance retires its engine (nothing in flight: at once).
        rt.controller.apply(Kill(new))
        assert rt.plane.components["coder"] == [first] and "coder-1" not in dep.farm
        assert [k[1:] for k in prov.kills] == [("coder-1", "coder")]
        # The last instance of an agent type stays.
        rt.controller.apply(Kill(first))
        assert rt.plane.components["coder"] == [first]
