"""Rate limits per component (rpm, tpm): held in the scheduler's buckets, spent by leases.

The guarantee checked everywhere: over any window of ``W`` seconds, what starts is at
most ``capacity + rate x W`` (``capacity = max(1, rate x burst_s)``), summed over every
driver of the cluster.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import LocalCluster

import nalar_plugin as nl
from nalar_plugin.errors import ConfigError
from nalar_plugin.scheduler.limits import LimitBook, RateLimit
from nalar_plugin.testing import EngineConfig, SimulatedChatModel, SimulatedEngine

from ._rate_driver import Admissions

ROOT = Path(__file__).resolve().parents[2]
OUTPUT_ESTIMATE = 50  # nalar.rate-output-tokens of the Runtime below


def excess(times: list[float], capacity: float, rate: float, slack_s: float = 0.0, slack: float = 0.0,
           weights: list[float] | None = None) -> float:
    """The most any window goes over ``capacity + rate x (W + slack_s) + slack`` (<= 0: never).

    ``weights`` (tokens per start) default to one per start.
    """
    pairs = sorted(zip(times, weights or [1.0] * len(times)))
    worst = -float("inf")
    for i in range(len(pairs)):
        total = 0.0
        for j in range(i, len(pairs)):
            total += pairs[j][1]
            worst = max(worst, total - (capacity + rate * (pairs[j][0] - pairs[i][0] + slack_s) + slack))
    return worst


class Stamped:
    """An endpoint that records when each call started, itself."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self._lock = threading.Lock()

    def ask(self, i: int) -> int:
        with self._lock:
            self.starts.append(time.monotonic())
        return i


@pytest.fixture(scope="module")
def rt() -> Iterator[nl.Runtime]:
    with nl.Runtime(tick_interval=0.05, state_dir=tempfile.mkdtemp(), rate_output_tokens=OUTPUT_ESTIMATE) as runtime:
        yield runtime


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("limits", [
    {"rpm": 0}, {"rpm": -5}, {"rpm": "60"}, {"rpm": True}, {"rpm": float("nan")}, {"rpm": float("inf")},
    {"tpm": 0}, {"tpm": -1.5}, {"tpm": [100]}, {"rpm": 60, "burst_s": 0}, {"rpm": 60, "burst_s": "1s"},
])
def test_invalid_limits_are_refused(rt: nl.Runtime, limits: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"component 'bad': (rpm|tpm|burst_s) must be"):
        rt.deploy("bad", [Stamped()], **limits)
    assert "bad" not in rt.components.names()  # nothing half-deployed: the name is still free


def test_invalid_limits_of_a_model_are_refused(rt: nl.Runtime) -> None:
    model = SimulatedChatModel(engine=SimulatedEngine("refused"), prompt_tokens=1, output_tokens=1)
    with pytest.raises(ConfigError, match="tpm must be"):
        rt.deploy_model("bad-model", [model], tpm=-10)
    with pytest.raises(ConfigError, match="rpm must be"):
        rt.deploy_model("bad-model", [model], rpm="fast")
    assert "bad-model" not in rt.components.names()


def test_the_rule() -> None:
    limit = RateLimit.checked(rpm=600, tpm=6000, burst_s=0.5)
    assert limit is not None
    assert limit.request_capacity == 5.0 and limit.token_capacity == 50.0
    assert RateLimit(rpm=6).request_capacity == 1.0  # at least one call
    assert RateLimit.checked(burst_s=3) is None  # no limit given


# -- the scheduler's book, on its own clock ----------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_leases_of_two_drivers_keep_the_window_bound() -> None:
    """Two drivers take leases, spend them at random moments, give back or let expire: starts stay bounded."""
    clock = _Clock()
    book = LimitBook(ttl=0.5, clock=clock)
    rate, cap = 20.0, 5.0
    book.configure("c", rpm=rate * 60, burst_s=cap / rate)
    rng = random.Random(7)
    leases: dict[str, list[Any]] = {"a": [None, 0.0, 0.0], "b": [None, 0.0, 0.0]}  # id, requests left, expiry
    starts: list[float] = []
    while clock.now < 20.0:
        clock.now += rng.expovariate(200.0)
        drv = rng.choice("ab")
        lid, left, expires = leases[drv]
        if lid is not None and left >= 1 and clock.now < expires * 0.999:
            leases[drv][1] -= 1
            starts.append(clock.now)
            continue
        returning = [lid, left, 0.0] if lid is not None and rng.random() < 0.7 else None  # else it expires
        got = book.exchange("c", drv, want_requests=rng.choice([1, 2, 5]), returning=returning)
        leases[drv] = [got["lease"], got["requests"], clock.now + got["ttl"]]
        if got["lease"] is None:
            assert got["wait"] > 0
    assert len(starts) > 300  # the budget was used, close to its rate
    assert excess(starts, cap, rate) <= 1e-9


def test_overspend_is_debt_and_underspend_is_refunded() -> None:
    clock = _Clock()
    book = LimitBook(clock=clock)
    book.configure("m", tpm=6000, burst_s=1.0)  # 100 tokens/s, 100 in a full bucket
    got = book.exchange("m", "d", want_tokens=100, need_tokens=100)
    assert got["tokens"] == 100
    # The call used 250: 150 of debt, charged when it completes.
    book.exchange("m", "d", settle=150, returning=[got["lease"], 0, 0.0])
    refused = book.exchange("m", "d", want_tokens=10, need_tokens=10)
    assert refused["lease"] is None and refused["wait"] == pytest.approx(1.6)  # (150 + 10) / 100 per second
    clock.now += 1.6
    assert book.exchange("m", "d", want_tokens=10, need_tokens=10)["tokens"] == pytest.approx(10)
    # Underspend comes back, never above the capacity.
    book.exchange("m", "d", settle=-1000)
    assert book.view()["m"]["tokens"]["level"] == pytest.approx(100 - 10)  # the 10 tokens are still on lease
    assert book.view()["m"]["refunded_tokens"] == 1000 and book.view()["m"]["debt_tokens"] == 150


# -- one driver -----------------------------------------------------------------------------------------
def test_requests_per_minute_in_one_process(rt: nl.Runtime) -> None:
    rate, burst_s = 10.0, 0.2  # rpm=600: 10 calls a second, a burst of 2
    endpoint = Stamped()
    admissions = Admissions("rpm-ep")
    rt.register_plugin(admissions)
    rt.deploy("rpm-ep", [endpoint], rpm=rate * 60, burst_s=burst_s)
    futs = []
    for s in range(3):
        with rt.session(f"rpm-{s}"):
            futs += [rt.call("rpm-ep", "ask", s * 10 + i) for i in range(10)]
    assert sorted(f.result(timeout=30) for f in futs) == list(range(30))  # none lost
    cap = max(1.0, rate * burst_s)
    assert len(admissions.at) == 30 and len(endpoint.starts) == 30
    assert excess(admissions.at, cap, rate, slack_s=0.01) <= 0
    assert excess(endpoint.starts, cap, rate, slack_s=0.05) <= 0  # as the instance saw them
    stats = rt.stats()["rate_limits"]["rpm-ep"]
    assert stats["admitted"] == 30 and stats["rpm"] == 600
    assert stats["limited"] >= 25 and stats["wait_s"] > 0


def test_tokens_per_minute_settle_with_what_the_model_reports(rt: nl.Runtime) -> None:
    """Each call is estimated at 51 tokens and uses 220: the debt paces the calls to the tpm."""
    rate, burst_s = 2000.0, 0.25  # tpm=120,000: 2000 tokens a second, 500 in a full bucket
    used = 20 + 200
    model = SimulatedChatModel(engine=SimulatedEngine("tpm", EngineConfig(time_scale=0.001)),
                               prompt_tokens=20, output_tokens=200)
    rt.deploy_model("tpm-chat", [model], capacity=1, tpm=rate * 60, burst_s=burst_s)
    cb = rt.callback()
    answers = [model.invoke(f"q{i}", config={"callbacks": [cb]}) for i in range(24)]
    starts = [a.response_metadata["nalar_generation"]["submitted_at"] for a in answers]  # the engine's clock
    tokens = [float(a.usage_metadata["total_tokens"]) for a in answers]
    assert tokens == [used] * 24
    estimate = 1 + OUTPUT_ESTIMATE  # "q1" is 2 characters: 1 token, plus the output estimate
    cap = rate * burst_s
    # One call at a time: at most the latest call's overspend is not charged yet.
    assert excess(starts, cap, rate, slack_s=0.05, slack=used - estimate, weights=tokens) <= 0
    stats = rt.stats()["rate_limits"]["tpm-chat"]
    assert stats["tokens_reserved"] == 24 * estimate
    assert stats["tokens_used"] == 24 * used
    assert stats["tokens_debt"] == 24 * (used - estimate)
    assert stats["limited"] > 0
    bucket = rt.limits.view()["tpm-chat"]
    assert bucket["granted_tokens"] + bucket["debt_tokens"] >= 24 * used - cap  # the scheduler charged the debt


def test_underspend_is_refunded(rt: nl.Runtime) -> None:
    model = SimulatedChatModel(engine=SimulatedEngine("refund", EngineConfig(time_scale=0.001)),
                               prompt_tokens=3, output_tokens=7)
    rt.deploy_model("refund-chat", [model], tpm=60_000)
    cb = rt.callback()
    answers = [model.invoke("hi", config={"callbacks": [cb]}) for _ in range(5)]
    assert all(a.usage_metadata["total_tokens"] == 10 for a in answers)
    stats = rt.stats()["rate_limits"]["refund-chat"]
    assert stats["tokens_reserved"] == 5 * (1 + OUTPUT_ESTIMATE)
    assert stats["tokens_refunded"] == 5 * (1 + OUTPUT_ESTIMATE - 10)
    assert stats["tokens_debt"] == 0


# -- two drivers, one cluster ---------------------------------------------------------------------------
def test_two_driver_processes_share_one_budget(tmp_path: Path) -> None:
    rate, burst_s, calls = 20.0, 0.25, 30  # rpm=1200, a burst of 5, 60 calls in all
    cap = max(1.0, rate * burst_s)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "from tests.scheduler._rate_driver import main; main()"
    with LocalCluster(processes=False, n_workers=1, threads_per_worker=8, protocol="tcp", host="127.0.0.1",
                      scheduler_port=0, dashboard_address=None) as cluster:
        go = tmp_path / "go"
        outs = [tmp_path / f"d{i}.json" for i in range(2)]
        drivers = [subprocess.Popen([sys.executable, "-c", code, cluster.scheduler_address, str(out), str(go),
                                     str(calls), str(rate * 60), str(burst_s)],
                                    env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for out in outs]
        try:
            deadline = time.monotonic() + 60
            while not all(Path(f"{o}.ready").exists() for o in outs):
                assert time.monotonic() < deadline and all(d.poll() is None for d in drivers), \
                    [d.communicate()[1][-3000:] for d in drivers if d.poll() is not None]
                time.sleep(0.02)
            go.touch()
            for d in drivers:
                _, err = d.communicate(timeout=60)
                assert d.returncode == 0, err[-3000:]
        finally:
            for d in drivers:
                if d.poll() is None:
                    d.kill()
    results = [json.loads(o.read_text()) for o in outs]
    for r in results:
        assert len(r["starts"]) == calls and len(r["admitted"]) == calls  # none lost
        assert r["stats"]["admitted"] == calls
    admitted = [t for r in results for t in r["admitted"]]
    starts = [t for r in results for t in r["starts"]]
    assert excess(admitted, cap, rate, slack_s=0.01) <= 0  # summed over both drivers
    assert excess(starts, cap, rate, slack_s=0.05) <= 0  # as the instances saw them
    # Both drivers were served while both were calling: each had a share of the first half.
    middle = sorted(admitted)[len(admitted) // 2]
    for r in results:
        assert sum(t < middle for t in r["admitted"]) >= calls // 4
