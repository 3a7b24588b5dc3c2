"""Components deployed by name: endpoint instances and hosted instances, on threads and processes."""

from __future__ import annotations

import pytest

import nalar_plugin as nl
from nalar_plugin.errors import ConfigError

from .. import _workflows as w


def test_endpoint_instances_receive_the_call_at_admission(rt: nl.Runtime) -> None:
    name = f"replicas-{rt.token}"
    ids = rt.deploy(name, [w.Replica("a"), w.Replica("b")], capacity=1, stateful=False)
    assert len(ids) == 2 and set(rt.instances(name)) == set(ids)
    futs = [rt.call(name, "ask", i, 0.2) for i in range(4)]
    answers = [f.result() for f in futs]
    assert {a.split(":")[0] for a in answers} == {"a", "b"}  # both replicas served
    # The instance was bound at admission, and it is what served the call.
    for f, a in zip(futs, answers):
        assert rt.instances(name)[f.context.executor].name == a.split(":")[0]


def test_stateful_sessions_stick_to_their_instance(rt: nl.Runtime) -> None:
    name = f"sticky-{rt.token}"
    rt.deploy(name, [w.Replica("a"), w.Replica("b"), w.Replica("c")], capacity=4)
    with rt.session("sticky"):
        served = {rt.call(name, "ask", i).result().split(":")[0] for i in range(6)}
    assert len(served) == 1


def test_hosted_instances_keep_their_state(rt: nl.Runtime) -> None:
    name = f"counter-{rt.token}"
    rt.deploy(name, w.Counter, n=2, capacity=1, stateful=False)
    futs = [rt.component(name).incr() for _ in range(6)]  # capacity 1 each: both objects work
    results = sorted(f.result() for f in futs)
    # Two objects, each counting its own calls: the counts are 1..k1 and 1..k2, k1 + k2 = 6.
    assert results.count(1) == 2
    k1 = max(results)
    k2 = 6 - k1
    assert results == sorted(list(range(1, k1 + 1)) + list(range(1, k2 + 1)))
    assert rt.component(name).aget().result() in (k1, k2)


def test_component_errors_are_clear(rt: nl.Runtime) -> None:
    with pytest.raises(ConfigError, match="no component named 'nope'"):
        rt.call("nope", "ask", 1)
    name = f"dup-{rt.token}"
    rt.deploy(name, [w.Replica("a")])
    with pytest.raises(ConfigError, match="already deployed"):
        rt.deploy(name, [w.Replica("b")])
    with pytest.raises(ConfigError, match="at least one instance"):
        rt.deploy(f"empty-{rt.token}", [])
    with pytest.raises(AttributeError, match="no method 'missing'"):
        rt.call(name, "missing")
