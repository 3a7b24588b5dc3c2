"""Seeded, heavy-tailed token-length samplers for synthetic traces.

Prompt and output lengths of LLM traces are roughly lognormal: most requests
are short, a few are very long. Two shapes are built in:

* ``"conversation"`` - chat turns: prompt median about 1,000 tokens, output
  median about 130;
* ``"code"`` - code completion: prompt median about 2,000 tokens, output median
  about 30.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Literal

from nalar_plugin.errors import ConfigError

__all__ = ["TRACE_SHAPES", "TokenSampler", "TraceShape"]


@dataclass(frozen=True)
class TraceShape:
    """Lognormal parameters of a trace's prompt and output lengths.

    Attributes:
        prompt_median: Median prompt length in tokens.
        prompt_sigma: Sigma of ``log(prompt length)``; larger is heavier tailed.
        output_median: Median output length in tokens.
        output_sigma: Sigma of ``log(output length)``.
        prompt_min: Smallest prompt length returned (clipping bound).
        prompt_max: Largest prompt length returned.
        output_min: Smallest output length returned.
        output_max: Largest output length returned.
    """

    prompt_median: float
    prompt_sigma: float
    output_median: float
    output_sigma: float
    prompt_min: int = 1
    prompt_max: int = 32_000
    output_min: int = 1
    output_max: int = 4_096

    def __post_init__(self) -> None:
        """Validate the values.

        Raises:
            ConfigError: If a value is out of range.
        """
        if not (self.prompt_median > 0 and self.output_median > 0):
            raise ConfigError("trace medians must be > 0")
        if not (self.prompt_sigma >= 0 and self.output_sigma >= 0):
            raise ConfigError("trace sigmas must be >= 0")
        if not 1 <= self.prompt_min <= self.prompt_max:
            raise ConfigError("need 1 <= prompt_min <= prompt_max")
        if not 1 <= self.output_min <= self.output_max:
            raise ConfigError("need 1 <= output_min <= output_max")


TRACE_SHAPES: dict[str, TraceShape] = {
    "conversation": TraceShape(
        prompt_median=1000, prompt_sigma=0.9, output_median=130, output_sigma=0.8,
        prompt_min=16, prompt_max=32_000, output_min=1, output_max=4_096,
    ),
    "code": TraceShape(
        prompt_median=2000, prompt_sigma=0.8, output_median=30, output_sigma=1.0,
        prompt_min=64, prompt_max=32_000, output_min=1, output_max=2_048,
    ),
}


def _draw(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    """One clipped lognormal draw.

    Args:
        rng: Generator.
        median: Median of the distribution.
        sigma: Sigma of its logarithm.
        low: Lower clipping bound.
        high: Upper clipping bound.

    Returns:
        The rounded, clipped value.
    """
    value = rng.lognormvariate(math.log(median), sigma)
    return min(high, max(low, round(value)))


class TokenSampler:
    """Draws ``(prompt_tokens, output_tokens)`` pairs from a trace shape.

    Deterministic: two samplers with the same kind, overrides and seed yield
    the same sequence. :meth:`sample_at` is a stateless keyed draw, for code
    that must not depend on call order (e.g. a chat model that is copied).

    Args:
        kind: ``"conversation"`` or ``"code"``, the built-in shapes.
        seed: Seed of the generator.
        shape: A custom :class:`TraceShape`, overriding ``kind``.
        prompt_median: Override of the shape's prompt median.
        output_median: Override of the shape's output median.

    Raises:
        ConfigError: If ``kind`` is unknown or an override is invalid.
    """

    def __init__(
        self,
        kind: Literal["conversation", "code"] = "conversation",
        seed: int = 0,
        *,
        shape: TraceShape | None = None,
        prompt_median: float | None = None,
        output_median: float | None = None,
    ) -> None:
        if shape is None:
            if kind not in TRACE_SHAPES:
                raise ConfigError(f"unknown trace kind {kind!r}; use one of {sorted(TRACE_SHAPES)}")
            shape = TRACE_SHAPES[kind]
        if prompt_median is not None:
            shape = replace(shape, prompt_median=prompt_median)
        if output_median is not None:
            shape = replace(shape, output_median=output_median)
        self.kind = kind
        self.seed = seed
        self.shape = shape
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        """Return a short description."""
        return f"TokenSampler(kind={self.kind!r}, seed={self.seed!r})"

    def _pair(self, rng: random.Random) -> tuple[int, int]:
        """Draw one pair from ``rng``.

        Args:
            rng: Generator.

        Returns:
            ``(prompt_tokens, output_tokens)``.
        """
        s = self.shape
        prompt = _draw(rng, s.prompt_median, s.prompt_sigma, s.prompt_min, s.prompt_max)
        output = _draw(rng, s.output_median, s.output_sigma, s.output_min, s.output_max)
        return prompt, output

    def sample(self) -> tuple[int, int]:
        """Draw the next pair.

        Returns:
            ``(prompt_tokens, output_tokens)``.
        """
        return self._pair(self._rng)

    def samples(self, n: int) -> list[tuple[int, int]]:
        """Draw the next ``n`` pairs.

        Args:
            n: How many.

        Returns:
            The pairs, in order.

        Raises:
            ConfigError: If ``n`` is negative.
        """
        if n < 0:
            raise ConfigError(f"n must be >= 0, got {n}")
        return [self._pair(self._rng) for _ in range(n)]

    def sample_at(self, *key: object) -> tuple[int, int]:
        """A pair determined only by the seed and ``key``, not by call order.

        Args:
            *key: Values identifying the draw, e.g. ``(session, turn)``; their
                ``repr`` is hashed with the seed.

        Returns:
            ``(prompt_tokens, output_tokens)``.
        """
        # str seeds go through SHA-512 in random.Random, so this is stable
        # across processes (unlike hash(), which is salted per process).
        material = repr((self.seed, self.kind, *key))
        return self._pair(random.Random(material))
