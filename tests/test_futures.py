"""Futures and stubs on a real LocalCluster, in threads and processes mode."""

from __future__ import annotations

import asyncio
import json
import time
import traceback

import pytest

import nalar_plugin as nl
from nalar_plugin.errors import CallTimeoutError, UnsatisfiableResourcesError

from . import _workflows as w


def test_stub_call_returns_future_at_once(rt: nl.Runtime) -> None:
    t0 = time.perf_counter()
    fut = w.sleep(1, 1.0)
    returned_after = time.perf_counter() - t0
    assert isinstance(fut, nl.Future)
    assert not fut.available()
    assert returned_after < 0.5  # the call did not run in the caller
    assert fut.result() == 1
    assert fut.done() and fut.available()


def test_future_api(rt: nl.Runtime) -> None:
    fut = w.add(2, 3)
    seen: list[int] = []
    fut.add_done_callback(lambda f: seen.append(f.result()))
    assert fut.value(timeout=30) == 5
    assert fut.result() == 5
    assert fut.exception() is None
    deadline = time.time() + 10
    while not seen and time.time() < deadline:
        time.sleep(0.01)
    assert seen == [5]
    late: list[int] = []
    fut.add_done_callback(lambda f: late.append(f.result()))  # already done: runs at once
    assert late == [5]


def test_value_timeout(rt: nl.Runtime) -> None:
    fut = w.sleep("x", 2.0)
    with pytest.raises(CallTimeoutError):
        fut.value(timeout=0.05)
    assert fut.value() == "x"


async def test_await_future(rt: nl.Runtime) -> None:
    fut = w.asleep(7, 0.05)
    assert await fut == 7
    results = await asyncio.gather(*[w.asleep(i, 0.05) for i in range(10)])
    assert results == list(range(10))


def test_futures_as_arguments_make_dependencies(rt: nl.Runtime) -> None:
    a = w.add(1, 2)
    b = w.add(a, 10)
    c = w.total([a, b, w.add(3, 4)])
    d = w.total({"x": a, "y": b})
    assert c.result() == 3 + 13 + 7
    assert d.result() == 16
    assert b.context.dependencies == [a.call_id]
    assert set(c.context.dependencies) >= {a.call_id, b.call_id}
    assert b.call_id in a.context.consumers and c.call_id in a.context.consumers


def test_dependent_released_as_soon_as_its_input_exists(rt: nl.Runtime) -> None:
    # The consumer of a fast input must not wait for an unrelated slow sibling:
    # there is no barrier between independent branches.
    slow = w.sleep("slow", 1.5)
    fast = w.sleep("fast", 0.01)
    after_fast = w.stamp(fast)
    ran_at = after_fast.result()
    assert not slow.done()
    slow_done_at = time.time() + 0  # slow finishes later than the consumer ran
    assert slow.result() == "slow"
    assert ran_at < slow_done_at


def test_failed_input_fails_consumer(rt: nl.Runtime) -> None:
    bad = w.explode("boom")
    consumer = w.add(bad, 1)
    with pytest.raises(w.CustomError, match="boom"):
        consumer.result()


def test_exception_keeps_type_and_traceback(rt: nl.Runtime) -> None:
    fut = w.explode("kaput")
    with pytest.raises(w.CustomError, match="kaput") as info:
        fut.result()
    frames = "".join(traceback.format_tb(info.value.__traceback__))
    assert "explode" in frames and "_workflows.py" in frames
    assert isinstance(fut.exception(), w.CustomError)


def test_context_fields(rt: nl.Runtime) -> None:
    a = w.add(1, 1)
    b = w.add(a, 1, )
    b.result()
    ctx = b.context
    for field in ("session", "call_id", "parent", "dependencies", "creator", "executor", "consumers",
                  "priority", "deadline", "attempt"):
        assert hasattr(ctx, field)
    assert ctx.creator == "driver" and ctx.parent is None
    assert ctx.executor == "add/0"
    assert ctx.attempt == 0
    assert ctx.session == a.context.session  # a top-level consumer joins its inputs' session


def test_each_top_level_call_starts_a_new_session(rt: nl.Runtime) -> None:
    a, b = w.add(1, 1), w.add(2, 2)
    assert a.context.session != b.context.session


def test_session_scope_sync(rt: nl.Runtime) -> None:
    with rt.session("sess-sync", priority=5) as sid:
        a = w.add(1, 1)
        b = w.whoami()
    assert sid == "sess-sync"
    assert a.context.session == "sess-sync" and a.context.priority == 5
    assert b.result()["session"] == "sess-sync"
    assert w.add(1, 1).context.session != "sess-sync"


async def test_session_scope_async(rt: nl.Runtime) -> None:
    async def one(name: str) -> str:
        async with rt.session(name):
            await asyncio.sleep(0.01)  # interleave the tasks
            info = await w.whoami()
            return info["session"]

    got = await asyncio.gather(*[one(f"as-{i}") for i in range(5)])
    assert got == [f"as-{i}" for i in range(5)]


def test_session_flows_into_nested_calls_threads(rt: nl.Runtime) -> None:
    with rt.session("nest-1"):
        out = w.child_context().result()
    assert out["outer"]["session"] == "nest-1"
    assert out["inner"]["session"] == "nest-1"
    assert out["inner"]["parent"] == out["outer"]["call_id"]


def test_session_flows_into_nested_calls_asyncio(rt: nl.Runtime) -> None:
    with rt.session("nest-2"):
        out = w.async_child_context().result()
    assert out["inner"]["session"] == "nest-2"
    assert out["inner"]["parent"] == out["outer"]["call_id"]


def test_nested_calls_appear_in_graph(rt: nl.Runtime) -> None:
    with rt.session("nest-graph"):
        assert w.nested_sum(4).result() == 12
    deadline = time.time() + 10
    while time.time() < deadline:  # worker processes report nested calls as Dask events
        g = rt.graph("nest-graph")
        if len(g) == 5 and all(n["status"] == "finished" for n in g.nodes):
            break
        time.sleep(0.05)
    kinds = {e["kind"] for e in g.edges}
    assert len(g) == 5 and kinds == {"spawn"}
    assert all(n["status"] == "finished" for n in g.nodes), g.nodes


def test_graph_json_and_dot(rt: nl.Runtime) -> None:
    with rt.session("graph-1"):
        a = w.add(1, 2)
        b = w.add(a, 3)
        c = w.total([a, b])
        c.result()
    g = rt.graph("graph-1")
    data = json.loads(g.to_json())
    assert {n["call_id"] for n in data["nodes"]} == {a.call_id, b.call_id, c.call_id}
    assert {(e["src"], e["dst"]) for e in data["edges"]} == {
        (a.call_id, b.call_id), (a.call_id, c.call_id), (b.call_id, c.call_id)
    }
    dot = g.to_dot()
    assert dot.startswith('digraph "graph-1"') and f'"{a.call_id}" -> "{b.call_id}"' in dot


def test_materialising_a_future(rt: nl.Runtime) -> None:
    words = w.add(["a", "b"], ["c"])
    assert len(words) == 3
    assert list(words) == ["a", "b", "c"]
    assert words[0] == "a" and "c" in words
    n = w.add(2, 3)
    assert n + 1 == 6 and 1 + n == 6 and n * 2 == 10 and n - 1 == 4 and n / 5 == 1.0
    assert n > 4 and n <= 5 and n == 5 and n != 6
    assert str(n) == "5" and int(n) == 5 and float(n) == 5.0 and bool(n)
    s = w.add("ab", "c")
    assert s.upper() == "ABC"  # attribute access
    assert nl.value(n) == 5 and nl.value(5) == 5 and nl.value([n, 1]) == [5, 1]


def test_thousand_io_bound_calls_are_not_capped_by_threads(rt: nl.Runtime) -> None:
    # 1,000 calls that each await 0.5 s; capped at two worker threads they would
    # take over four minutes. The bound here is loose on purpose: the speed goal
    # lives in `nalar bench calls`.
    t0 = time.perf_counter()
    futs = [w.asleep(i, 0.5) for i in range(1000)]
    assert sum(nl.value(futs)) == sum(range(1000))
    assert time.perf_counter() - t0 < 60


def test_hosted_object_keeps_state(rt: nl.Runtime) -> None:
    counter = w.Counter(10)
    assert counter.incr().result() == 11
    assert counter.incr(5).result() == 16
    assert counter.aget().result() == 16
    assert isinstance(counter.where().result(), int)
    with pytest.raises(AttributeError):
        counter.missing  # noqa: B018


def test_unsatisfiable_resources_fail_with_a_clear_error(rt: nl.Runtime) -> None:
    fut = w.needs_gpu()
    with pytest.raises(UnsatisfiableResourcesError, match="GPU"):
        fut.result(timeout=30)


def test_plain_workflow_same_with_and_without_runtime(rt: nl.Runtime) -> None:
    with_rt = w.workflow("how many futures are there")
    assert isinstance(with_rt["n"], int)
    nl.Runtime.__module__  # keep the runtime open
    # Same code, run as plain Python: no Runtime is active inside the helper.
    from nalar_plugin import context

    saved = list(context._RUNTIMES)
    context._RUNTIMES.clear()
    try:
        plain = w.workflow("how many futures are there")
    finally:
        context._RUNTIMES.extend(saved)
    assert with_rt == plain
