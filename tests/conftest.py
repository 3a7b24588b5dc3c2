from __future__ import annotations

from collections.abc import Iterator

import pytest

from nalar_plugin import Runtime


@pytest.fixture(autouse=True)
def _fresh_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Give every Runtime made in a test its own state directory.

    The journal replays committed calls by their deterministic keys, so a
    state directory left by an earlier run would replay its results.
    """
    import dask.config

    with dask.config.set({"nalar.state-dir": str(tmp_path_factory.mktemp("state"))}):
        yield


@pytest.fixture(scope="module", params=["threads", "processes"])
def rt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A Runtime on an embedded LocalCluster, in threads and in processes mode."""
    state = str(tmp_path_factory.mktemp("rt-state"))
    with Runtime(processes=request.param == "processes", tick_interval=0.05, state_dir=state) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def rt_threads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with Runtime(tick_interval=0.05, state_dir=str(tmp_path_factory.mktemp("rt-state"))) as runtime:
        yield runtime
