"""The retry policy read from a Runtime's settings."""

from __future__ import annotations

import pytest

from nalar_plugin.errors import ConfigError
from nalar_plugin.state import RetryPolicy
from nalar_plugin.state.retry import is_worker_loss


def test_defaults_and_settings() -> None:
    assert RetryPolicy.from_config({}) == RetryPolicy(3, 0.1, 5.0)
    policy = RetryPolicy.from_config({"retries": "2", "retry-backoff": "250ms", "retry-backoff-max": 1})
    assert policy == RetryPolicy(2, 0.25, 1.0)
    assert [policy.allows(a) for a in range(4)] == [True, True, False, False]
    assert [policy.delay(a) for a in range(4)] == [0.25, 0.5, 1.0, 1.0]  # doubling, capped


@pytest.mark.parametrize("settings", [{"retries": -1}, {"retries": "many"}, {"retry-backoff": "soon"},
                                      {"retry-backoff-max": -2}])
def test_bad_settings_fail_clearly(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="nalar.retr"):
        RetryPolicy.from_config(settings)


def test_only_a_lost_worker_is_a_worker_loss() -> None:
    from nalar_plugin.errors import WorkerLostError

    assert is_worker_loss(WorkerLostError("lost the link to worker tcp://127.0.0.1:1"))
    assert not is_worker_loss(RuntimeError("the body raised"))
    assert not is_worker_loss(None)
