"""provision/kill decisions go through the provisioner hook the simulated farm supplies."""

from __future__ import annotations

import time

import nalar_plugin as nl
from nalar_plugin.scheduler import Kill, Provision
from nalar_plugin.testing import EngineConfig, EngineFarm, FarmProvisioner


def test_provision_reassign_and_kill_through_the_farm() -> None:
    farm = EngineFarm({"chat": 2, "code": 1}, config=EngineConfig(time_scale=0.01, max_batch=2, warmup_s=20.0))
    with nl.Runtime(policy="fcfs") as rt:
        prov = FarmProvisioner(rt, farm, make_before_break=False)
        prov.deploy()
        # Re-assign an engine of chat to code: it costs the warm-up (20 model s = 0.2 s here).
        t0 = time.monotonic()
        rt.controller.apply(Provision("code", where="chat/1"))
        assert len(rt.plane.components["chat"]) == 1 and len(rt.plane.components["code"]) == 2
        assert len(prov.moves) == 1 and prov.moves[0][1:] == ("chat", "code")
        new = rt.plane.components["code"][-1]
        assert rt.plane.instances[new].ready_at >= t0 + 0.15
        with rt.session("x"):
            futs = [rt.call("code", "generate", 100, 10, session=f"x{i}") for i in range(4)]
        assert all(f.result().engine for f in futs)
        # A brand-new engine for chat, then kill it.
        rt.controller.apply(Provision("chat"))
        assert len(rt.plane.components["chat"]) == 2
        victim = rt.plane.components["chat"][-1]
        rt.controller.apply(Kill(victim))
        assert victim not in rt.plane.components["chat"]
        assert rt.call("chat", "generate", 100, 10).result().engine
