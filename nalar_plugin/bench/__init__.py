"""Benchmarks behind ``nalar bench``; each writes JSON and quotes ratios from one run."""

from __future__ import annotations

from .calls import bench_calls

__all__ = ["bench_calls"]
