"""Stubs and directives, with and without a Runtime."""

from __future__ import annotations

import asyncio

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
    stub = nl.agent(stateful=True, batchable=True, preemptable=True, min_instances=2, max_instances=4,
                    resources={"GPU": 0.5})(lambda x: x)
    d = stub.directives
    assert (d.stateful, d.batchable, d.preemptable, d.min_instances, d.max_instances) == (True, True, True, 2, 4)
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
