"""Value types of the simulated engine: its configuration and its reports.

Durations are in **model seconds** (what a real replica would take); absolute
timestamps are **wall** :func:`time.monotonic` values, and wall seconds are
model seconds times :attr:`EngineConfig.time_scale`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from nalar_plugin.errors import ConfigError

__all__ = ["EngineConfig", "EngineMetrics", "Generation"]


@dataclass(frozen=True)
class EngineConfig:
    """Performance model of one simulated replica.

    Attributes:
        max_batch: Sequences decoded concurrently (continuous-batching slots);
            more requests wait in the engine's FCFS queue. Default 16.
        prefill_ms_per_1k: Prefill cost in model milliseconds per 1,000 prompt
            tokens that are not in the prefix cache. Default 60.
        base_ms: Per-token decode cost of a batch of one, in model
            milliseconds. Default 15.
        slope_ms: Extra per-token decode cost for each sequence in the batch:
            ``decode_ms(batch) = base_ms + slope_ms * batch``. Default 0.5.
        prefix_cache_tokens: Capacity of the per-engine LRU prefix cache, in
            tokens; 0 disables caching. Default 200,000.
        time_scale: Wall seconds per model second; 0.01 runs 100x faster than
            a real replica. Default 1.0.
        warmup_s: Model seconds an engine needs to (re)load weights when it is
            provisioned or reassigned to another pool. Default 30.
        jitter: Sigma of a multiplicative lognormal noise on each request's
            service time, drawn from the engine's seeded generator; 0 (the
            default) makes service times exact.
    """

    max_batch: int = 16
    prefill_ms_per_1k: float = 60.0
    base_ms: float = 15.0
    slope_ms: float = 0.5
    prefix_cache_tokens: int = 200_000
    time_scale: float = 1.0
    warmup_s: float = 30.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        """Validate the values.

        Raises:
            ConfigError: If a value is out of range.
        """
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int):
            raise ConfigError(f"max_batch must be an int, got {self.max_batch!r}")
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")
        if not isinstance(self.prefix_cache_tokens, int) or self.prefix_cache_tokens < 0:
            raise ConfigError(
                f"prefix_cache_tokens must be an int >= 0, got {self.prefix_cache_tokens!r}"
            )
        for field in ("prefill_ms_per_1k", "base_ms", "slope_ms", "warmup_s", "jitter"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{field} must be a finite number >= 0, got {value!r}")
        scale = self.time_scale
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"time_scale must be a finite number > 0, got {scale!r}")

    def decode_ms(self, batch: int) -> float:
        """Per-token decode time at a given batch size.

        Args:
            batch: Sequences in the batch, including the one being timed.

        Returns:
            Model milliseconds per output token.
        """
        return self.base_ms + self.slope_ms * batch

    def prefill_s(self, tokens: int) -> float:
        """Prefill time of uncached prompt tokens.

        Args:
            tokens: Prompt tokens that must be prefilled.

        Returns:
            Model seconds.
        """
        return self.prefill_ms_per_1k * tokens / 1000.0 / 1000.0


class Generation(NamedTuple):
    """The outcome (or, from :meth:`SimulatedEngine.reserve`, the plan) of one request.

    Durations are in model seconds; the ``*_at`` timestamps are wall-clock
    :func:`time.monotonic` values of the engine's process.

    Attributes:
        engine: Name of the engine that served the request.
        session: Session key used for the prefix cache, or None.
        prompt_tokens: Prompt length.
        output_tokens: Generated tokens.
        cached_tokens: Prompt tokens found in the prefix cache (not prefilled).
        batch: Sequences decoding on the engine when the request started,
            itself included.
        queued_s: Model seconds spent in the FCFS queue (or warm-up).
        prefill_s: Model seconds of prefill.
        decode_s: Model seconds of decode.
        submitted_at: Wall time the request reached the engine.
        started_at: Wall time the request got a batch slot.
        first_token_at: Wall time prefill ended.
        finished_at: Wall time the last token was produced.
        time_scale: The engine's wall seconds per model second.
    """

    engine: str
    session: str | None
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int
    batch: int
    queued_s: float
    prefill_s: float
    decode_s: float
    submitted_at: float
    started_at: float
    first_token_at: float
    finished_at: float
    time_scale: float

    @property
    def service_s(self) -> float:
        """Model seconds between start and finish (prefill plus decode)."""
        return self.prefill_s + self.decode_s

    @property
    def latency_s(self) -> float:
        """Model seconds between submission and finish."""
        return self.queued_s + self.prefill_s + self.decode_s

    @property
    def wall_latency_s(self) -> float:
        """Wall seconds between submission and finish."""
        return self.finished_at - self.submitted_at


@dataclass(frozen=True)
class EngineMetrics:
    """A snapshot of one engine's counters.

    Attributes:
        name: Engine name.
        pool: Pool (agent type) the engine serves, or None if standalone.
        alive: False once the engine was killed.
        ready: False while the engine warms up.
        admitted: Requests accepted so far (including queued and running).
        served: Requests that finished by now.
        queue_len: Requests accepted but not yet started.
        in_flight: Requests decoding now.
        busy_s: Model seconds, up to now, during which at least one sequence
            was running.
        prompt_tokens: Sum of prompt tokens of admitted requests.
        cached_tokens: Sum of prompt tokens served from the prefix cache.
        output_tokens: Sum of output tokens of admitted requests.
        cache_used_tokens: Tokens held in the prefix cache now.
        cache_sessions: Sessions held in the prefix cache now.
    """

    name: str
    pool: str | None
    alive: bool
    ready: bool
    admitted: int
    served: int
    queue_len: int
    in_flight: int
    busy_s: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    cache_used_tokens: int
    cache_sessions: int
