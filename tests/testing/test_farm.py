"""Behaviour of the engine farm: pools, reassign warm-up, provision, kill."""

from __future__ import annotations

import pytest

from nalar_plugin.errors import ConfigError, RuntimeStateError
from nalar_plugin.testing import EngineConfig, EngineFarm

CFG = EngineConfig(time_scale=0.01, warmup_s=30.0)


def test_pools_and_lookup() -> None:
    farm = EngineFarm({"analyst": 2, "coder": 3}, config=CFG, seed=7)
    assert farm.pools() == {"analyst": ["analyst-0", "analyst-1"], "coder": ["coder-0", "coder-1", "coder-2"]}
    assert [e.name for e in farm.engines("coder")] == ["coder-0", "coder-1", "coder-2"]
    assert farm.engine("analyst-1").pool == "analyst"
    assert len(farm) == 5 and "coder-2" in farm
    assert all(e.is_ready() for e in farm)
    with pytest.raises(ConfigError):
        farm.engine("nope")
    with pytest.raises(ConfigError):
        farm.engines("nope")
    with pytest.raises(ConfigError):
        EngineFarm({"x": -1})


def test_reassign_costs_warmup_and_clears_cache() -> None:
    farm = EngineFarm({"analyst": 2, "coder": 1}, config=CFG)
    moved = farm.engine("analyst-1")
    moved.reserve(1000, 10, session="s")
    assert moved.cached_prefix("s") > 0
    farm.reassign("analyst-1", "coder")
    assert farm.pools() == {"analyst": ["analyst-0"], "coder": ["coder-0", "analyst-1"]}
    assert moved.pool == "coder" and moved.cached_prefix("s") == 0
    assert not moved.is_ready()
    blocked = moved.reserve(1000, 10, session="s")
    assert blocked.started_at == pytest.approx(moved.ready_at)
    assert blocked.queued_s > 25.0 and blocked.cached_tokens == 0
    # An engine that was not moved admits at once.
    assert farm.engine("coder-0").reserve(1000, 10).queued_s == 0


def test_reassign_drains_admitted_work_first() -> None:
    farm = EngineFarm({"a": 1}, config=CFG)
    eng = farm.engine("a-0")
    running = eng.reserve(1000, 1000)
    farm.reassign("a-0", "b", warmup_s=5.0)
    after = eng.reserve(10, 1)
    assert after.started_at == pytest.approx(running.finished_at + 5.0 * CFG.time_scale)


def test_provision_adds_engine_after_warmup() -> None:
    farm = EngineFarm({"coder": 1}, config=CFG)
    new = farm.provision("coder")
    assert new.name == "coder-1" and new in farm.engines("coder")
    assert not new.is_ready()
    gen = new.reserve(100, 10)
    assert gen.started_at == pytest.approx(new.ready_at) and gen.queued_s > 25.0
    brand_new_pool = farm.provision("critic", warmup_s=0)
    assert brand_new_pool.name == "critic-0" and brand_new_pool.reserve(100, 10).queued_s == 0


def test_kill_removes_engine() -> None:
    farm = EngineFarm({"coder": 2}, config=CFG)
    victim = farm.engine("coder-0")
    farm.kill("coder-0")
    assert "coder-0" not in farm and farm.pools() == {"coder": ["coder-1"]}
    with pytest.raises(RuntimeStateError):
        victim.generate_sync(10, 1)
    with pytest.raises(ConfigError):
        farm.kill("coder-0")
    # Names are never reused.
    assert farm.provision("coder", warmup_s=0).name == "coder-2"


def test_pick_prefers_cache_locality_then_load() -> None:
    farm = EngineFarm({"coder": 3}, config=CFG)
    engines = farm.engines("coder")
    engines[2].reserve(1000, 10, session="s")
    assert farm.pick("coder", "s") is engines[2]
    for _ in range(CFG.max_batch):  # a full batch: locality no longer pays
        engines[2].reserve(1000, 1000)
    assert farm.pick("coder", "s") is not engines[2]
    for _ in range(3):
        engines[0].reserve(1000, 1000)
    assert farm.pick("coder") is engines[1]  # the least loaded
    farm.reassign("coder-1", "coder", warmup_s=100)
    assert farm.pick("coder") is not engines[1]


def test_metrics_cover_every_engine() -> None:
    farm = EngineFarm({"a": 1, "b": 1}, config=CFG)
    farm.engine("a-0").generate_sync(100, 10)
    metrics = farm.metrics()
    assert set(metrics) == {"a-0", "b-0"}
    assert metrics["a-0"].served == 1 and metrics["b-0"].served == 0


def test_farm_jitter_is_deterministic_from_seed() -> None:
    cfg = EngineConfig(time_scale=0.001, jitter=0.2)

    def run(seed: int) -> list[float]:
        farm = EngineFarm({"a": 2}, config=cfg, seed=seed)
        return [e.reserve(1000, 100).service_s for e in farm for _ in range(3)]

    assert run(3) == run(3)
    assert run(3) != run(4)
