"""When and how soon a call whose worker died runs again.

Settings (under ``nalar``):

* ``retries`` (default 3): attempts after the first when the call's worker dies
  or its task is lost. The ``nalar_should_retry`` hook overrides it for calls
  that go through the driver's controllers.
* ``retry-backoff`` (default ``100ms``): the wait before the first retry; each
  further retry waits twice as long as the one before,
* ``retry-backoff-max`` (default ``5s``): up to this.

Only a lost worker is retried. An exception raised by the call's body is its
result, and reaches ``future.result()`` unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

from dask.utils import parse_timedelta

from nalar_plugin.errors import ConfigError, WorkerLostError

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "is_worker_loss"]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry limit and exponential backoff.

    Attributes:
        retries: Attempts after the first.
        backoff: Seconds before the first retry.
        backoff_max: Cap on the wait between two attempts.
    """

    retries: int = 3
    backoff: float = 0.1
    backoff_max: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigError(f"nalar.retries must be an integer >= 0, got {self.retries!r}")
        for name in ("backoff", "backoff_max"):
            if getattr(self, name) < 0:
                raise ConfigError(f"nalar.retry-{name.replace('_', '-')} must be >= 0, got {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, config: Any) -> RetryPolicy:
        """Read ``retries``, ``retry-backoff`` and ``retry-backoff-max`` from a Runtime's settings.

        Raises:
            ConfigError: A value of the wrong kind.
        """
        def seconds(key: str, default: str) -> float:
            raw = config.get(key, default)
            try:
                if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                    return float(raw)
                return float(parse_timedelta(raw, default="seconds"))
            except (TypeError, ValueError, KeyError) as exc:
                raise ConfigError(f"bad value for nalar.{key}: {raw!r} ({exc})") from exc

        raw_retries = config.get("retries", 3)
        try:
            retries = int(raw_retries)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad value for nalar.retries: {raw_retries!r}") from exc
        return cls(retries, seconds("retry-backoff", "100ms"), seconds("retry-backoff-max", "5s"))

    def allows(self, attempt: int) -> bool:
        """Whether the attempt numbered ``attempt`` (0 first) may be followed by another."""
        return attempt < self.retries

    def delay(self, attempt: int) -> float:
        """Seconds to wait before running again after attempt ``attempt`` failed."""
        return float(min(self.backoff_max, self.backoff * (2 ** min(attempt, 30))))

    def to_dict(self) -> dict[str, Any]:
        """Plain fields, for the wire."""
        return asdict(self)


DEFAULT_RETRY: Final = RetryPolicy()


def is_worker_loss(exc: BaseException | None) -> bool:
    """Whether a call failed because its worker died (not because its body raised)."""
    return isinstance(exc, WorkerLostError)
