"""Stubs and directives, with and without a Runtime."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import nalar_plugin as nl
from nalar_plugin.errors import DirectiveError

from . import _workflows as w


def test_no_runtime_runs_plain_python() -> None:
    assert nl.active_runtime() is None
    assert w.add(1, 2) == 3
    assert w.total([1, 2]) == 3
    assert w.asleep(5, 0) == 5  # sync code calling an async stub gets its value
    counter = w.Counter(1)
    assert isinstance(counter, w.Counter.cls)
    assert counter.incr() == 2
    with pytest.raises(w.CustomError):
        w.explode("plain")


async def test_no_runtime_async_stub_is_awaitable() -> None:
    assert await w.asleep(3, 0) == 3
    assert await asyncio.gather(w.asleep(1, 0), w.asleep(2, 0)) == [1, 2]


@pytest.mark.parametrize(
    ("directives", "message"),
    [
        ({"stateful": "yes"}, "stateful"),
        ({"min_instances": -1}, "min_instances"),
        ({"min_instances": 0}, "needs an instance"),
        ({"batchable": True}, "batchable=True is not supported"),
        ({"preemptable": True}, "preemptable=True is not supported"),
        ({"max_instances": 0}, "max_instances"),
        ({"min_instances": 3, "max_instances": 2}, "below min_instances"),
        ({"resources": ["GPU"]}, "resources"),
        ({"resources": {"GPU": 0}}, "amounts must be numbers > 0"),
        ({"resources": {"GPU": True}}, "resources"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_directives_fail_clearly(directives: dict, message: str) -> None:
    with pytest.raises(DirectiveError, match=message) as info:
        nl.agent(name="my-agent", **directives)(lambda: None)
    assert "my-agent" in str(info.value)


def test_good_directives_are_kept() -> None:
    stub = nl.agent(stateful=True, min_instances=2, max_instances=4, resources={"GPU": 0.5})(lambda x: x)
    d = stub.directives
    assert (d.stateful, d.batchable, d.preemptable, d.min_instances, d.max_instances) == (True, False, False, 2, 4)
    assert d.resources == {"GPU": 0.5}
    assert nl.tool(idempotent=True)(lambda: 1).directives.idempotent is True
    with pytest.raises(DirectiveError):
        nl.tool(42)  # type: ignore[call-overload]


def test_stub_options_are_validated() -> None:
    with pytest.raises(DirectiveError, match="unknown call option"):
        w.add.options(colour="red")
    with nl.Runtime() as rt:
        fut = w.add.options(priority=3, session="opt-s")(1, 1)
        assert fut.context.priority == 3 and fut.context.session == "opt-s"
        assert fut.result() == 2
        assert rt.graph("opt-s").nodes[0]["priority"] == 3


def test_min_and_max_instances_act(tmp_path: Any) -> None:
    from nalar_plugin.errors import ConfigError

    with nl.Runtime(state_dir=str(tmp_path / "state")) as rt:
        futs = [w.pair_sleep(i, 0.2) for i in range(4)]  # min_instances=2, one call each at once
        assert nl.value(futs) == [0, 1, 2, 3]
        assert rt.instances("pair_sleep") and len(rt.instances("pair_sleep")) == 2
        assert {f.context.executor for f in futs} == {"pair_sleep/0", "pair_sleep/1"}
        with pytest.raises(ConfigError, match="max_instances=2"):
            rt.plane.add_instance("pair_sleep")  # what a provision decision would do
