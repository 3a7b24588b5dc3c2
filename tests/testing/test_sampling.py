"""Token-length samplers: seeded, heavy-tailed, clipped."""

from __future__ import annotations

import statistics

import pytest

from nalar_plugin.errors import ConfigError
from nalar_plugin.testing import TRACE_SHAPES, TokenSampler


def test_same_seed_same_samples() -> None:
    assert TokenSampler("conversation", seed=5).samples(50) == TokenSampler("conversation", seed=5).samples(50)
    assert TokenSampler("conversation", seed=5).samples(50) != TokenSampler("conversation", seed=6).samples(50)


@pytest.mark.parametrize(("kind", "prompt", "output"), [("conversation", 1000, 130), ("code", 2000, 30)])
def test_medians_and_heavy_tail(kind: str, prompt: int, output: int) -> None:
    pairs = TokenSampler(kind, seed=1).samples(4000)  # type: ignore[arg-type]
    prompts, outputs = [p for p, _ in pairs], [o for _, o in pairs]
    assert statistics.median(prompts) == pytest.approx(prompt, rel=0.1)
    assert statistics.median(outputs) == pytest.approx(output, rel=0.15)
    # Heavy tail: the mean sits well above the median, the max far above it.
    assert statistics.mean(prompts) > 1.2 * statistics.median(prompts)
    assert max(prompts) > 5 * prompt
    shape = TRACE_SHAPES[kind]
    assert shape.prompt_min <= min(prompts) and max(prompts) <= shape.prompt_max
    assert shape.output_min <= min(outputs) and max(outputs) <= shape.output_max


def test_code_prompts_are_longer_outputs_shorter() -> None:
    conv = TokenSampler("conversation", seed=2).samples(1000)
    code = TokenSampler("code", seed=2).samples(1000)
    assert statistics.median(p for p, _ in code) > statistics.median(p for p, _ in conv)
    assert statistics.median(o for _, o in code) < statistics.median(o for _, o in conv)


def test_keyed_samples_ignore_call_order() -> None:
    a, b = TokenSampler(seed=9), TokenSampler(seed=9)
    b.samples(10)
    assert a.sample_at("s1", 0) == b.sample_at("s1", 0)
    assert a.sample_at("s1", 0) != a.sample_at("s1", 1)


def test_overrides_and_errors() -> None:
    pairs = TokenSampler("code", seed=0, output_median=500).samples(1000)
    assert statistics.median(o for _, o in pairs) == pytest.approx(500, rel=0.15)
    with pytest.raises(ConfigError):
        TokenSampler("poetry")  # type: ignore[arg-type]
