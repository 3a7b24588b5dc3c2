"""Re-allocation: instances moved between components when a move pays for itself."""

from __future__ import annotations

from collections import deque
from typing import Any

from ..config import resolve
from .base import Policy
from .decisions import Decision, Provision, Snapshot

# Sessions a component must have seen before its arriving work is read from sessions.
MIX_MIN_SESSIONS = 8


class ReallocatePolicy(Policy):
    """Move an instance to a saturated component from one with spare capacity, when the move pays for itself.

    Per bounded component the policy averages, over about ``horizon_ticks`` ticks,
    its load (queued + in-flight calls) and the work that arrives at it (service
    seconds): the busy time its instances delivered plus the growth of its load
    times its mean service per call, or, when the arriving mix says more, the work
    the arriving sessions bring (sessions that reach the component, times the calls
    a session makes there, times the service per call: a router's label per request
    shows here at its first call, before its later calls load the component), or
    with ``mix=False`` its arriving calls times the service per call. A component's
    share of the instances is their number in proportion to the work arriving at
    it, so a backlog passing down a pipeline does not drag instances after it, and
    a steady mix moves none.

    One instance moves, at most once per ``cooldown_ticks``, from a component above
    its share (by at least ``margin`` instances, under ``low`` per slot, still under
    ``high`` without the instance) to a saturated component below its share (above
    ``high`` per slot, by at least ``margin``). Instances warming up or moving
    count where they go.

    **The guard** (``guard=True``, the default) makes a move only when it cannot be a
    loss:

    - the taking component is queueing now and the giving one is not, and the work
      arriving at the giver still fits under ``low`` per slot without the instance;
    - the gain beats the cost: with ``c`` the move's cost (the instance's warm-up,
      ``move_cost_s``), the queued work the moved slots would serve in the taker
      between the end of the warm-up and the end of the mix (its queue now plus its
      arriving work beyond its slots) is at least ``gain`` times the ``slots x c``
      slot-seconds the warm-up costs (``gain`` 2 by default: the engine will warm up
      once more on its way home, when its home's mix returns). With ``mix_age`` (the default) the arriving mix
      is taken to last ``move_horizon x c`` from when the taker's queueing was
      confirmed (``hold_ticks`` after it began, or after its last move in): a shift
      late in its life brings no more work past that, so a move then pays only for the
      backlog already queued, not for work the mix would no longer send. With
      ``drain`` (the default) the backlog still queued when the mix ends is drained
      by the taker's own slots too, so the moved slots serve only their share of it
      (their slots over all the taker's): a move late in a phase pays only for a
      backlog too large for the taker to clear alone;
    - hysteresis: the same move is called for ``hold_ticks`` ticks in a row, and no
      instance moves back between two components within ``backoff x c`` of a move
      the other way;
    - a budget: at most ``budget`` moves in any ``budget_window x c``.

    **Moves are loans** (``lend=True``, the default, with the guard): an instance
    moved away from the component it started in goes back there once its home has
    queued for ``hold_ticks`` ticks in a row and the component it went to, without
    it, would carry less load per slot than its home does now (so a component whose
    own mix has turned away from it gives its loan back while it still drains its
    backlog). The way home is free of the gain check, the backoff and the budget: it
    restores the split the components started from. A move out again is a new move,
    under every rule.

    The cost is what the instance's provisioner declares (``InstanceStats.move_cost_s``),
    else ``move_cost_s``, else ``nalar.move-cost``. Every guard knob left ``None``
    takes its ``nalar.move-*`` setting (see :mod:`nalar_plugin.config`).

    Args:
        high: Load per slot above which a component is saturated.
        low: Load per slot under which a component may give an instance.
        cooldown_ticks: Ticks between two moves at least.
        horizon_ticks: Ticks the load and the arriving work are averaged over.
        margin: Instances a component must be off its share to give or get one. With
            one whole instance (the default) a move never turns the giver into a taker,
            so noise in the shares cannot send an instance back and forth.
        guard: Apply the guard above (``False``: the share rule alone).
        mix: Read the arriving work from the sessions that arrive (else from the calls).
        move_cost_s: A move's cost in wall seconds when the provisioner does not say.
        gain: Gain-to-cost factor a move needs (``nalar.move-gain``, 2: the way out and back).
        move_horizon: How long the arriving mix is taken to last, in move costs
            (``nalar.move-horizon``, 3).
        hold_ticks: Ticks a move must be called for in a row (``nalar.move-hold-ticks``, 20).
        backoff: No move back within this many move costs (``nalar.move-backoff``, 2).
        budget: Moves at most per window (``nalar.move-budget``, 3).
        budget_window: The budget's window in move costs (``nalar.move-budget-window``, 10).
        mix_age: Count the arriving mix's age against the work a move would serve.
        drain: Count the taker's own slots draining its backlog once the mix ends.
        lend: Send a moved instance home when it is no longer needed where it went.
    """

    name = "reallocate"

    def __init__(self, high: float = 1.0, low: float = 0.5, cooldown_ticks: int = 10, horizon_ticks: int = 100,
                 margin: float = 1.0, *, guard: bool = True, mix: bool = True, move_cost_s: float | None = None,
                 gain: float | None = None, move_horizon: float | None = None, hold_ticks: int | None = None,
                 backoff: float | None = None, budget: int | None = None, budget_window: float | None = None,
                 mix_age: bool = True, lend: bool = True, drain: bool = True) -> None:
        cfg = resolve()
        self.mix_age = bool(mix_age)
        self.drain = bool(drain)
        self.lend = bool(lend)
        self.high = high
        self.low = low
        self.cooldown_ticks = cooldown_ticks
        self.margin = margin
        self.alpha = 1.0 / max(1, horizon_ticks)
        self.guard = bool(guard)
        self.mix = bool(mix)
        self.move_cost_s = float(cfg["move-cost"] if move_cost_s is None else move_cost_s)
        self.gain = float(cfg["move-gain"] if gain is None else gain)
        self.move_horizon = float(cfg["move-horizon"] if move_horizon is None else move_horizon)
        self.hold_ticks = int(cfg["move-hold-ticks"] if hold_ticks is None else hold_ticks)
        self.backoff = float(cfg["move-backoff"] if backoff is None else backoff)
        self.budget = int(cfg["move-budget"] if budget is None else budget)
        self.budget_window = float(cfg["move-budget-window"] if budget_window is None else budget_window)
        self._tick_s = float(cfg["tick-interval"])  # seconds per tick, until snapshots tell
        self._load: dict[str, float] = {}  # averaged queued + in-flight calls
        self._work: dict[str, float] = {}  # service seconds arriving per tick, averaged (the larger below)
        self._served: dict[str, float] = {}  # averaged service delivered plus load growth per tick
        self._arriving: dict[str, float] = {}  # averaged service the arriving sessions (or calls) bring per tick
        self._queueing: dict[str, int] = {}  # ticks in a row each component has queued
        self._home: dict[str, str] = {}  # moved instance -> the component it started in
        self.returned = 0  # instances sent home (for reports and tests)
        self._svc: dict[str, float] = {}  # averaged service seconds per call
        self._seen: dict[str, tuple[int, float]] = {}  # instance -> (completed, busy_s) at the last tick
        self._last_load: dict[str, int] = {}
        self._arrivals: dict[str, tuple[int, int]] = {}  # component -> (calls, sessions) at the last tick
        self._time: float | None = None
        self._timed = False  # the tick period was measured (else nalar.tick-interval)
        self._last = -(10**9)
        self._hold: tuple[tuple[str, str] | None, int] = (None, 0)  # (taker, giver) called for, ticks in a row
        # component -> (time it began to queue over its slots, ticks in a row it has not since)
        self._hot: dict[str, tuple[float, int]] = {}
        self._moves: deque[tuple[float, str, str, str]] = deque(maxlen=256)  # (time, from, to, instance) of each move
        self.refused: dict[str, int] = {}  # moves the guard refused, by reason (for reports and tests)

    def _avg(self, table: dict[str, float], name: str, value: float) -> None:
        prev = table.get(name)
        table[name] = value if prev is None else prev + self.alpha * (value - prev)

    def _observe(self, snapshot: Snapshot, pools: dict[str, Any]) -> None:
        if self._time is not None and snapshot.time > self._time:
            dt = snapshot.time - self._time
            self._tick_s = dt if not self._timed else self._tick_s + 0.1 * (dt - self._tick_s)
            self._timed = True
        self._time = snapshot.time
        seen: dict[str, tuple[int, float]] = {}
        delivered: dict[str, float] = {}
        for name, comp in pools.items():
            done, busy = 0, 0.0
            for iid, inst in comp.instances.items():
                c0, b0 = self._seen.get(iid, (0, 0.0))
                done, busy = done + inst.completed - c0, busy + inst.busy_s - b0
                seen[iid] = (inst.completed, inst.busy_s)
            if done > 0:
                self._avg(self._svc, name, busy / done)
            delivered[name] = busy
            self._avg(self._load, name, comp.load)
        self._seen = seen
        if not self._svc:
            return  # no call has completed anywhere: work cannot be told from queues yet
        typical = sum(self._svc.values()) / len(self._svc)  # for a component with no completed call yet
        for name, comp in pools.items():
            svc = self._svc.get(name, typical)
            grew = comp.load - self._last_load.get(name, comp.load)  # a first sight is no growth
            self._last_load[name] = comp.load
            # Served, plus what queued up meanwhile.
            self._avg(self._served, name, max(0.0, delivered[name] + grew * svc))
            work = self._served[name]
            if comp.arrived is not None and comp.sessions_arrived is not None:
                calls0, sess0 = self._arrivals.get(name, (comp.arrived, comp.sessions_arrived))
                self._arrivals[name] = (comp.arrived, comp.sessions_arrived)
                calls, sessions = max(0, comp.arrived - calls0), max(0, comp.sessions_arrived - sess0)
                if self.mix and comp.sessions_arrived >= MIX_MIN_SESSIONS:
                    # What the sessions arriving now will ask of the component: sessions times
                    # the calls a session makes here (so far, on average) times the service per call.
                    self._avg(self._arriving, name, sessions * comp.arrived / comp.sessions_arrived * svc)
                else:
                    self._avg(self._arriving, name, calls * svc)
                work = max(work, self._arriving[name])  # of the averages: the larger says more
            self._work[name] = work

    def _cost(self, inst: Any) -> float:
        return self.move_cost_s if inst.move_cost_s is None else float(inst.move_cost_s)

    def _refuse(self, reason: str) -> list[Decision]:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return []

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        pools = {n: c for n, c in snapshot.components.items() if c.instances and c.capacity}
        self._observe(snapshot, pools)
        self._forget_given_up(snapshot)
        for name, comp in pools.items():
            self._queueing[name] = self._queueing.get(name, 0) + 1 if comp.queued > 0 else 0
        if len(pools) < 2 or any(n not in self._work for n in pools):
            return []
        # Instances leaving a component (make before break) count where they go.
        staying = {n: {i: s for i, s in c.instances.items() if s.moving_to is None} for n, c in pools.items()}
        slots = {n: sum(s.capacity or 0 for s in st.values()) for n, st in staying.items()}
        total = sum(self._work[n] for n in pools)
        if total <= 0:
            return self._no_move()
        if self.guard and self.lend:
            home = self._send_home(snapshot, pools, staying, slots)
            if home:
                return home
        count = sum(len(st) for st in staying.values())
        off = {n: len(staying[n]) - max(1.0, count * self._work[n] / total) for n in pools}  # + surplus
        util = {n: self._load[n] / max(1, slots[n]) for n in pools}
        self._track_saturation(snapshot.time, {n: util[n] > self.high and pools[n].queued > 0 for n in pools})
        takers = [n for n in pools if util[n] > self.high and off[n] <= -self.margin
                  and (not self.guard or pools[n].queued > 0)]
        if not takers:
            return self._no_move()
        taker = min(takers, key=lambda n: off[n])
        best: tuple[float, Any] | None = None
        for name, comp in pools.items():
            if name == taker or off[name] < self.margin or util[name] >= self.low or len(staying[name]) < 2:
                continue
            if self.guard and comp.queued > 0:
                continue  # a queueing component has no capacity to spare
            ready = [s for s in staying[name].values() if not s.warming]
            if not ready:
                continue
            donor = min(ready, key=lambda s: (s.load, s.instance))
            left = slots[name] - (donor.capacity or 0)
            if left <= 0 or self._load[name] / left >= self.high:
                continue
            if self.guard and self._work[name] / self._tick_s / left >= self.low:
                continue  # its arriving work would not fit comfortably in what it keeps
            if best is None or off[name] > best[0]:
                best = (off[name], donor)
        if best is None:
            return self._no_move()
        donor = best[1]
        giver = donor.component
        if not self.guard:
            if snapshot.tick - self._last < self.cooldown_ticks:
                return []
            return self._move(snapshot, giver, taker, donor)
        cost = self._cost(donor)
        # The mix's age once its queueing was confirmed (the hold is the policy's own wait).
        since = self._hot.get(taker, (snapshot.time, 0))[0]
        age = max(0.0, snapshot.time - since - self.hold_ticks * self._tick_s)
        if not self._pays(pools[taker], slots[taker], donor.capacity or 0, cost, age):
            return self._no_move("gain below cost")
        pair = (taker, giver)
        held = self._hold[1] + 1 if self._hold[0] == pair else 1
        self._hold = (pair, held)
        if held < self.hold_ticks:
            return self._refuse("hysteresis")
        if snapshot.tick - self._last < self.cooldown_ticks:
            return self._refuse("cooldown")
        now = snapshot.time
        if any(src == taker and dst == giver and now - t < self.backoff * cost for t, src, dst, _ in self._moves):
            return self._refuse("backoff")
        if sum(1 for t, _, _, _ in self._moves if now - t < self.budget_window * cost) >= self.budget:
            return self._refuse("budget")
        return self._move(snapshot, giver, taker, donor)

    def _forget_given_up(self, snapshot: Snapshot) -> None:
        """Forget moves their provisioner gave up (make before break, the giver busy at the break).

        Such an instance is still in the component it was to leave, and no longer
        moving: it neither counts against the budget nor blocks a move back.
        """
        if not self._moves:
            return
        live = {i: s for c in snapshot.components.values() for i, s in c.instances.items()}
        kept = [m for m in self._moves
                if not (m[3] in live and live[m[3]].component == m[1] and live[m[3]].moving_to is None
                        and snapshot.time > m[0])]
        if len(kept) != len(self._moves):
            self._moves = deque(kept, maxlen=self._moves.maxlen)

    def _no_move(self, reason: str | None = None) -> list[Decision]:
        self._hold = (None, 0)
        return [] if reason is None else self._refuse(reason)

    def _track_saturation(self, now: float, hot: dict[str, bool]) -> None:
        """Note when each component began to queue over its slots (a dip shorter than ``hold_ticks`` does not end it)."""
        for name, is_hot in hot.items():
            since = self._hot.get(name)
            if is_hot:
                self._hot[name] = (now if since is None else since[0], 0)
            elif since is not None:
                self._hot[name] = (since[0], since[1] + 1)
                if since[1] + 1 >= self.hold_ticks:
                    del self._hot[name]

    def _pays(self, taker: Any, slots: int, moved: int, cost: float, age: float = 0.0) -> bool:
        """Whether the queued work ``moved`` more slots would serve in ``taker`` beats what the move costs.

        The arriving mix is taken to last ``move_horizon x cost`` from when the taker
        began to queue, ``age`` ago: the moved slots serve from the end of their warm-up
        to the end of that. While the mix lasts, the taker's own slots serve what
        arrives and the moved ones its queue; after it, with ``drain``, the queue left is
        drained by all the taker's slots, the moved ones serving their share.
        """
        if cost <= 0:
            return True
        svc = self._svc.get(taker.component)
        if svc is None:
            return False
        backlog = taker.queued * svc  # slot-seconds of work waiting now
        excess = self._work[taker.component] / self._tick_s - slots  # arriving beyond its slots, per second
        after = max(0.0, backlog + excess * cost)  # still queued when the moved slots are warm
        window = max(0.0, (self.move_horizon - 1.0) * cost)  # the moved slots serve the taker this long
        # New work beyond the taker's slots arrives only while the mix lasts; the backlog stays.
        arriving = max(0.0, window - age) if self.mix_age else window
        queued = after + max(0.0, excess) * arriving  # all the work the moved slots could serve
        during = min(moved * arriving, queued)  # served while the mix lasts
        share = moved / max(1, moved + slots) if self.drain else 1.0
        served = min(moved * window, during + share * (queued - during))
        return served >= self.gain * moved * cost

    def _send_home(self, snapshot: Snapshot, pools: dict[str, Any], staying: dict[str, dict[str, Any]],
                   slots: dict[str, int]) -> list[Decision]:
        """Send home a lent instance its home needs more than the component it went to."""
        self._follow(snapshot)
        if snapshot.tick - self._last < self.cooldown_ticks:
            return []
        for iid, home in list(self._home.items()):
            inst = next((st[iid] for st in staying.values() if iid in st), None)
            if inst is None:
                if not any(iid in c.instances for c in snapshot.components.values()):
                    del self._home[iid]  # gone
                continue  # moving
            at = inst.component
            if at == home:
                del self._home[iid]  # the move out was given up
                continue
            if home not in pools or inst.warming or len(staying[at]) < 2:
                continue
            if self._queueing.get(home, 0) < self.hold_ticks:
                continue
            left = slots[at] - (inst.capacity or 0)
            if left <= 0 or pools[at].load / left >= pools[home].load / max(1, slots[home]):
                continue
            self.returned += 1
            return self._move(snapshot, at, home, inst)
        return []

    def _follow(self, snapshot: Snapshot) -> None:
        """Carry each loan over to the instance a move made of it (a move makes a new instance)."""
        if not self._home:
            return
        for comp in snapshot.components.values():
            for iid, inst in comp.instances.items():
                home = self._home.get(inst.moved_from) if inst.moved_from is not None else None
                if home is not None and iid not in self._home:
                    self._home[iid] = home

    def _move(self, snapshot: Snapshot, giver: str, taker: str, donor: Any) -> list[Decision]:
        home = self._home.get(donor.instance)
        if home == taker:
            del self._home[donor.instance]
        elif home is None:
            self._home[donor.instance] = giver
        self._last = snapshot.tick
        self._hold = (None, 0)
        self._moves.append((snapshot.time, giver, taker, donor.instance))
        self._hot.pop(taker, None)  # its capacity changes: a saturation after the move is a new one
        return [Provision(taker, where=donor.instance)]
