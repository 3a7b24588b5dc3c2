"""Runtimes for the fidelity suite: one per mode for the whole package.

Starting worker processes is the slow part, so each Runtime lives for the
package; each has its own state directory, so no journaled result of an
earlier test session replays. Thread ids are named after the test, so two
tests never share a nalar session.

Every scenario is bounded at :data:`SCENARIO_TIMEOUT` seconds (a healthy one,
three runs included, takes a few seconds): a run that hangs with the callback
is a failure of its own, and must not hold the suite for the global timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nalar_plugin import Runtime

from ._harness import MODES, Fidelity

SCENARIO_TIMEOUT = 30.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Bound each scenario of this package (a test's own timeout marker wins)."""
    here = Path(__file__).parent
    for item in items:
        if item.path.parent == here and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SCENARIO_TIMEOUT))


@pytest.fixture(scope="package", params=MODES)
def fidelity_rt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A Runtime on an embedded LocalCluster: ``Runtime()`` or ``Runtime(processes=True)``."""
    state = tmp_path_factory.mktemp(f"fidelity-state-{request.param}")
    with Runtime(processes=request.param == "processes", tick_interval=0.05, state_dir=str(state)) as runtime:
        yield runtime


@pytest.fixture
def fid(fidelity_rt: Runtime, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
        tmp_path: Path) -> Fidelity:
    """The harness for this test, on the Runtime of the current mode."""
    return Fidelity(fidelity_rt, monkeypatch, request.node.originalname, tmp_path)
