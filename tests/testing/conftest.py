"""Shared fixtures for the simulated engine farm tests."""

from __future__ import annotations

import pytest

from nalar_plugin.testing import EngineConfig, SimulatedEngine

# 1 model second = 1 wall millisecond: every test runs in well under a second of
# simulated waiting, while orderings and ratios stay exactly those of the model.
FAST = EngineConfig(time_scale=0.001)


@pytest.fixture
def fast_config() -> EngineConfig:
    """A default performance model, 1000x faster than real time."""
    return FAST


@pytest.fixture
def engine(fast_config: EngineConfig) -> SimulatedEngine:
    """A fresh standalone engine named ``e0``."""
    return SimulatedEngine("e0", fast_config)
