"""Benchmarks behind ``nalar bench``; each writes JSON and quotes ratios from one run."""

from __future__ import annotations

from .calls import bench_calls
from .control import bench_control

__all__ = ["bench_calls", "bench_control"]
