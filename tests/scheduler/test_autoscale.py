"""Autoscaling: the ``autoscale`` policy, the farm's provisioners, and Dask's adaptive deployment.

The policy tests run a :class:`ControlPlane` and a :class:`GlobalController` with a
provisioner plugin that adds and removes instances of the plane; ticks carry a
snapshot time the test sets (0.1 s per tick), so cooldowns are exact. The farm
tests serve simulated engines with a small ``time_scale``; the Dask tests grow and
shrink a real embedded ``LocalCluster`` through ``cluster.adapt(Adaptive=NalarAdaptive)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from distributed import get_worker

import nalar_plugin as nl
from nalar_plugin.cluster import NalarAdaptive
from nalar_plugin.errors import ConfigError
from nalar_plugin.hookspecs import hookimpl
from nalar_plugin.plugins import PluginManager
from nalar_plugin.scheduler import Call, ControlPlane, GlobalController, Kill, LocalController, Provision
from nalar_plugin.scheduler.autoscale import AutoscalePolicy
from nalar_plugin.scheduler.compose import CompositePolicy, compose
from nalar_plugin.scheduler.policies import LeastLoadedPolicy
from nalar_plugin.testing import EngineConfig, EngineFarm, FarmProvisioner

from .test_local_controller import make_call

TICK_S = 0.1


class Running:
    """The dispatcher: admitted calls run until the test finishes them."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __call__(self, call: Call, ctl: LocalController) -> None:
        self.calls.append(call)


class PlaneProvisioner:
    """Adds an instance of the plane for ``Provision(c, None)``, removes one (drained) for ``Kill``."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    @hookimpl
    def nalar_provision(self, component: str, where: Any) -> str | None:
        iid: str = self.plane.add_instance(component)
        return iid

    @hookimpl
    def nalar_kill(self, instance: str) -> bool | None:
        self.plane.remove_instance(instance)
        return True


class Bench:
    """A plane with one component ``c`` (slots of 2), its global controller and the policy under test."""

    def __init__(self, policy: Any, instances: int = 2, max_instances: int | None = None) -> None:
        self.running = Running()
        self.plane = ControlPlane(self.running)
        self.plane.add_component("c", instances=instances, capacity=2, max_instances=max_instances)
        plugins = PluginManager(load_entrypoints=False)
        plugins.register(PlaneProvisioner(self.plane))
        self.gc = GlobalController(self.plane, policy, plugins=plugins)
        self.policy = policy
        self.ticks = 0
        self.decisions: list[tuple[int, Any]] = []
        self._n = 0

    def instances(self) -> int:
        return len(self.plane.components["c"])

    def load(self) -> int:
        return self.plane.snapshot().components["c"].load

    def hold(self, load: int) -> None:
        """Make the component's load (queued plus in flight) ``load``: finish or make calls."""
        while self.load() > load:
            self.plane.complete(self.running.calls.pop(0))
        while self.load() < load:
            self._n += 1
            self.plane.enqueue(make_call(f"k{self._n}", session=f"s{self._n}"))

    def tick(self, load: int | None = None) -> list[Any]:
        """One tick at 0.1 s per tick; every decision goes through the hooks."""
        if load is not None:
            self.hold(load)
        self.ticks += 1
        snap = replace(self.plane.snapshot(self.ticks), time=self.ticks * TICK_S)
        out = list(self.policy.decide(snap))
        for d in out:
            self.gc.apply(d)
            self.decisions.append((self.ticks, d))
        return out

    def run(self, ticks: int, load: int | Callable[[int], int] | None = None) -> None:
        for _ in range(ticks):
            self.tick(load(self.ticks) if callable(load) else load)


def test_saturated_for_hold_ticks_provisions_one_instance_and_not_before() -> None:
    b = Bench(AutoscalePolicy(hold_ticks=5, cooldown_s=0.0))
    # Two instances of two slots: 4 run, 4 wait, one waiting call per slot (up_queue 1.0).
    for _ in range(4):
        assert b.tick(8) == []
    assert b.tick(8) == [Provision("c", where=None)]
    assert b.instances() == 3
    # The new instance takes two of the waiting calls: 2 per 6 slots wait, not saturated.
    b.run(100, 8)
    assert [d for _, d in b.decisions] == [Provision("c", where=None)]


def test_no_provision_while_the_queue_stays_under_the_threshold_or_breaks_the_hold() -> None:
    b = Bench(AutoscalePolicy(hold_ticks=5, cooldown_s=0.0))
    b.run(50, 7)  # 3 waiting calls for 4 slots: under one per slot
    # Saturated every other tick: the hold never reaches 5 ticks in a row.
    b.run(50, lambda t: 8 if t % 2 else 7)
    assert b.decisions == [] and b.instances() == 2


def test_cooldown_keeps_a_second_change_away() -> None:
    b = Bench(AutoscalePolicy(hold_ticks=3, cooldown_s=10.05, max_instances=6))
    b.run(200, 40)  # far beyond every slot, 20 s of ticks
    ticks = [t for t, _ in b.decisions]
    # One change per cooldown at most: at tick 3 (0.3 s), then once 10.05 s have passed.
    assert ticks == [3, 104]
    assert all(isinstance(d, Provision) for _, d in b.decisions)


def test_max_instances_bounds_growth_the_policys_and_the_components() -> None:
    b = Bench(AutoscalePolicy(hold_ticks=2, cooldown_s=0.0, max_instances=4))
    b.run(100, 60)
    assert b.instances() == 4 and len(b.decisions) == 2
    # Without a bound of its own the policy takes twice the first count (4), and the
    # component's max_instances (3) bounds it too.
    b = Bench(AutoscalePolicy(hold_ticks=2, cooldown_s=0.0), max_instances=3)
    b.run(100, 60)
    assert b.instances() == 3 and len(b.decisions) == 1
    assert AutoscalePolicy(hold_ticks=2).bounds("c") is None
    assert b.policy.bounds("c") == (2, 4)


def test_idle_instances_are_killed_down_to_min_never_below() -> None:
    b = Bench(AutoscalePolicy(min_instances=2, down_idle_ticks=5, cooldown_s=0.0), instances=4)
    b.run(100, 0)
    kills = [d for _, d in b.decisions]
    assert all(isinstance(d, Kill) for d in kills) and len(kills) == 2 and b.instances() == 2
    # The newest idle instances go first.
    assert [d.instance for d in kills] == ["c/3", "c/2"]
    # Without min_instances the count at first sight is the floor: nothing goes.
    b = Bench(AutoscalePolicy(down_idle_ticks=5, cooldown_s=0.0), instances=3)
    b.run(100, 0)
    assert b.decisions == [] and b.instances() == 3


def test_a_busy_or_briefly_idle_instance_is_not_killed() -> None:
    b = Bench(AutoscalePolicy(min_instances=1, down_idle_ticks=10, cooldown_s=0.0), instances=2)
    # One call in flight, low for 9 ticks; a second call (no longer low); low for 9 ticks.
    b.run(9, 1)
    b.run(1, 2)
    b.run(9, 1)
    assert b.decisions == []
    b.run(20, 1)  # now idle long enough, and the one call fits in the slots that stay
    assert [type(d) for _, d in b.decisions] == [Kill] and b.instances() == 1


def test_no_flapping_on_a_load_at_the_threshold() -> None:
    b = Bench(AutoscalePolicy(hold_ticks=5, cooldown_s=0.0, down_idle_ticks=5, min_instances=1))
    # Exactly one waiting call per slot: saturated, so one instance is added; the same
    # load then sits between the thresholds (under 1 waiting per slot, over 0.3 busy),
    # and nothing changes again, up or down.
    b.run(500, 8)
    assert [d for _, d in b.decisions] == [Provision("c", where=None)]
    # Hovering at the low threshold: 2 calls for 6 slots (0.33) and 1 (0.17) in turn
    # never holds long enough to kill, nor is any instance idle that long.
    b = Bench(AutoscalePolicy(hold_ticks=5, cooldown_s=0.0, down_idle_ticks=5, min_instances=1), instances=3)
    b.run(300, lambda t: 2 if t % 2 else 1)
    assert b.decisions == []


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_instances"):
        AutoscalePolicy(min_instances=3, max_instances=2)
    with pytest.raises(ConfigError, match="down_util"):
        AutoscalePolicy(down_util=1.5)
    with pytest.raises(ConfigError, match="up_queue"):
        AutoscalePolicy(up_queue=0)


def test_autoscale_composes_by_name_with_arguments() -> None:
    combo = compose(PluginManager(), "least_loaded+autoscale:max_instances=3,hold_ticks=2,components=c|d")
    assert isinstance(combo, CompositePolicy)
    routing, scaling = combo.members
    assert isinstance(routing, LeastLoadedPolicy) and isinstance(scaling, AutoscalePolicy)
    assert scaling.max_instances == 3 and scaling.hold_ticks == 2 and scaling.components == {"c", "d"}
    b = Bench(combo)
    b.run(10, 30)
    assert [d for _, d in b.decisions] == [Provision("c", where=None)]


# -- the simulated farm ---------------------------------------------------------------


def _farm(pools: dict[str, int]) -> EngineFarm:
    return EngineFarm(pools, config=EngineConfig(time_scale=0.01, max_batch=2, warmup_s=20.0))


def test_farm_grows_under_a_burst_and_shrinks_after_idle_losing_no_call() -> None:
    farm = _farm({"chat": 1})
    policy = "least_loaded+autoscale:min_instances=1,max_instances=3,hold_ticks=3,down_idle_ticks=15"
    with nl.Runtime(policy=policy, tick_interval=0.02) as rt:
        prov = FarmProvisioner(rt, farm)
        prov.deploy()
        futs = []
        for i in range(40):
            with rt.session(f"s{i}"):
                futs.append(rt.call("chat", "generate", 400, 300))
        most = 1
        deadline = time.monotonic() + 25
        while not all(f.done() for f in futs) and time.monotonic() < deadline:
            most = max(most, len(rt.plane.components["chat"]))
            time.sleep(0.01)
        gens = [f.result(timeout=5) for f in futs]
        assert len(gens) == 40 and all(g.output_tokens == 300 for g in gens)
        assert most >= 2 and len(prov.provisions) >= 1
        # New engines served calls once warm.
        assert {g.engine for g in gens} - {"chat-0"}
        # Idle now: back to one instance, the engines that left killed.
        while len(rt.plane.components["chat"]) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(rt.plane.components["chat"]) == 1 and len(prov.kills) >= 1
        while len(farm) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(farm) == 1
        # Still serving.
        assert rt.call("chat", "generate", 50, 5).result(timeout=5).output_tokens == 5


def test_farm_kill_drains_the_instance_before_its_engine_goes() -> None:
    farm = _farm({"chat": 2})
    with nl.Runtime(policy="fcfs", tick_interval=0.05) as rt:
        prov = FarmProvisioner(rt, farm)
        prov.deploy(stateful=False)
        futs = [rt.call("chat", "generate", 400, 400) for _ in range(10)]
        deadline = time.monotonic() + 10
        while rt.plane.instances["chat/1"].in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        victim_engine = rt.plane.instances["chat/1"].address.name
        rt.controller.apply(Kill("chat/1"))
        assert "chat/1" not in rt.plane.components["chat"]
        assert victim_engine in farm  # its admitted calls still run on it
        results = [f.result(timeout=10) for f in futs]
        assert len(results) == 10 and all(r.output_tokens == 400 for r in results)
        while victim_engine in farm and time.monotonic() < deadline:
            time.sleep(0.01)
        assert victim_engine not in farm and prov.kills[0][1:] == (victim_engine, "chat")
        # The last instance is never removed.
        rt.controller.apply(Kill("chat/0"))
        assert rt.plane.components["chat"] == ["chat/0"]


# -- Dask's adaptive deployment --------------------------------------------------------


class Slow:
    """A factory-made component whose calls hold a worker slot for a while."""

    def work(self, x: int) -> tuple[int, str]:
        time.sleep(0.25)
        return x * 2, get_worker().address


def _workers(rt: nl.Runtime) -> int:
    return len(rt.cluster.scheduler_info["workers"])


def _wait(cond: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_adaptive_grows_for_a_factory_backlog_and_shrinks_back_to_minimum() -> None:
    policy = "least_loaded+autoscale:min_instances=1,max_instances=3,hold_ticks=2,cooldown_s=0.5,down_idle_ticks=10"
    with nl.Runtime(n_workers=1, worker_slots=2, policy=policy, tick_interval=0.05) as rt:
        rt.deploy("slow", Slow, n=1, capacity=2)
        adaptive = rt.cluster.adapt(Adaptive=NalarAdaptive, runtime=rt, minimum=1, maximum=3, interval="100ms",
                                    wait_count=5)
        assert isinstance(adaptive, NalarAdaptive)
        futs = [rt.call("slow", "work", i) for i in range(40)]
        most = 1
        hosts: set[str] = set()
        deadline = time.monotonic() + 25
        while not all(f.done() for f in futs) and time.monotonic() < deadline:
            most = max(most, _workers(rt))
            hosts |= set(rt.components.hosting("slow"))
            time.sleep(0.05)
        out = [f.result(timeout=5) for f in futs]
        assert [v for v, _ in out] == [2 * i for i in range(40)]
        # The cluster grew, and the new workers hosted new instances that served calls.
        assert most >= 2 and len(hosts) >= 2
        assert len({w for _, w in out}) >= 2
        # Idle: the policy removes instances down to one, then Dask retires the workers.
        assert _wait(lambda: len(rt.plane.components["slow"]) == 1 and _workers(rt) == 1, 25)
        assert adaptive.need() == 1
        assert rt.call("slow", "work", 21).result(timeout=10)[0] == 42


@nl.tool(name="crunch", max_concurrency=2, max_instances=3)
def crunch(x: int) -> tuple[int, str]:
    time.sleep(0.25)
    return x + 1, get_worker().address


def test_adaptive_spreads_function_calls_over_new_workers_and_loses_none_when_shrinking() -> None:
    policy = "least_loaded+autoscale:min_instances=1,hold_ticks=2,cooldown_s=0.3,down_idle_ticks=10"
    with nl.Runtime(n_workers=1, worker_slots=2, policy=policy, tick_interval=0.05) as rt:
        rt.cluster.adapt(Adaptive=NalarAdaptive, runtime=rt, minimum=1, maximum=3, interval="100ms", wait_count=5)
        futs = [crunch(i) for i in range(36)]
        late: list[Any] = []
        most = instances = 1
        while_shrinking = 0
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            workers = _workers(rt)
            most = max(most, workers)
            instances = max(instances, len(rt.plane.components["crunch"]))
            burst_done = all(f.done() for f in futs)
            if burst_done and workers == 1 and most >= 2:
                break
            # A trickle of calls the whole time, the shrink included.
            late.append(crunch(100 + len(late)))
            while_shrinking += burst_done and workers > 1
            time.sleep(0.2)
        out = [f.result(timeout=5) for f in futs]
        assert [v for v, _ in out] == [i + 1 for i in range(36)]
        # The tool got a second instance (twice its first count), and its calls ran on new workers.
        assert instances == 2 and most >= 2 and len({w for _, w in out}) >= 2
        # Back to one worker, and every call made while the workers left completed.
        assert _workers(rt) == 1 and while_shrinking >= 1
        assert [f.result(timeout=10)[0] for f in late] == [101 + i for i in range(len(late))]


def test_retiring_a_worker_that_hosts_an_instance_makes_it_again_elsewhere_first() -> None:
    with nl.Runtime(n_workers=2, worker_slots=2, policy="fcfs", tick_interval=0.05) as rt:
        ids = rt.deploy("slow", Slow, n=2, capacity=2)
        adaptive = rt.cluster.adapt(Adaptive=NalarAdaptive, runtime=rt, minimum=1, maximum=2, interval="100ms",
                                    wait_count=50)
        hosts = {iid: rt.instances("slow")[iid].worker for iid in ids}
        assert len(set(hosts.values())) == 2
        futs = [rt.call("slow", "work", i) for i in range(16)]
        leaving = hosts[ids[1]]
        name = rt.cluster.scheduler_info["workers"][leaving]["name"]
        while rt.plane.instances[ids[1]].in_flight == 0:
            time.sleep(0.01)
        rt.cluster.sync(adaptive.scale_down, [name])
        # The worker is gone; its instance was made again on the one that stays before it drained.
        assert leaving not in rt.cluster.scheduler_info["workers"]
        assert ids[1] not in rt.plane.components["slow"] and len(rt.plane.components["slow"]) == 2
        assert set(rt.components.hosting("slow")) == {hosts[ids[0]]}
        out = [f.result(timeout=10) for f in futs]
        assert [v for v, _ in out] == [2 * i for i in range(16)]
        assert {w for _, w in out} == {hosts[ids[0]], leaving}  # calls ran on both, none was lost
