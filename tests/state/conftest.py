"""Shared fixtures for the state tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nalar_plugin.state import Store


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A path for a fresh state directory (not created yet)."""
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path) -> Iterator[Store]:
    """An open store in a fresh directory, closed after the test."""
    with Store(state_dir) as opened:
        yield opened
