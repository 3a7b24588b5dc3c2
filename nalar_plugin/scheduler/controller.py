"""The control plane: components, their instances' local controllers (:mod:`.local`),
routes and sessions; event-driven, with late binding.

A call whose inputs exist waits in a priority queue (higher priority first, ties
in arrival order). A session that is bound to an instance (a stateful session, or
one a policy routed) waits in that instance's own queue; every other call waits
in its component's shared queue and gets its instance only when it is admitted
(late binding). A call is admitted only when an instance has a free slot.
Decisions apply at once: ``set_priority`` reorders calls already queued,
``migrate`` moves a session's queued calls and its affinity, routes apply to new
calls. Every operation costs O(log queue) or O(instances of the component); the
snapshot costs O(instances + active sessions), never O(futures).

Per-session records (metrics, affinity) of idle sessions are kept for the
``session_cap`` most recently active sessions; older idle ones are forgotten,
so memory stays bounded however many sessions a long-lived process serves.

**Admission with an SLO.** A component may have an SLO (:meth:`ControlPlane.set_slo`),
and a call may ask for its deadline to be one; a call expected to break it is
refused or deferred at admission (:mod:`nalar_plugin.scheduler.admission`).

**Rate limits.** A component with ``rpm``/``tpm`` limits is also asked of the
:attr:`ControlPlane.limiter` (:mod:`nalar_plugin.scheduler.leases`) before the call at
the head of its queues is admitted; a call it refuses stays at the head, and the
limiter wakes the component (:meth:`ControlPlane.refresh`) when budget is back.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..config import ON_SLO
from ..errors import AdmissionRejectedError, ConfigError
from .decisions import ComponentStats, SessionStats, Snapshot
from . import admission
from .admission import DEFER_PRIORITY
from .local import Call, ComponentRecord, Limiter, LocalController, PriorityQueue, run_drained

__all__ = ["Call", "ControlPlane", "DEFER_PRIORITY", "Limiter", "LocalController", "PriorityQueue"]

logger = logging.getLogger(__name__)

# A session idle for at most this long between two calls is still serving one request
# (the gap between two steps of a graph run); longer, and its next call starts a new one.
REQUEST_GAP_S = 0.5


class ControlPlane:
    """Components, their instances' local controllers, routes and session metrics.

    ``dispatch(call, controller)`` is supplied by the Runtime: it runs the call
    (for example as a Dask task) and must later call :meth:`complete`.
    """

    def __init__(self, dispatch: Callable[[Call, LocalController], None], *, seed: int = 0,
                 fail: Callable[[Call, BaseException], None] | None = None, session_cap: int = 10_000,
                 affinity_slack: int | None = None, request_gap_s: float = REQUEST_GAP_S) -> None:
        self._dispatch = dispatch
        self._fail = fail
        self._lock = threading.RLock()
        self._seq = itertools.count()
        self._rng = random.Random(seed)
        self._components: dict[str, ComponentRecord] = {}
        self.instances: dict[str, LocalController] = {}
        self._routes: dict[tuple[str, str], str] = {}  # (session, component) -> instance
        self._sessions: dict[str, SessionStats] = {}
        # Sessions with nothing queued or in flight, LRU, with the monotonic time each
        # went idle (None: it never ran).
        self._idle: OrderedDict[str, float | None] = OrderedDict()
        self.request_gap_s = request_gap_s
        self.session_cap = session_cap
        self.affinity_slack = affinity_slack  # None: affinity never yields
        self._active: dict[str, SessionStats] = {}  # sessions with queued or in-flight calls
        self._queued: dict[str, dict[int, Call]] = {}  # session -> its queued calls
        # The policy's admission-time choice of instance (local enforcement), if any.
        self.chooser: Callable[[str, list[LocalController]], LocalController | None] | None = None
        self.limiter: Limiter | None = None  # rate limits, asked before each admission

    # -- topology ----------------------------------------------------------
    @property
    def components(self) -> dict[str, list[str]]:
        """Instance ids per component."""
        with self._lock:
            return {n: list(c.instances) for n, c in self._components.items()}

    def add_component(self, component: str, instances: int = 1, capacity: int | None = None,
                      addresses: list[Any] | None = None, max_instances: int | None = None) -> list[str]:
        """Declare ``component`` with ``instances`` instances; return their ids.

        ``max_instances`` bounds the instances it may ever have (provisioning included).
        """
        with self._lock:
            comp = self._components.get(component)
            if comp is None:
                comp = self._components[component] = ComponentRecord(component, capacity, max_instances)
            for n in range(instances):
                self.add_instance(component, capacity, address=addresses[n] if addresses else None)
            return list(comp.instances)

    def add_instance(self, component: str, capacity: int | None = None, *, address: Any = None,
                     instance: str | None = None, ready_at: float = 0.0) -> str:
        """Add one instance to ``component`` (made if needed); return its id."""
        with self._lock:
            comp = self._components.get(component)
            if comp is None:
                comp = self._components[component] = ComponentRecord(component, capacity)
            if comp.max_instances is not None and len(comp.instances) >= comp.max_instances:
                raise ConfigError(f"component {component!r} has max_instances={comp.max_instances}: "
                                  "no instance can be added")
            n = len(comp.instances)
            iid = instance or f"{component}/{n}"
            while iid in self.instances:
                n += 1
                iid = f"{component}/{n}"
            ctl = LocalController(iid, component, capacity if capacity is not None else comp.capacity, address=address)
            ctl.ready_at = ready_at
            self.instances[iid] = ctl
            comp.instances.append(iid)
            comp.full = False
        self._admit(component)
        return iid

    def remove_instance(self, instance: str, on_drained: Callable[[], None] | None = None) -> LocalController:
        """Stop admitting to ``instance``; its queued calls go back to the shared queue.

        Its admitted calls finish where they run (it *drains*). ``on_drained`` is called
        once, outside the lock, when the last of them has finished (at once if none
        runs): only then may what the instance stands for (an engine, a hosted object)
        be taken down without losing a call.
        """
        drained: Callable[[], None] | None = None
        with self._lock:
            ctl = self.instances[instance]
            ctl.draining = True
            ctl.moving_to = None
            if on_drained is not None:
                ctl.on_drained = on_drained
            comp = self._components[ctl.component]
            if instance in comp.instances:
                comp.instances.remove(instance)
                comp.busy_s += ctl.busy_s  # its service history stays the component's
                comp.completed += ctl.completed
            while len(ctl.queue):
                call = ctl.queue.pop()
                self._push(comp.shared, call)
            for key in [k for k, v in self._routes.items() if v == instance]:
                del self._routes[key]
            if ctl.in_flight == 0:
                del self.instances[instance]
                drained, ctl.on_drained = ctl.on_drained, None
        if drained is not None:
            run_drained(drained, instance)
        self._refresh(ctl.component)
        return ctl

    def ensure_component(self, component: str, capacity: int | None = None, instances: int = 1,
                         max_instances: int | None = None) -> None:
        """Declare ``component`` with ``instances`` instances unless it exists."""
        if component in self._components:  # the common case needs no lock
            return
        with self._lock:
            if component not in self._components:
                self.add_component(component, instances, capacity, max_instances=max_instances)

    # -- the call path ---------------------------------------------------
    def _push(self, queue: PriorityQueue, call: Call) -> None:
        queue.push(call, call.context.priority, next(self._seq))

    def enqueue(self, call: Call) -> None:
        """Queue a call whose inputs exist, then admit what fits (or shed it, see :meth:`set_slo`)."""
        ctx = call.context
        self.ensure_component(ctx.component)
        with self._lock:
            comp = self._components[ctx.component]
            call.enqueued_at = time.monotonic()
            sess = self._session(ctx.session)
            comp.arrived += 1
            seen = sess.calls.get(ctx.component, 0)
            if not seen:
                comp.sessions_arrived += 1
            sess.calls[ctx.component] = seen + 1
            if sess.priority_set:
                ctx.priority = sess.priority
            comp.inline = call.inline
            rejected = self._admission(comp, call)
            bound_to: str | None = None
            if rejected is None:
                bound_to = self._queue(comp, sess, call)
        if rejected is not None:  # shed: it never waited anywhere
            if self._fail is not None:
                self._fail(call, rejected)
            else:
                call.future._finish("error", exception=rejected)
            return
        self._admit(ctx.component, bound_to)

    def _queue(self, comp: ComponentRecord, sess: SessionStats, call: Call) -> str | None:
        """Queue a call that passed the SLO check; the instance it is bound to, if any (caller holds the lock)."""
        ctx = call.context
        if ctx.session not in self._active:
            idle_since = self._idle.pop(ctx.session, None)
            # A session idle only between two steps of one graph run keeps its request's
            # age; one idle for longer than the gap starts a new request here.
            if idle_since is None or time.monotonic() - idle_since > self.request_gap_s:
                sess.order = next(self._seq)
                sess.request_started = time.time()
        call.order = sess.order
        sess.queued += 1
        self._active[ctx.session] = sess
        if ctx.deadline is not None:
            sess.deadline = ctx.deadline if sess.deadline is None else min(sess.deadline, ctx.deadline)
        hint = call.extra.get("expected_s")
        if hint is not None:
            sess.expected_s = float(hint)
        routed = self._routes.get((ctx.session, ctx.component))
        ctl = self.instances.get(routed) if routed is not None else None
        if ctl is not None and not ctl.draining and self._spills(comp, ctl):
            ctl = None  # its instance is full and another has room: affinity yields
            call.extra["spilled"] = True
        bound = ctl is not None and not ctl.draining
        self._push(ctl.queue if bound else comp.shared, call)  # type: ignore[union-attr]
        self._queued.setdefault(ctx.session, {})[id(call)] = call
        return ctl.instance if bound else None  # type: ignore[union-attr]

    def _admission(self, comp: ComponentRecord, call: Call) -> AdmissionRejectedError | None:
        """Check a call against its SLO (caller holds the lock); see :func:`.admission.check`."""
        return admission.check(comp, call, lambda: admission.expected_s(comp, self.instances))

    def expected_s(self, component: str) -> float | None:
        """Expected wall seconds from now until a new call of ``component`` completes (see
        :func:`.admission.expected_s`); ``None`` when it cannot be told."""
        with self._lock:
            comp = self._components.get(component)
            return None if comp is None else admission.expected_s(comp, self.instances)

    def set_slo(self, component: str, slo_s: float | None, on_slo: str = "reject") -> None:
        """Give ``component`` an admission SLO: a call expected to take longer (wait plus service) is shed.

        Args:
            component: The component (made if needed).
            slo_s: Wall seconds; ``None`` removes the SLO.
            on_slo: ``reject`` (fail at once with ``AdmissionRejectedError``) or ``defer``
                (queue it behind the calls that can make it); a call's own ``on_slo`` wins.

        Raises:
            ConfigError: A bad ``on_slo`` or an SLO that is not > 0.
        """
        if on_slo not in ON_SLO:
            raise ConfigError(f"on_slo must be one of {list(ON_SLO)}, got {on_slo!r}")
        if slo_s is not None and not slo_s > 0:
            raise ConfigError(f"slo_s must be > 0, got {slo_s!r}")
        self.ensure_component(component)
        with self._lock:
            comp = self._components[component]
            comp.slo_s, comp.on_slo = slo_s, on_slo

    def admission_stats(self) -> dict[str, dict[str, Any]]:
        """Per component with an SLO or a shed call: its SLO, calls rejected and deferred, and arrivals."""
        with self._lock:
            return {n: {"slo_s": c.slo_s, "on_slo": c.on_slo, "rejected": c.rejected, "deferred": c.deferred,
                        "arrived": c.arrived}
                    for n, c in self._components.items() if c.slo_s is not None or c.rejected or c.deferred}

    def _spills(self, comp: ComponentRecord, ctl: LocalController) -> bool:
        """Whether a call bound to ``ctl`` should wait in the shared queue instead (caller holds the lock).

        Affinity keeps a session's context (a prefix cache) on one instance; it
        is not worth waiting behind a full instance while another of the same
        component is clearly less loaded. ``affinity_slack`` sets "clearly":
        calls of load difference, or a quarter of the capacity if more.
        """
        if self.affinity_slack is None or ctl.capacity is None:
            return False
        load = len(ctl.queue) + ctl.in_flight
        if load < ctl.capacity:
            return False
        least = min((len(c.queue) + c.in_flight for i in comp.instances
                     if (c := self.instances[i]) is not ctl and not c.draining), default=None)
        return least is not None and load - least > max(self.affinity_slack, ctl.capacity // 4)

    def _session(self, session: str) -> SessionStats:
        s = self._sessions.get(session)
        if s is None:
            s = self._sessions[session] = SessionStats(session)
            self._idle[session] = None
            if len(self._sessions) > self.session_cap:
                self._evict()
        return s

    def _evict(self) -> None:
        """Forget the least recently active idle sessions beyond the cap (caller holds the lock)."""
        while len(self._sessions) > self.session_cap and self._idle:
            name, _ = self._idle.popitem(last=False)
            self._drop_session(name)

    def _went_idle(self, session: str) -> None:
        # Caller holds the lock.
        self._active.pop(session, None)
        self._queued.pop(session, None)
        if session in self._sessions:
            self._idle[session] = time.monotonic()
            self._idle.move_to_end(session)

    def _drop_session(self, session: str) -> None:
        self._idle.pop(session, None)
        sess = self._sessions.pop(session, None)
        if sess is not None:
            for component in list(sess.location):
                self._routes.pop((session, component), None)
        self._active.pop(session, None)
        self._queued.pop(session, None)

    def forget_session(self, session: str) -> None:
        """Forget an idle session's metrics and affinity (its queued calls, if any, stay)."""
        with self._lock:
            if session not in self._active:
                self._drop_session(session)

    def is_active(self, session: str) -> bool:
        """Whether ``session`` has calls queued or in flight."""
        with self._lock:
            return session in self._active

    def sessions_known(self) -> int:
        """Sessions with records here (active and recently active)."""
        with self._lock:
            return len(self._sessions)

    def cancel(self, call: Call) -> bool:
        """Take a queued call out of its queue; False if it is not queued (admitted, or never queued)."""
        with self._lock:
            queue = call.queue
            if queue is None:
                return False
            queue.remove(call)
            ctx = call.context
            self._unwait(call)
            self._queued.get(ctx.session, {}).pop(id(call), None)
            sess = self._sessions.get(ctx.session)
            if sess is not None:
                sess.queued -= 1
                if not sess.queued and not sess.in_flight:
                    self._went_idle(sess.session)
            return True

    def _unwait(self, call: Call) -> None:
        """A deferred call leaves its queue (caller holds the lock)."""
        if call.extra.get("deferred"):
            call.extra["deferred"] = False
            comp = self._components.get(call.context.component)
            if comp is not None:
                comp.deferred_waiting -= 1

    def _choose(self, comp: ComponentRecord, free: list[LocalController]) -> LocalController:
        if self.chooser is not None:
            try:
                picked = self.chooser(comp.name, free)
            except Exception:
                logger.exception("the policy's choose() failed; using the default choice")
                picked = None
            if picked is not None:
                return picked
        if comp.weights is not None:
            ids, weights = comp.weights
            pool = {c.instance: c for c in free}
            cands = [(pool[i], w) for i, w in zip(ids, weights) if i in pool and w > 0]
            if cands:
                return self._rng.choices([c for c, _ in cands], [w for _, w in cands])[0]
        comp.rr += 1
        return free[comp.rr % len(free)]

    def _next(self, comp: ComponentRecord, hint: str | None = None) -> tuple[Call, LocalController] | None:
        now = time.monotonic()
        if hint is not None:
            # Only ``hint`` changed (it freed a slot, or its own queue got a call): every
            # other free instance already took what it could, so only it can admit now.
            ctl = self.instances.get(hint)
            free = [ctl] if ctl is not None and ctl.component == comp.name and ctl.free(now) else []
        else:
            if comp.full:
                return None
            free = [ctl for i in comp.instances if (ctl := self.instances[i]).free(now)]
            if not free:
                comp.full = True
                return None
        if not free:
            return None
        best: tuple[float, int, int, Call] | None = None
        owner: LocalController | None = None
        for ctl in free:
            top = ctl.queue.peek()
            if top is not None and (best is None or top[:3] < best[:3]):
                best, owner = top, ctl
        shared = comp.shared.peek()
        limiter = self.limiter
        if shared is not None and (best is None or shared[:3] < best[:3]):
            if limiter is not None and not limiter.admit(shared[3]):
                return None  # it waits at the head for budget; the limiter wakes the component
            call = comp.shared.pop()
            return call, self._choose(comp, free)
        if owner is None or best is None:
            return None
        if limiter is not None and not limiter.admit(best[3]):
            return None
        return owner.queue.pop(), owner

    def _admit(self, component: str, hint: str | None = None) -> None:
        """Admit what fits on ``component``; ``hint`` names the one instance whose state changed."""
        while True:
            with self._lock:
                comp = self._components.get(component)
                if comp is None:
                    return
                picked = self._next(comp, hint)
                if picked is None:
                    return
                call, ctl = picked
                ctx = call.context
                self._unwait(call)
                ctl.in_flight += 1
                call.admitted_at = time.monotonic()
                call.admitted = True
                call.instance = ctx.executor = ctl.instance
                self._queued.get(ctx.session, {}).pop(id(call), None)
                sess = self._session(ctx.session)
                sess.queued -= 1
                sess.in_flight += 1
                sess.waiting_s += call.admitted_at - call.enqueued_at
                if call.stateful:
                    # Affinity follows the session to where its calls run (a call that
                    # spilled from a full instance moves it).
                    old = self._routes.get((ctx.session, component))
                    if old != ctl.instance:
                        self._routes[(ctx.session, component)] = ctl.instance
                        if old is not None:
                            sess.migrations += 1
                sess.location[component] = ctl.instance
            try:
                self._dispatch(call, ctl)
            except Exception as exc:  # the dispatcher could not even start the call
                logger.exception("dispatch of call %s failed", ctx.call_id)
                if self._fail is not None:
                    self._fail(call, exc)
                else:
                    call.future._finish("error", exception=exc)
                    self.complete(call)

    def complete(self, call: Call) -> None:
        """Record a finished call and admit the next one on its component."""
        with self._lock:
            ctl = self.instances.get(call.instance or "")
            if ctl is None:
                return
            call.finished_at = time.monotonic()
            ctl.record(call)
            comp_of = self._components.get(ctl.component)
            if comp_of is not None:
                comp_of.full = False
            drained: Callable[[], None] | None = None
            if ctl.draining and ctl.in_flight == 0:
                self.instances.pop(ctl.instance, None)
                drained, ctl.on_drained = ctl.on_drained, None
            sess = self._session(call.context.session)
            sess.in_flight -= 1
            sess.completed += 1
            sess.attained_s += call.finished_at - call.admitted_at
            if not sess.queued and not sess.in_flight:
                self._went_idle(sess.session)
        if self.limiter is not None:
            self.limiter.done(call)
        if drained is not None:
            run_drained(drained, ctl.instance)
        self._admit(ctl.component, ctl.instance)

    # -- decisions ---------------------------------------------------------
    def route(self, session: str, component: str, instance: str) -> None:
        """Bind the session's new calls to ``component`` to ``instance``."""
        with self._lock:
            ctl = self.instances.get(instance)
            if ctl is not None and ctl.component == component:
                self._routes[(session, component)] = instance
                self._session(session).location[component] = instance

    def route_weights(self, component: str, instances: tuple[str, ...], weights: tuple[float, ...]) -> None:
        """Spread unbound calls of ``component`` over ``instances`` by weight."""
        with self._lock:
            comp = self._components.get(component)
            if comp is not None:
                comp.weights = (tuple(instances), tuple(weights))

    def set_priority(self, session: str, value: float, component: str | None = None) -> None:
        """Set a session's priority; its calls already queued are reordered at once."""
        touched: set[str] = set()
        with self._lock:
            sess = self._session(session)
            sess.priority, sess.priority_set = value, True
            for call in list(self._queued.get(session, {}).values()):
                if component is not None and call.context.component != component:
                    continue
                queue = call.queue
                if queue is None or call.context.priority == value or call.extra.get("deferred"):
                    continue  # a deferred call stays behind
                queue.remove(call)
                call.context.priority = value
                self._push(queue, call)
                touched.add(call.context.component)

    def migrate(self, session: str, src: str, dst: str) -> int:
        """Move the session's queued calls and its affinity from ``src`` to ``dst``."""
        with self._lock:
            s_ctl, d_ctl = self.instances.get(src), self.instances.get(dst)
            if s_ctl is None or d_ctl is None or s_ctl.component != d_ctl.component:
                return 0
            moved = [c for c in self._queued.get(session, {}).values() if c.queue is s_ctl.queue]
            for c in moved:
                s_ctl.queue.remove(c)
                self._push(d_ctl.queue, c)
            self._routes[(session, d_ctl.component)] = dst
            sess = self._session(session)
            sess.location[d_ctl.component] = dst
            sess.migrations += 1
        self._admit(d_ctl.component)
        return len(moved)

    def set_ready_at(self, instance: str, when: float) -> None:
        """Admit nothing to ``instance`` before ``when`` (monotonic), e.g. while it warms up."""
        with self._lock:
            ctl = self.instances.get(instance)
            if ctl is not None:
                ctl.ready_at = when
        if ctl is not None:
            threading.Timer(max(0.0, when - time.monotonic()), self._refresh, args=(ctl.component,)).start()

    def queued(self, component: str) -> int:
        """Calls of ``component`` queued (shared and bound), not admitted yet."""
        with self._lock:
            comp = self._components.get(component)
            if comp is None:
                return 0
            return len(comp.shared) + sum(len(self.instances[i].queue) for i in comp.instances)

    def set_move_cost(self, instance: str, seconds: float | None) -> None:
        """Declare what moving ``instance`` to another component costs (its warm-up there), wall seconds."""
        self._set(instance, move_cost_s=seconds)

    def set_moved_from(self, instance: str, source: str) -> None:
        """Note that a move of ``source`` made ``instance`` (the same engine, in another component)."""
        self._set(instance, moved_from=source)

    def mark_moving(self, instance: str, component: str | None) -> None:
        """Mark ``instance`` as moving to ``component`` (make before break; ``None``: not moving)."""
        self._set(instance, moving_to=component)

    def _set(self, instance: str, **attrs: Any) -> None:
        with self._lock:
            ctl = self.instances.get(instance)
            for key, value in attrs.items() if ctl is not None else ():
                setattr(ctl, key, value)

    def wake(self) -> None:
        """Try to admit on every component (after a warm-up ends, for example)."""
        for name in list(self._components):
            self._refresh(name)

    def refresh(self, component: str) -> None:
        """Look at ``component``'s queues again (its rate limit has budget again, for example)."""
        self._refresh(component)

    def _refresh(self, component: str) -> None:
        """Look at every instance of ``component`` again (its free slots may have changed silently)."""
        with self._lock:
            comp = self._components.get(component)
            if comp is not None:
                comp.full = False
        self._admit(component)

    # -- metrics -----------------------------------------------------------
    def snapshot(self, tick: int = 0) -> Snapshot:
        """Aggregate the local controllers' metrics; O(instances + active sessions)."""
        with self._lock:
            comps = {
                name: ComponentStats(name, {i: self.instances[i].stats() for i in c.instances},
                                     queue_len=len(c.shared), arrived=c.arrived,
                                     sessions_arrived=c.sessions_arrived, slo_s=c.slo_s,
                                     rejected=c.rejected, deferred=c.deferred, max_instances=c.max_instances,
                                     inline=c.inline)
                for name, c in self._components.items()
            }
            sessions = dict(self._active)  # live records: policies read, never write
            futures = sum(len(c.shared) for c in self._components.values()) + sum(
                len(i.queue) + i.in_flight for i in self.instances.values()
            )
        return Snapshot(time=time.time(), tick=tick, components=comps, sessions=sessions, futures=futures)
