"""Local controllers: queues, capacity, late binding, decisions applied at once, metrics."""

from __future__ import annotations

import time
from typing import Any

import pytest

from nalar_plugin.context import CallContext
from nalar_plugin.errors import ConfigError
from nalar_plugin.future import Future
from nalar_plugin.scheduler import Call, ControlPlane, GlobalController, LocalController, Route
from nalar_plugin.scheduler.policies import (
    EDFPolicy,
    FCFSPolicy,
    LASPolicy,
    LeastLoadedPolicy,
    LPTPolicy,
    MigratePolicy,
    SRTFPolicy,
)


class Recorder:
    """A dispatcher that records admissions and lets the test finish calls."""

    def __init__(self) -> None:
        self.admitted: list[tuple[str, str]] = []  # (call label, instance)
        self.running: list[Call] = []

    def __call__(self, call: Call, ctl: LocalController) -> None:
        self.admitted.append((call.extra["label"], ctl.instance))
        self.running.append(call)

    def order(self) -> list[str]:
        return [label for label, _ in self.admitted]


def make_call(label: str, session: str = "s", component: str = "c", priority: float = 0.0,
              deadline: float | None = None, stateful: bool = False, **extra: Any) -> Call:
    ctx = CallContext(session=session, call_id=label, component=component, priority=priority, deadline=deadline)
    return Call(context=ctx, target=None, args=(), kwargs={}, future=Future(ctx), stateful=stateful,
                extra={"label": label, **extra})


def finish(plane: ControlPlane, rec: Recorder, label: str) -> None:
    call = next(c for c in rec.running if c.extra["label"] == label)
    rec.running.remove(call)
    plane.complete(call)


def test_priority_order_ties_fifo_and_capacity() -> None:
    rec = Recorder()
    plane = ControlPlane(rec)
    plane.add_component("c", instances=1, capacity=1)
    plane.enqueue(make_call("first"))  # admitted at once
    for label, prio in [("low-1", 0), ("high-1", 5), ("low-2", 0), ("high-2", 5)]:
        plane.enqueue(make_call(label, priority=prio))
    assert rec.order() == ["first"]  # capacity 1: nothing else admitted
    assert plane.instances["c/0"].in_flight == 1
    for label in ["first", "high-1", "high-2", "low-1"]:
        finish(plane, rec, label)
    assert rec.order() == ["first", "high-1", "high-2", "low-1", "low-2"]


def test_late_binding_instance_fixed_at_admission() -> None:
    rec = Recorder()
    plane = ControlPlane(rec)
    plane.add_component("c", instances=2, capacity=1)
    plane.enqueue(make_call("a"))
    plane.enqueue(make_call("b"))
    plane.enqueue(make_call("waiting"))
    waiting = plane._components["c"].shared.peek()
    assert waiting is not None and waiting[-1].instance is None  # not bound while it waits
    busy_b = dict(rec.admitted)["b"]
    finish(plane, rec, "b")  # whichever instance frees first gets it
    assert dict(rec.admitted)["waiting"] == busy_b


def test_set_priority_reorders_queued_calls_at_once() -> None:
    rec = Recorder()
    plane = ControlPlane(rec)
    plane.add_component("c", instances=1, capacity=1)
    plane.enqueue(make_call("running", session="x"))
    for i in range(3):
        plane.enqueue(make_call(f"s1-{i}", session="s1"))
    plane.enqueue(make_call("s2-0", session="s2"))
    plane.set_priority("s2", 10)
    finish(plane, rec, "running")
    assert rec.order()[1] == "s2-0"
    plane.enqueue(make_call("s2-1", session="s2"))  # new calls of the session inherit it
    finish(plane, rec, "s2-0")
    assert rec.order()[2] == "s2-1"


def test_migrate_moves_queued_calls_and_affinity() -> None:
    rec = Recorder()
    plane = ControlPlane(rec)
    plane.add_component("c", instances=2, capacity=1)
    plane.route("sess", "c", "c/0")
    plane.enqueue(make_call("blocker", session="other", stateful=True))
    other_at = dict(rec.admitted)["blocker"]
    plane.route("sess", "c", other_at)  # bind sess to the busy instance
    plane.enqueue(make_call("q1", session="sess"))
    plane.enqueue(make_call("q2", session="sess"))
    assert len(plane.instances[other_at].queue) == 2
    idle = "c/1" if other_at == "c/0" else "c/0"
    moved = plane.migrate("sess", other_at, idle)
    assert moved == 2
    assert dict(rec.admitted)["q1"] == idle  # admitted on the destination at once
    plane.enqueue(make_call("q3", session="sess"))  # affinity moved too
    finish(plane, rec, "q1")
    finish(plane, rec, "q2")
    assert dict(rec.admitted)["q3"] == idle


def test_routes_apply_to_new_calls_and_stateful_affinity() -> None:
    rec = Recorder()
    plane = ControlPlane(rec)
    plane.add_component("c", instances=3)
    plane.enqueue(make_call("s-0", session="s", stateful=True))
    first = dict(rec.admitted)["s-0"]
    for i in range(1, 4):
        plane.enqueue(make_call(f"s-{i}", session="s", stateful=True))
    assert {inst for label, inst in rec.admitted if label.startswith("s-")} == {first}
    target = next(i for i in plane.instances if i != first)
    plane.route("s", "c", target)
    plane.enqueue(make_call("s-new", session="s", stateful=True))
    assert dict(rec.admitted)["s-new"] == target


def test_metrics_and_snapshot() -> None:
    rec = Recorder()
    plane = ControlPlane(rec)
    plane.add_component("c", instances=1, capacity=1)
    plane.enqueue(make_call("a", session="s1"))
    plane.enqueue(make_call("b", session="s2"))
    snap = plane.snapshot()
    comp = snap.components["c"]
    assert comp.queue_len == 1 and comp.instances["c/0"].in_flight == 1 and snap.futures == 2
    assert snap.sessions["s1"].in_flight == 1 and snap.sessions["s2"].queued == 1
    time.sleep(0.01)
    finish(plane, rec, "a")
    finish(plane, rec, "b")
    stats = plane.instances["c/0"].stats()
    assert stats.completed == 2 and stats.busy_s > 0 and stats.latency_p50 > 0
    s2 = plane._sessions["s2"]
    assert s2.waiting_s > 0 and s2.completed == 1
    assert plane._sessions["s1"].attained_s > 0
    assert plane.snapshot().sessions == {}  # idle sessions leave the snapshot


def test_warmup_blocks_admission() -> None:
    rec = Recorder()
    plane = ControlPlane(rec)
    plane.add_component("c", instances=1)
    plane.set_ready_at("c/0", time.monotonic() + 0.2)
    plane.enqueue(make_call("a"))
    assert rec.order() == []
    deadline = time.monotonic() + 5
    while not rec.admitted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.order() == ["a"]


def _blocked_plane(policy: Any) -> tuple[ControlPlane, Recorder, GlobalController]:
    rec = Recorder()
    plane = ControlPlane(rec)
    plane.add_component("c", instances=1, capacity=1)
    plane.enqueue(make_call("blocker", session="z"))
    return plane, rec, GlobalController(plane, policy)


def _drain(plane: ControlPlane, rec: Recorder) -> list[str]:
    while rec.running:
        finish(plane, rec, rec.running[0].extra["label"])
    return rec.order()[1:]


def test_fcfs_keeps_arrival_order() -> None:
    plane, rec, gc = _blocked_plane(FCFSPolicy())
    for s in ["s1", "s2", "s3"]:
        plane.enqueue(make_call(s, session=s))
    gc.tick()
    assert _drain(plane, rec) == ["s1", "s2", "s3"]


def test_edf_runs_earliest_deadline_first() -> None:
    plane, rec, gc = _blocked_plane(EDFPolicy())
    now = time.time()
    for s, d in [("late", 30), ("soon", 1), ("mid", 10)]:
        plane.enqueue(make_call(s, session=s, deadline=now + d))
    gc.tick()
    assert _drain(plane, rec) == ["soon", "mid", "late"]


def test_srtf_and_lpt_order_by_remaining_time() -> None:
    for policy, expected in [(SRTFPolicy(), ["short", "mid", "long"]), (LPTPolicy(), ["long", "mid", "short"])]:
        plane, rec, gc = _blocked_plane(policy)
        for s, e in [("long", 30.0), ("short", 1.0), ("mid", 10.0)]:
            plane.enqueue(make_call(s, session=s, expected_s=e))
        gc.tick()
        assert _drain(plane, rec) == expected, policy


def test_srtf_ages_a_long_request_so_that_short_ones_cannot_starve_it() -> None:
    order = {}
    for aging in (0.0, 0.5):
        plane, rec, gc = _blocked_plane(SRTFPolicy(aging=aging))
        plane.enqueue(make_call("long", session="long", expected_s=30.0))
        plane._session("long").request_started -= 100.0  # it has waited 100 s already
        plane.enqueue(make_call("short", session="short", expected_s=1.0))  # a new, short request
        gc.tick()
        order[aging] = _drain(plane, rec)
    assert order[0.0] == ["short", "long"]  # plain SRTF: the short request always passes
    assert order[0.5] == ["long", "short"]  # 100 s of age is worth 50 s of service: the long one goes
    with pytest.raises(ConfigError, match="aging"):
        SRTFPolicy(aging=-1)


def test_las_favours_least_attained_service() -> None:
    plane, rec, gc = _blocked_plane(LASPolicy())
    plane._session("heavy").attained_s = 5.0
    plane._session("light").attained_s = 0.5
    plane.enqueue(make_call("heavy", session="heavy"))
    plane.enqueue(make_call("light", session="light"))
    plane.enqueue(make_call("new", session="new"))
    gc.tick()
    assert _drain(plane, rec) == ["new", "light", "heavy"]


def test_least_loaded_picks_the_less_loaded_instance() -> None:
    rec = Recorder()
    plane = ControlPlane(rec)
    plane.chooser = LeastLoadedPolicy().choose
    plane.add_component("c", instances=2)
    plane.route("pinned", "c", "c/0")
    for i in range(5):
        plane.enqueue(make_call(f"p{i}", session="pinned"))
    for i in range(4):
        plane.enqueue(make_call(f"n{i}", session=f"n{i}"))
    placed = [inst for label, inst in rec.admitted if label.startswith("n")]
    assert placed.count("c/1") >= 3  # round robin would put half on the loaded c/0


def test_migrate_policy_moves_blocked_sessions_to_idle_instance() -> None:
    rec = Recorder()
    plane = ControlPlane(rec)
    plane.add_component("c", instances=2, capacity=1)
    for s in ["a", "b"]:
        plane.route(s, "c", "c/0")
        plane.enqueue(make_call(f"{s}-0", session=s))
        plane.enqueue(make_call(f"{s}-1", session=s))
    assert [i for _, i in rec.admitted] == ["c/0"]  # c/1 idle while c/0 blocks
    decisions = GlobalController(plane, MigratePolicy()).tick()
    assert any(d.dst_instance == "c/1" for d in decisions)  # type: ignore[attr-defined]
    assert "c/1" in [i for _, i in rec.admitted]


def test_route_decision_from_global_controller() -> None:
    rec = Recorder()
    plane = ControlPlane(rec)
    plane.add_component("c", instances=2)
    gc = GlobalController(plane, FCFSPolicy())
    gc.apply(Route("s", "c", "c/1"))
    plane.enqueue(make_call("x", session="s"))
    assert dict(rec.admitted)["x"] == "c/1"


def test_ties_go_to_the_older_request_first() -> None:
    rec = Recorder()
    plane = ControlPlane(rec)
    plane.add_component("c", instances=1, capacity=1)
    plane.enqueue(make_call("old-1", session="old"))  # admitted
    plane.enqueue(make_call("new-1", session="new"))  # the newer request arrives
    plane.enqueue(make_call("old-2", session="old"))  # the older request's next call
    finish(plane, rec, "old-1")
    finish(plane, rec, "old-2")
    # The older request's follow-up goes before the newer request's first call.
    assert rec.order() == ["old-1", "old-2", "new-1"]
    finish(plane, rec, "new-1")


def _two_requests_after_idle(gap_s: float, pause_s: float) -> list[str]:
    """``old`` runs, goes idle for ``pause_s``, then calls again behind a newer request."""
    rec = Recorder()
    plane = ControlPlane(rec, request_gap_s=gap_s)
    plane.add_component("c", instances=1, capacity=1)
    plane.enqueue(make_call("old-1", session="old"))
    plane.enqueue(make_call("new-1", session="new"))  # waits: the slot is taken
    finish(plane, rec, "old-1")  # old is idle now, new-1 runs
    time.sleep(pause_s)
    plane.enqueue(make_call("new-2", session="new"))
    plane.enqueue(make_call("old-2", session="old"))
    finish(plane, rec, "new-1")
    return rec.order()


def test_a_short_idle_between_graph_steps_keeps_the_request_age() -> None:
    # Idle only for an instant between two steps of one run: still the older request.
    assert _two_requests_after_idle(gap_s=0.5, pause_s=0.0) == ["old-1", "new-1", "old-2"]


def test_a_session_idle_past_the_gap_starts_a_newer_request() -> None:
    # Idle for longer than the gap: its next call is a new request, behind ``new``'s.
    assert _two_requests_after_idle(gap_s=0.02, pause_s=0.05) == ["old-1", "new-1", "new-2"]


def test_affinity_yields_when_its_instance_is_full_and_another_has_room() -> None:
    rec = Recorder()
    plane = ControlPlane(rec, affinity_slack=1)  # what least_loaded, migrate and nalar enforce
    plane.add_component("c", instances=2, capacity=2)
    plane.route("s", "c", "c/0")
    for i in range(4):
        plane.enqueue(make_call(f"s{i}", session="s", stateful=True))
    placed = dict(rec.admitted)
    # c/0 fills up; the third call does not wait behind it while c/1 is idle.
    assert [placed[f"s{i}"] for i in range(3)] == ["c/0", "c/0", "c/1"]
    assert plane.snapshot().sessions["s"].migrations == 1  # affinity moved with it
    stuck = ControlPlane(Recorder(), affinity_slack=None)
    stuck.add_component("c", instances=2, capacity=2)
    stuck.route("s", "c", "c/0")
    for i in range(3):
        stuck.enqueue(make_call(f"s{i}", session="s", stateful=True))
    assert stuck.instances["c/1"].in_flight == 0  # with affinity that never yields, it waits
