"""Bounded by configuration, not by load: threads, per-session tables, finished results."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import nalar_plugin as nl

from . import _workflows as w


def _wait_until(check: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_threads_stay_within_the_configured_bound_and_leave_when_idle() -> None:
    with nl.Runtime(worker_slots=8, worker_threads_max=16, worker_thread_idle=0.3) as rt:
        rt.graph("warm")  # the Runtime's own threads are up
        base = threading.active_count()
        futs = [w.sleep(i, 0.02) for i in range(300)]  # synchronous bodies that block
        peak = base
        while not all(f.done() for f in futs):
            peak = max(peak, threading.active_count())
            time.sleep(0.005)
        assert [f.result() for f in futs] == list(range(300))
        assert peak - base <= 16 + 1  # the pool, plus its stall watcher
        assert _wait_until(lambda: threading.active_count() <= base + 1)  # idle threads left


def test_nested_waits_lend_their_slot_within_the_thread_bound() -> None:
    with nl.Runtime(worker_slots=2, worker_threads_max=64) as rt:
        outer = [w.nested_sum(4) for _ in range(6)]  # each waits on nested calls
        assert nl.value(outer, timeout=120) == [12] * 6
        assert rt.calls.in_flight() == 0


def test_per_session_tables_are_bounded() -> None:
    with nl.Runtime(graph_sessions=10, session_cache=20) as rt:
        for i in range(60):
            with rt.session(f"s{i}"):
                w.add(i, 1).result()
        assert len(rt.sessions()) <= 10
        assert rt.plane.sessions_known() <= 20
        assert rt.calls.in_flight() == 0
        assert rt.graph("s59").nodes  # the latest are kept
        rt.forget_session("s59")
        assert rt.graph("s59").nodes == []


def test_a_finished_result_is_released_once_its_future_is() -> None:
    with nl.Runtime() as rt:
        fut = w.make_box(7)
        box = fut.result()
        ref = weakref.ref(box)
        consumer = w.add(fut.context.attempt, 1)  # unrelated call: keeps nothing of the box
        consumer.result()
        del fut, box
        gc.collect()
        assert ref() is None  # nalar keeps no finished value
        assert rt.calls.in_flight() == 0
