"""Each built-in policy on the simulated engine farm, against fcfs on the same load.

Every comparison runs both policies in the same test on the same seeded load and
checks a ratio with a wide margin; the speed goals themselves live in benchmarks.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nalar_plugin as nl
from nalar_plugin.testing import EngineConfig, EngineFarm, FarmProvisioner

SCALE = 0.03  # 1 model second = 30 ms: engine time dominates Dask overhead and CPU noise


def run_farm(policy: str, pools: dict[str, int], load: Callable[[nl.Runtime], Awaitable[Any]], *,
             max_batch: int = 2, warmup_s: float = 1.0, stateful: bool = True, bounded: bool = True,
             setup: Callable[[nl.Runtime], None] | None = None) -> tuple[Any, FarmProvisioner]:
    farm = EngineFarm(pools, config=EngineConfig(time_scale=SCALE, max_batch=max_batch, warmup_s=warmup_s), seed=7)
    with nl.Runtime(policy=policy, tick_interval=0.01) as rt:
        prov = FarmProvisioner(rt, farm)
        prov.deploy(stateful=stateful, bounded=bounded)
        if setup is not None:
            setup(rt)
        return asyncio.run(load(rt)), prov


async def timed_call(rt: nl.Runtime, component: str, session: str, prompt: int, output: int, **options: Any) -> float:
    t0 = time.perf_counter()
    with rt.session(session, **options):
        await rt.call(component, "generate", prompt, output, session=session)
    return time.perf_counter() - t0


def test_las_gives_short_sessions_lower_latency_than_fcfs() -> None:
    async def load(rt: nl.Runtime) -> float:
        async def long_session(i: int) -> None:
            for _ in range(4):  # each step fans out 3 calls
                await asyncio.gather(*[timed_call(rt, "chat", f"long-{i}", 500, 200) for _ in range(3)])

        async def short_session(i: int) -> float:
            await asyncio.sleep(0.75 + 0.12 * i)  # every long session has attained service by now
            return await timed_call(rt, "chat", f"short-{i}", 500, 200)

        longs = [asyncio.create_task(long_session(i)) for i in range(4)]
        shorts = await asyncio.gather(*[short_session(i) for i in range(6)])
        await asyncio.gather(*longs)
        return statistics.mean(shorts)

    fcfs, _ = run_farm("fcfs", {"chat": 1}, load)
    las, _ = run_farm("las", {"chat": 1}, load)
    assert las < 0.7 * fcfs, (las, fcfs)


def _pin_to_first(rt: nl.Runtime, sessions: list[str], component: str = "chat") -> None:
    for s in sessions:  # a skewed placement: every session's prefix lives on one engine
        rt.plane.route(s, component, f"{component}/0")


def test_migrate_lowers_p99_of_skewed_stateful_load() -> None:
    sessions = [f"s{i}" for i in range(10)]

    async def load(rt: nl.Runtime) -> float:
        async def session(s: str) -> list[float]:
            return [await timed_call(rt, "chat", s, 800, 150) for _ in range(4)]

        lat = sorted(x for xs in await asyncio.gather(*[session(s) for s in sessions]) for x in xs)
        return lat[int(0.99 * (len(lat) - 1))]

    def setup(rt: nl.Runtime) -> None:
        _pin_to_first(rt, sessions)

    fcfs, _ = run_farm("fcfs", {"chat": 2}, load, setup=setup)
    migrated, _ = run_farm("migrate", {"chat": 2}, load, setup=setup)
    assert migrated < 0.8 * fcfs, (migrated, fcfs)


def test_reallocate_moves_engines_to_the_loaded_component() -> None:
    async def load(rt: nl.Runtime) -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*[timed_call(rt, "code", f"job-{i}", 500, 300) for i in range(24)])
        return time.perf_counter() - t0

    fcfs, prov_f = run_farm("fcfs", {"chat": 3, "code": 1}, load, warmup_s=0.5)
    realloc, prov_r = run_farm("reallocate", {"chat": 3, "code": 1}, load, warmup_s=0.5)
    assert prov_f.moves == []
    assert prov_r.moves and all(src == "chat" and dst == "code" for _, src, dst in prov_r.moves)
    assert realloc < 0.8 * fcfs, (realloc, fcfs)


def test_least_loaded_avoids_the_busy_instance() -> None:
    async def load(rt: nl.Runtime) -> float:
        heavy = [asyncio.create_task(timed_call(rt, "chat", "heavy", 500, 400)) for _ in range(8)]
        await asyncio.sleep(0.15)
        light = await asyncio.gather(*[timed_call(rt, "chat", f"l{i}", 200, 100) for i in range(8)])
        await asyncio.gather(*heavy)
        return statistics.mean(light)

    def setup(rt: nl.Runtime) -> None:
        rt.plane.route("heavy", "chat", "chat/0")

    # Unbounded admission: the engines queue internally, so placement is what matters.
    rr, _ = run_farm("fcfs", {"chat": 2}, load, max_batch=4, stateful=False, bounded=False, setup=setup)
    ll, _ = run_farm("least_loaded", {"chat": 2}, load, max_batch=4, stateful=False, bounded=False, setup=setup)
    assert ll < 0.8 * rr, (ll, rr)


def test_edf_misses_fewer_deadlines_than_fcfs() -> None:
    async def load(rt: nl.Runtime) -> int:
        now = time.time()

        async def one(i: int) -> bool:
            deadline = now + (0.75 if i % 3 == 0 else 15.0)  # a third are urgent
            await asyncio.sleep(0.006 * i)  # urgent ones arrive behind relaxed ones
            await timed_call(rt, "chat", f"d{i}", 500, 200, deadline=deadline)
            return time.time() > deadline

        return sum(await asyncio.gather(*[one(i) for i in range(18)]))

    fcfs, _ = run_farm("fcfs", {"chat": 1}, load)
    edf, _ = run_farm("edf", {"chat": 1}, load)
    assert edf < fcfs, (edf, fcfs)


async def _jobs(rt: nl.Runtime, sizes: list[int]) -> list[float]:
    """Each job is a session of `size` sequential calls, with its size as expected_s."""
    t0 = time.perf_counter()

    async def job(i: int, n: int) -> float:
        for _ in range(n):
            await timed_call(rt, "chat", f"job{i}", 400, 150, expected_s=n * 3.0 * SCALE)
        return time.perf_counter() - t0

    return list(await asyncio.gather(*[job(i, n) for i, n in enumerate(sizes)]))


SIZES = [8, 1, 6, 1, 2, 8, 1, 3, 1, 5]


def test_srtf_lowers_mean_job_completion_time() -> None:
    async def load(rt: nl.Runtime) -> float:
        return statistics.mean(await _jobs(rt, SIZES))

    fcfs, _ = run_farm("fcfs", {"chat": 1}, load, max_batch=1)
    srtf, _ = run_farm("srtf", {"chat": 1}, load, max_batch=1)
    assert srtf < 0.9 * fcfs, (srtf, fcfs)


def test_lpt_finishes_long_jobs_first() -> None:
    async def load(rt: nl.Runtime) -> float:
        done = await _jobs(rt, SIZES)
        longest = [t for t, n in zip(done, SIZES) if n == max(SIZES)]
        return statistics.mean(longest) / max(done)

    fcfs, _ = run_farm("fcfs", {"chat": 1}, load, max_batch=1)
    srtf, _ = run_farm("srtf", {"chat": 1}, load, max_batch=1)
    lpt, _ = run_farm("lpt", {"chat": 1}, load, max_batch=1)
    # Under lpt the longest jobs end well before the batch does; under srtf they end last.
    assert lpt < srtf and lpt < 0.99, (lpt, fcfs, srtf)


def test_default_policy_combines_migration_and_reallocation() -> None:
    sessions = [f"s{i}" for i in range(6)]

    async def load(rt: nl.Runtime) -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*[timed_call(rt, "chat", s, 800, 150) for s in sessions for _ in range(2)])
        return time.perf_counter() - t0

    def setup(rt: nl.Runtime) -> None:
        _pin_to_first(rt, sessions)

    fcfs, _ = run_farm("fcfs", {"chat": 2}, load, setup=setup)
    default, _ = run_farm("nalar", {"chat": 2}, load, setup=setup)
    assert default < 0.8 * fcfs, (default, fcfs)
