"""The built-in ``reallocate`` policy on hand-made snapshots: its share rule (the guard off; see test_guard.py)."""

from __future__ import annotations

from collections.abc import Iterable

from nalar_plugin.scheduler import Provision
from nalar_plugin.scheduler.policies import ReallocatePolicy

from .._snapshots import snapshot


class Farm:
    """Snapshots over time: each instance completes calls of one second at a given rate per tick."""

    def __init__(self, policy: ReallocatePolicy) -> None:
        self.policy = policy
        self.done: dict[str, int] = {}
        self.tick = 0

    def run(self, ticks: int, loads: dict[str, list[int]], rates: dict[str, int],
            warming: Iterable[str] = ()) -> list[tuple[int, Provision]]:
        """``ticks`` ticks at ``loads``; every instance of component ``c`` completes ``rates[c]`` calls a tick."""
        out = []
        for _ in range(ticks):
            self.tick += 1
            for comp, ls in loads.items():
                for i in range(len(ls)):
                    key = f"{comp}/{i}"
                    self.done[key] = self.done.get(key, 0) + rates.get(comp, 0)
            snap = snapshot(self.tick, loads, warming=frozenset(warming), completed=self.done)
            out += [(self.tick, d) for d in self.policy.decide(snap)]
        return out


def test_moves_an_instance_to_the_saturated_component_whose_demand_outgrew_its_share() -> None:
    farm = Farm(ReallocatePolicy(guard=False, cooldown_ticks=5, horizon_ticks=1))
    # code's three slots are full and calls queue; chat's instances are nearly idle.
    out = farm.run(2, {"chat": [1, 0, 1], "code": [6, 6]}, {"chat": 1, "code": 3})
    assert out == [(1, Provision("code", where="chat/1"))]


def test_nothing_moves_before_a_call_completed_then_an_idle_component_gives() -> None:
    farm = Farm(ReallocatePolicy(guard=False, cooldown_ticks=1, horizon_ticks=1))
    assert not farm.run(5, {"chat": [0, 0, 0], "code": [9, 9]}, {})  # queues alone tell no demand
    assert farm.run(1, {"chat": [0, 0, 0], "code": [9, 9]}, {"code": 3}) == [(6, Provision("code", where="chat/0"))]


def test_one_burst_does_not_move_an_instance_but_sustained_load_does() -> None:
    farm = Farm(ReallocatePolicy(guard=False, cooldown_ticks=1, horizon_ticks=10))
    quiet, hot = {"chat": [1, 1, 1], "code": [1, 1]}, {"chat": [1, 1, 1], "code": [9, 9]}
    rates = {"chat": 1, "code": 3}
    assert not farm.run(20, quiet, rates)
    assert not farm.run(1, hot, rates)  # one tick of queueing
    assert not farm.run(20, quiet, rates)
    moved = farm.run(20, hot, {"chat": 1, "code": 3})
    assert moved and moved[0][1] == Provision("code", where="chat/0") and moved[0][0] > 42


def test_an_instance_warming_up_counts_as_capacity_at_once() -> None:
    farm = Farm(ReallocatePolicy(guard=False, cooldown_ticks=1, horizon_ticks=1))
    rates = {"chat": 1, "code": 3}
    farm.run(1, {"chat": [1, 1, 1], "code": [3, 3, 0]}, rates)
    # code/2 is warming up: 6 calls on 9 slots is not saturated, so nothing more moves.
    assert not farm.run(20, {"chat": [1, 1, 1], "code": [3, 3, 0]}, rates, warming={"code/2"})
    # Load beyond what it adds asks for the next move, from an instance not itself warming up.
    out = farm.run(1, {"chat": [1, 1, 1], "code": [8, 8, 0]}, rates, warming={"code/2", "chat/0"})
    assert out == [(22, Provision("code", where="chat/1"))]


def test_shares_follow_arriving_work_not_queues() -> None:
    # Work arrives at both components in proportion to their instances; code's queue is long
    # (a backlog passing down a pipeline), but code already has its share: nothing moves.
    farm = Farm(ReallocatePolicy(guard=False, cooldown_ticks=1, horizon_ticks=1))
    assert not farm.run(30, {"chat": [0, 0, 0], "code": [9, 9, 9]}, {"chat": 3, "code": 3})


def test_a_component_gets_no_more_than_its_share_of_the_demand() -> None:
    rates = {"chat": 1, "code": 4}  # code: 12 s of work a tick on 3 instances, chat 3 s on 3
    assert Farm(ReallocatePolicy(guard=False, cooldown_ticks=1, horizon_ticks=1)).run(
        1, {"chat": [1, 1, 1], "code": [4, 4, 4]}, rates) == [(1, Provision("code", where="chat/0"))]
    # Its share is 4.8 of 6 instances: with a margin of two instances, nothing moves.
    assert not Farm(ReallocatePolicy(guard=False, cooldown_ticks=1, horizon_ticks=1, margin=2.0)).run(
        5, {"chat": [1, 1, 1], "code": [4, 4, 4]}, rates)


def test_keeps_still_when_the_donor_would_become_hot_or_has_one_instance() -> None:
    rates = {"chat": 1, "code": 6}
    # chat at 5 calls on 6 slots would be at 5/3 without an instance: it keeps both.
    assert not Farm(ReallocatePolicy(guard=False, cooldown_ticks=1, horizon_ticks=1, low=0.9)).run(
        5, {"chat": [3, 2], "code": [9, 9]}, rates)
    assert not Farm(ReallocatePolicy(guard=False, cooldown_ticks=1, horizon_ticks=1)).run(5, {"chat": [0], "code": [9, 9]}, rates)


def test_cooldown_spaces_moves() -> None:
    farm = Farm(ReallocatePolicy(guard=False, cooldown_ticks=10, horizon_ticks=1))
    out = farm.run(25, {"a": [1, 0, 0, 0, 0, 0], "b": [9, 9]}, {"a": 1, "b": 3})
    assert [t for t, _ in out] == [1, 11, 21]


def test_a_steady_mix_at_its_split_moves_nothing_however_busy() -> None:
    farm = Farm(ReallocatePolicy(guard=False, cooldown_ticks=1, horizon_ticks=20))
    for t in range(200):  # bursts come and go in both components, each at its share on average
        burst = 9 if t % 7 == 0 else 2
        assert not farm.run(1, {"a": [burst, 2, 2], "b": [2, burst, 2]}, {"a": 2, "b": 2})


def test_by_default_an_instance_moves_only_for_a_whole_instance_of_shortfall() -> None:
    # a gets 9 s of work a tick and b 6: shares 3.6 and 2.4 of 6 instances. Moving one
    # would leave a 0.4 over its share and b 0.6 under: the next burst would send it back.
    loads, rates = {"a": [6, 6, 6], "b": [0, 1, 0]}, {"a": 3, "b": 2}
    assert not Farm(ReallocatePolicy(guard=False, cooldown_ticks=1, horizon_ticks=1)).run(10, loads, rates)
    assert Farm(ReallocatePolicy(guard=False, cooldown_ticks=1, horizon_ticks=1, margin=0.5)).run(1, loads, rates) == [
        (1, Provision("a", where="b/0"))]
