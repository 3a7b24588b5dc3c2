"""The never-worse guard of ``reallocate`` (and so of ``nalar``), on hand-made snapshots.

Each tick is 0.1 s of snapshot time. ``code`` and ``chat`` have instances of two
slots; every call takes one second of service. The guard moves an instance only
when the taker queues, the giver has room to spare, the queued work the move
would serve beats its warm-up, the call for it holds for ``hold_ticks`` ticks, it
is not a move back within the backoff, and the budget allows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dask.config

from nalar_plugin.scheduler import ComponentStats, InstanceStats, Provision, Snapshot
from nalar_plugin.scheduler.policies import NalarPolicy, ReallocatePolicy

TICK = 1.0
COST = 30.0  # wall seconds a move costs: 30 ticks


@dataclass
class Pool:
    """One component: instances of two slots, each call one second of service.

    ``rate`` calls (and ``sessions`` new sessions) arrive per second; its instances
    complete ``done`` calls per second in all (a multiple of ``n``, so every tick
    sees the same; a pool completing none takes the other pools' service per call);
    ``queued`` calls wait per instance.
    """

    n: int
    rate: float
    done: float
    queued: int = 0
    in_flight: int = 2
    sessions: float | None = None  # new sessions per second (default: one per call)
    cost: float | None = COST  # what the provisioner declares a move of its instances costs
    moving: dict[int, str] = field(default_factory=dict)  # instance index -> component it moves to


class World:
    """Cumulative counters per component, advanced one tick per :meth:`step`.

    With ``follow``, an instance the policy moves shows as moving (make before
    break, never breaking) in the snapshots after; with ``relocate`` it is in its new
    component from the next snapshot (keeping its name), and serves that
    component's calls; else the topology stays as given, and a moved instance still
    there and not moving reads as a move given up.
    """

    def __init__(self, policy: ReallocatePolicy, history: dict[str, tuple[float, float]] | None = None, *,
                 follow: bool = False, relocate: bool = False, rename: bool = False) -> None:
        self.policy = policy
        self.follow = follow
        self.relocate = relocate  # a moved instance joins its new component at once (break before make)
        self.tick = 0
        self.arrived: dict[str, float] = {k: v[0] for k, v in (history or {}).items()}
        self.sessions: dict[str, float] = {k: v[1] for k, v in (history or {}).items()}
        self.done: dict[str, float] = {}  # instance -> calls it completed
        self.moving: dict[str, str] = {}
        self.placed: dict[str, str] = {}  # instance -> the component it is in, when not its first
        self.rename = rename  # a move makes a new instance (a new name), as a provisioner's does
        self.names: dict[str, tuple[str, str]] = {}  # first name -> (name now, the name it was moved from)

    def step(self, pools: dict[str, Pool]) -> list[Provision]:
        self.tick += 1
        members: dict[str, list[tuple[str, int]]] = {name: [] for name in pools}
        for name, p in pools.items():
            for i in range(p.n):
                members[self.placed.get(f"{name}/{i}", name)].append((name, i))
        comps = {}
        for name, p in pools.items():
            self.arrived[name] = self.arrived.get(name, 0.0) + p.rate * TICK
            self.sessions[name] = self.sessions.get(name, 0.0) + (p.rate if p.sessions is None else p.sessions) * TICK
            insts = {}
            for home, i in members[name]:
                iid, source = self.names.get(f"{home}/{i}", (f"{home}/{i}", None))
                self.done[iid] = self.done.get(iid, 0.0) + p.done * TICK / len(members[name])
                per = int(self.done[iid])
                insts[iid] = InstanceStats(iid, name, queue_len=p.queued, in_flight=p.in_flight, capacity=2,
                                           completed=per, busy_s=float(per), latency_p50=0.0, latency_p95=0.0,
                                           latency_p99=0.0, move_cost_s=p.cost,
                                           moving_to=self.moving.get(iid, p.moving.get(i) if home == name else None),
                                           moved_from=source)
            comps[name] = ComponentStats(name, insts, arrived=int(self.arrived[name]),
                                         sessions_arrived=int(self.sessions[name]))
        snap = Snapshot(time=self.tick * TICK, tick=self.tick, components=comps, sessions={}, futures=0)
        out = [d for d in self.policy.decide(snap) if isinstance(d, Provision)]
        if self.follow:
            self.moving.update({d.where: d.component for d in out})
        if self.relocate:
            for d in out:
                first = next((k for k, (now, _) in self.names.items() if now == d.where), d.where)
                self.placed[first] = d.component
                if self.rename:
                    self.names[first] = (f"{d.component}/moved{self.tick}", d.where)
        return out

    def run(self, ticks: int, pools: dict[str, Pool]) -> list[tuple[int, Provision]]:
        out = []
        for _ in range(ticks):
            out += [(self.tick, d) for d in self.step(pools)]
        return out


def guard(**kw: float) -> ReallocatePolicy:
    args = {"cooldown_ticks": 1, "horizon_ticks": 1, "hold_ticks": 1, "gain": 1.0, "move_horizon": 3.0,
            "backoff": 2.0, "budget": 3, "budget_window": 10.0, **kw}
    with dask.config.set({"nalar.tick-interval": TICK}):  # its first tick's period, until snapshots tell
        return ReallocatePolicy(**args)  # type: ignore[arg-type]


# code gets 8 calls/s on 4 slots and queues 10 per instance; chat is nearly idle. The first
# tick sees no arrivals yet (counters need two looks), so moves come from the second.
SATURATED = {"chat": Pool(3, rate=1.0, done=0.0, in_flight=0), "code": Pool(2, rate=8.0, done=4.0, queued=10)}
# code queues a little, but 3 calls/s fit its 4 slots: the queue drains before a move could help.
SHORT = {"chat": Pool(3, rate=1.0, done=0.0, in_flight=0), "code": Pool(2, rate=3.0, done=3.0, queued=1)}
# The other way round: chat saturated, code nearly idle.
FLIPPED = {"chat": Pool(3, rate=12.0, done=6.0, queued=10), "code": Pool(3, rate=1.0, done=0.0, in_flight=0)}


def test_refuses_a_move_whose_gain_is_below_its_cost() -> None:
    policy = guard()
    assert World(policy).run(50, SHORT) == []
    assert policy.refused.get("gain below cost", 0) >= 49
    # The share rule alone would have moved an instance here.
    assert World(guard(guard=False)).run(1, SHORT) == [(1, Provision("code", where="chat/0"))]


def test_accepts_a_move_into_a_saturated_pool() -> None:
    assert World(guard()).run(2, SATURATED) == [(2, Provision("code", where="chat/0"))]


def test_the_cost_is_read_from_the_instances_a_move_takes() -> None:
    cheap = {"chat": Pool(3, rate=1.0, done=0.0, in_flight=0, cost=0.0), "code": SHORT["code"]}
    assert World(guard()).run(1, cheap) == [(1, Provision("code", where="chat/0"))]  # a free move pays
    # code's slots serve what arrives, on a queue of 20 calls: the moved slots would serve
    # those 20 slot-seconds, which pays for a 3 s warm-up of 2 slots (6) but not a 30 s one (60).
    def pools(cost: float) -> dict[str, Pool]:
        return {"chat": Pool(3, rate=1.0, done=0.0, in_flight=0, cost=cost),
                "code": Pool(2, rate=4.0, done=4.0, queued=10)}

    assert World(guard()).run(1, pools(3.0)) == [(1, Provision("code", where="chat/0"))]
    assert World(guard()).run(20, pools(30.0)) == []


def test_no_move_from_a_pool_that_queues_or_whose_arriving_work_would_not_fit() -> None:
    busy = {"chat": Pool(3, rate=1.0, done=1.0, in_flight=2, queued=1), "code": SATURATED["code"]}
    assert World(guard()).run(20, busy) == []
    # chat's 3 calls/s would load the 4 slots it keeps to 0.75: not spare enough.
    full = {"chat": Pool(3, rate=3.0, done=0.0, in_flight=0), "code": Pool(2, rate=20.0, done=4.0, queued=10)}
    assert World(guard()).run(20, full) == []


def test_hysteresis_the_call_for_a_move_must_hold() -> None:
    world = World(guard(hold_ticks=5))
    assert world.run(5, SATURATED) == []  # held ticks 2 to 5
    assert world.run(1, SHORT) == []  # one tick without the need resets the count
    assert world.run(4, SATURATED) == []
    assert world.run(1, SATURATED) == [(11, Provision("code", where="chat/0"))]
    assert world.policy.refused["hysteresis"] == 8


def test_no_move_back_within_the_backoff() -> None:
    # A mix taken to last 10 x 30 s: the backoff, not the mix's age, holds the move back.
    world = World(guard(backoff=2.0, move_horizon=10.0), follow=True)  # 2 x 30 s
    assert world.run(2, SATURATED) == [(2, Provision("code", where="chat/0"))]
    moves = world.run(80, FLIPPED)
    assert moves and moves[0] == (62, Provision("chat", where="code/0"))
    assert world.policy.refused["backoff"] == 59


def test_a_move_given_up_at_its_break_does_not_block_the_way_back() -> None:
    world = World(guard(backoff=2.0))
    assert world.run(2, SATURATED) == [(2, Provision("code", where="chat/0"))]
    # chat/0 is still in chat and no longer moving: its provisioner gave the move up.
    assert world.run(1, FLIPPED) == [(3, Provision("chat", where="code/0"))]


def test_the_budget_caps_moves_per_window() -> None:
    # 2 moves per 300 s, of a mix taken to last 20 x 30 s.
    world = World(guard(budget=2, budget_window=10.0, cooldown_ticks=10, move_horizon=20.0), follow=True)
    pools = {"chat": Pool(8, rate=1.0, done=0.0, in_flight=0), "code": SATURATED["code"]}
    moves = [t for t, _ in world.run(320, pools)]
    assert moves == [2, 12, 302, 312]
    assert world.policy.refused["budget"] > 250


def after(dip: int, pools: dict[str, Pool], **kw: bool) -> tuple[list[tuple[int, Provision]], ReallocatePolicy]:
    """Run ``pools`` for 30 ticks after code has queued for 50 s and then dipped for ``dip`` ticks.

    While code queues, chat queues too and has nothing to give, so no move is made
    and the clock of code's saturation runs.
    """
    busy = {"chat": Pool(3, rate=1.0, done=1.0, in_flight=2, queued=1), "code": Pool(2, rate=5.0, done=4.0, queued=1)}
    cold = {"chat": SATURATED["chat"], "code": Pool(2, rate=1.0, done=1.0, in_flight=1)}
    world = World(guard(hold_ticks=20, **kw))
    world.run(50, busy)
    world.run(dip, cold)
    return world.run(30, pools), world.policy


def test_a_shift_late_in_its_life_moves_nothing() -> None:
    # code gets 5 calls/s on 4 slots with a short queue: a move pays for its 30 s warm-up
    # only through the work the mix keeps sending. The mix is taken to last 3 x 30 s from
    # when code's queueing was confirmed (the hold after it began): past that, no more.
    growing = {"chat": SATURATED["chat"], "code": Pool(2, rate=5.0, done=4.0, queued=1)}
    fresh = World(guard(hold_ticks=20))
    assert fresh.run(30, growing) == [(21, Provision("code", where="chat/0"))]
    # A dip shorter than the hold: the same saturation, 35 s past its confirmation.
    moves, policy = after(5, growing)
    assert moves == [] and policy.refused["gain below cost"] >= 10
    assert after(5, growing, mix_age=False)[0] == [(75, Provision("code", where="chat/0"))]  # the age ignored
    # A backlog already queued still pays for the move, however old the mix.
    assert after(5, SATURATED)[0] == [(75, Provision("code", where="chat/0"))]
    # A dip as long as the hold ends the saturation; a new one starts at 71.
    assert after(20, growing)[0] == [(90, Provision("code", where="chat/0"))]


def test_a_late_move_pays_only_for_a_backlog_the_taker_could_not_clear_alone() -> None:
    # code's 4 slots serve what arrives (4 calls/s) while 80 calls of 1 s wait.
    queue = {"chat": SATURATED["chat"], "code": Pool(2, rate=4.0, done=4.0, queued=40)}
    # Fresh, the mix is taken to go on: the moved slots would serve the queue, 80
    # slot-seconds, more than the 60 their warm-up costs.
    assert World(guard(hold_ticks=20)).run(30, queue) == [(20, Provision("code", where="chat/0"))]
    # Past the mix's life, code's own 4 slots drain the queue with the 2 moved ones,
    # which serve a third of it (27 slot-seconds): the move does not pay.
    moves, policy = after(5, queue)
    assert moves == [] and policy.refused["gain below cost"] >= 10
    # Without the drain the moved slots are taken to serve all 80 slot-seconds.
    assert after(5, queue, drain=False)[0] == [(75, Provision("code", where="chat/0"))]
    # A queue of 200 calls is too long for code alone: a third of it pays.
    long = {"chat": SATURATED["chat"], "code": Pool(2, rate=4.0, done=4.0, queued=100)}
    assert after(5, long)[0] == [(75, Provision("code", where="chat/0"))]


# The mix turned: chat is saturated and code, with chat/0 lent to it, has nothing queued.
TURNED = {"chat": Pool(3, rate=12.0, done=4.0, queued=10), "code": Pool(2, rate=1.0, done=1.0, in_flight=1)}


def test_a_lent_instance_goes_home_when_its_home_queues_and_it_is_no_longer_needed() -> None:
    world = World(guard(backoff=2.0, hold_ticks=5), relocate=True)
    assert world.run(6, SATURATED) == [(6, Provision("code", where="chat/0"))]
    assert world.run(20, SATURATED) == []  # chat/0 serves code while code queues
    # chat has queued for five ticks and code would carry less per slot without chat/0:
    # home, inside the 60 s backoff.
    assert world.run(10, TURNED) == [(31, Provision("chat", where="chat/0"))]
    assert world.policy.returned == 1 and not world.policy._home
    # Without loans the way back waits for the backoff (and the averages) to allow it.
    lent = World(guard(backoff=2.0, hold_ticks=5, lend=False), relocate=True)
    lent.run(26, SATURATED)
    # Without loans nothing goes back: code, half its slots busy, has none to spare by the share rule.
    assert lent.run(30, TURNED) == [] and lent.policy.returned == 0


def test_a_loan_follows_its_engine_to_the_new_instance_a_move_makes() -> None:
    world = World(guard(backoff=2.0, hold_ticks=5), relocate=True, rename=True)
    assert world.run(6, SATURATED) == [(6, Provision("code", where="chat/0"))]
    world.run(20, SATURATED)  # chat/0 is now code/moved6, moved from chat/0
    assert world.run(10, TURNED) == [(31, Provision("chat", where="code/moved6"))]
    world.run(10, TURNED)  # home again, as chat/moved31
    assert world.policy.returned == 1 and not world.policy._home


def test_a_lent_instance_stays_while_it_carries_more_where_it_went_than_its_home_would() -> None:
    world = World(guard(backoff=2.0, hold_ticks=5), relocate=True)
    assert world.run(6, SATURATED) == [(6, Provision("code", where="chat/0"))]
    # chat queues 10 per instance (6 calls per slot); code, 12 per instance, would carry 9 on
    # the 4 slots it keeps without chat/0.
    both = {"chat": TURNED["chat"], "code": SATURATED["code"]}
    assert world.run(20, both) == [] and world.policy.returned == 0
    # code's backlog drains to 2 per instance: 3 calls per slot without chat/0, under chat's 6.
    draining = {"chat": TURNED["chat"], "code": Pool(2, rate=4.0, done=4.0, queued=2)}
    assert world.run(5, draining) == [(27, Provision("chat", where="chat/0"))]


def test_an_instance_moving_away_counts_where_it_goes() -> None:
    # chat/0 is already on its way to code (make before break): it is not given again, and
    # chat gives another only while two instances stay.
    moving = {"chat": Pool(4, rate=1.0, done=0.0, in_flight=0, moving={0: "code"}), "code": SATURATED["code"]}
    assert World(guard()).run(2, moving) == [(2, Provision("code", where="chat/1"))]
    two = {"chat": Pool(2, rate=1.0, done=0.0, in_flight=0, moving={0: "code"}), "code": SATURATED["code"]}
    assert World(guard()).run(5, two) == []


def test_the_arriving_mix_shows_demand_before_the_calls_do() -> None:
    # code has seen 100 sessions of 8 calls each. New sessions arrive at 4 a second, each
    # with its first call only so far: the calls alone fit code's slots, the sessions do not.
    history = {"code": (800.0, 100.0), "chat": (100.0, 100.0)}
    turning = {"chat": Pool(3, rate=1.0, done=0.0, in_flight=0),
               "code": Pool(2, rate=4.0, done=4.0, queued=1, sessions=4.0)}
    assert World(guard(mix=False), history).run(20, turning) == []
    assert World(guard(mix=True), history).run(2, turning) == [(2, Provision("code", where="chat/0"))]


def test_nalar_passes_its_arguments_to_reallocate_and_guards_by_default() -> None:
    policy = NalarPolicy(horizon_ticks=30, hold_ticks=7)
    assert policy.reallocate.alpha == 1 / 30 and policy.reallocate.hold_ticks == 7 and policy.reallocate.guard
    assert ReallocatePolicy().guard and ReallocatePolicy().move_cost_s == 30.0
