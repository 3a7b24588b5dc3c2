"""Benchmarks behind ``nalar bench``; each writes JSON and quotes ratios from one run.

* :func:`bench_calls`, :func:`bench_control` - the plumbing and the control plane;
* :func:`run` with :class:`RunSettings` - a workload (``financial``, ``router``,
  ``swe``) served by one system (``nalar``, ``langgraph``, ``fcfs``);
* :func:`compare` - every system on the same seed, and the ratios between them.
"""

from __future__ import annotations

from .calls import bench_calls
from .compare import compare
from .control import bench_control
from .runner import SYSTEMS, RunResult, RunSettings, run
from .workloads import WORKLOADS, Workload

__all__ = ["SYSTEMS", "WORKLOADS", "RunResult", "RunSettings", "Workload", "bench_calls", "bench_control", "compare", "run"]
