"""The built-in ``reallocate`` policy on hand-made snapshots: when it moves an instance, and when it keeps still."""

from __future__ import annotations

from nalar_plugin.scheduler import Provision
from nalar_plugin.scheduler.policies import ReallocatePolicy

from .._snapshots import snapshot


def _run(policy: ReallocatePolicy, ticks: range, loads: dict[str, list[int]], **kw: object) -> list[tuple[int, Provision]]:
    return [(t, d) for t in ticks for d in policy.decide(snapshot(t, loads, **kw))]  # type: ignore[arg-type]


def test_moves_the_idlest_instance_of_a_cold_component_to_the_hot_one() -> None:
    out = _run(ReallocatePolicy(cooldown_ticks=5, horizon_ticks=1), range(1, 3), {"chat": [1, 0, 2], "code": [6, 6]})
    assert out == [(1, Provision("code", where="chat/1"))]


def test_one_burst_does_not_move_an_instance_but_sustained_load_does() -> None:
    policy = ReallocatePolicy(cooldown_ticks=1, horizon_ticks=10)
    quiet, hot = {"chat": [0, 0, 0], "code": [1, 1]}, {"chat": [0, 0, 0], "code": [9, 9]}
    assert not _run(policy, range(1, 20), quiet)
    assert not _run(policy, range(20, 21), hot)  # one tick of queueing
    assert not _run(policy, range(21, 40), quiet)
    moved = _run(policy, range(40, 60), hot)
    assert moved and moved[0][1] == Provision("code", where="chat/0") and moved[0][0] > 40


def test_an_instance_warming_up_counts_as_capacity_at_once() -> None:
    policy = ReallocatePolicy(cooldown_ticks=1, horizon_ticks=1)
    # code/2 is warming up: 6 calls on 9 slots is under high, so nothing more moves.
    assert not _run(policy, range(1, 30), {"chat": [0, 0, 0], "code": [3, 3, 0]}, warming=frozenset({"code/2"}))
    # Load beyond what the warming instance adds asks for the next move, and the donor gives
    # an instance that is not itself warming up.
    out = _run(policy, range(30, 31), {"chat": [0, 0, 0], "code": [6, 6, 0]}, warming=frozenset({"code/2", "chat/0"}))
    assert out == [(30, Provision("code", where="chat/1"))]


def test_keeps_still_when_the_donor_would_become_hot_or_has_one_instance() -> None:
    policy = ReallocatePolicy(cooldown_ticks=1, horizon_ticks=1, low=0.6)
    # chat at 0.56 of its 9 slots would be at 0.83 with 6, still under high: it gives.
    assert _run(policy, range(1, 2), {"chat": [2, 2, 1], "code": [9]})
    # At 0.56 of 9 slots with 5 calls over two instances it would reach 5/3 > high: it keeps them.
    assert not _run(ReallocatePolicy(cooldown_ticks=1, horizon_ticks=1, low=0.9), range(1, 5), {"chat": [3, 2], "code": [9, 9]})
    assert not _run(ReallocatePolicy(cooldown_ticks=1, horizon_ticks=1), range(1, 5), {"chat": [0], "code": [9, 9]})


def test_cooldown_spaces_moves() -> None:
    out = _run(ReallocatePolicy(cooldown_ticks=10, horizon_ticks=1), range(1, 25), {"a": [0, 0, 0, 0], "b": [9, 9]})
    assert [t for t, _ in out] == [1, 11, 21]


def test_a_component_gets_no_more_than_its_share_of_the_load() -> None:
    # code carries 12 of 15 calls: its share is 4.8 of 6 instances, 1.8 more than it has.
    loads = {"chat": [1, 1, 1], "code": [4, 4, 4]}
    assert _run(ReallocatePolicy(cooldown_ticks=1, horizon_ticks=1), range(1, 2), loads) == [
        (1, Provision("code", where="chat/0"))]
    assert not _run(ReallocatePolicy(cooldown_ticks=1, horizon_ticks=1, margin=2.0), range(1, 5), loads)
    # Once the move is under way the new instance counts: 12 calls on 12 slots is not saturated.
    moved = {"chat": [1, 1], "code": [4, 4, 4, 0]}
    assert not _run(ReallocatePolicy(cooldown_ticks=1, horizon_ticks=1), range(1, 5), moved,
                    warming=frozenset({"code/3"}))


def test_a_steady_mix_at_its_split_moves_nothing_however_busy() -> None:
    policy = ReallocatePolicy(cooldown_ticks=1, horizon_ticks=20)
    for t in range(1, 200):  # bursts that come and go in both components, each at its share on average
        burst = 6 if t % 7 == 0 else 2
        assert not policy.decide(snapshot(t, {"a": [burst, 2, 2], "b": [2, burst, 2]}))
