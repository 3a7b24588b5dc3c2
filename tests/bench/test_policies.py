"""The benchmark's policies: compositions by name, and re-allocation that follows averaged load."""

from __future__ import annotations

from typing import Any

import pytest

import nalar_plugin as nl
from nalar_plugin.bench.policies import BenchPolicies, CompositePolicy, FollowDemandPolicy, make_policy
from nalar_plugin.errors import ConfigError
from nalar_plugin.scheduler import Provision, Snapshot

from .._snapshots import snapshot as _snapshot


def test_follow_demand_moves_one_engine_to_the_loaded_pool_and_waits_out_the_warmup() -> None:
    policy = FollowDemandPolicy(horizon_ticks=10, cooldown_ticks=50)
    hot = {"chat": [0, 0, 1], "code": [6, 6, 6]}
    decisions: list[tuple[int, Any]] = []
    for tick in range(1, 120):
        decisions += [(tick, d) for d in policy.decide(_snapshot(tick, hot))]
    # Nothing before the average covers a horizon; then one move per cooldown.
    assert [t for t, _ in decisions] == [10, 60, 110]
    assert all(d == Provision("code", where="chat/0") for _, d in decisions)


def test_follow_demand_waits_while_an_instance_warms_up() -> None:
    policy = FollowDemandPolicy(horizon_ticks=10, cooldown_ticks=1)
    hot = {"chat": [0, 0, 1], "code": [6, 6, 6]}
    assert not [d for tick in range(1, 40) for d in policy.decide(_snapshot(tick, hot, warming=frozenset({"code/2"})))]
    assert policy.decide(_snapshot(40, hot)) == [Provision("code", where="chat/0")]


def test_follow_demand_keeps_still_when_load_matches_the_split() -> None:
    policy = FollowDemandPolicy(horizon_ticks=5, cooldown_ticks=5)
    assert not [d for tick in range(1, 60) for d in policy.decide(_snapshot(tick, {"a": [2, 2], "b": [3, 3, 3]}))]
    # A lone instance is never given away, however idle.
    policy = FollowDemandPolicy(horizon_ticks=5, cooldown_ticks=5)
    assert not [d for tick in range(1, 60) for d in policy.decide(_snapshot(tick, {"a": [0], "b": [9, 9]}))]


def test_composite_takes_the_first_choice_and_every_decision() -> None:
    class Picks:
        def __init__(self, pick: Any, out: list[Any]) -> None:
            self.pick, self.out = pick, out

        def choose(self, component: str, candidates: Any) -> Any:
            return self.pick

        def decide(self, snapshot: Snapshot) -> list[Any]:
            return self.out

    both = CompositePolicy("a+b", [Picks(None, [1]), Picks("x", [2, 3])])
    assert both.choose("c", []) == "x"
    assert both.decide(_snapshot(1, {"a": [1]})) == [1, 2, 3]


def test_make_policy_builds_installed_policies_with_arguments() -> None:
    with nl.Runtime(policy="fcfs") as rt:
        rt.register_plugin(BenchPolicies(), name="bench-policies")
        single = make_policy(rt, "las")
        assert single.name == "las"
        combo = make_policy(rt, "least_loaded+reallocate:cooldown_ticks=300,high=1.5+follow_demand:margin=0.5")
        assert isinstance(combo, CompositePolicy) and combo.name.startswith("least_loaded+")
        realloc, follow = combo.members[1], combo.members[2]
        assert realloc.cooldown_ticks == 300 and realloc.high == 1.5 and follow.margin == 0.5
        with pytest.raises(ConfigError, match="not key=value"):
            make_policy(rt, "reallocate:300")
