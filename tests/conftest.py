from __future__ import annotations

from collections.abc import Iterator

import pytest

from nalar_plugin import Runtime


@pytest.fixture(scope="module", params=["threads", "processes"])
def rt(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """A Runtime on an embedded LocalCluster, in threads and in processes mode."""
    with Runtime(processes=request.param == "processes", tick_interval=0.05) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def rt_threads() -> Iterator[Runtime]:
    with Runtime(tick_interval=0.05) as runtime:
        yield runtime
