"""``nalar bench calls``: no-op call throughput through nalar next to raw Dask.

Both are measured in the same run on the same cluster, so their ratio is the
cost of nalar's plumbing per call: context, journal (every ``noop`` call is
journaled: looked up, claimed and committed), local controllers, futures. Each
round also measures the driver process's CPU time (all its threads: in threads
mode the scheduler and the workers are in it too) per call, and a sequential
round measures one call at a time, submit to result.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

from tqdm import tqdm

from ..future import value
from ..runtime import Runtime
from ..stubs import agent

__all__ = ["bench_calls", "noop"]


@agent(name="noop")
def noop(i: int) -> int:
    """A call that does nothing."""
    return i


def _raw(i: int) -> int:
    return i


def _progress(total: int, desc: str, enabled: bool) -> Any:
    return tqdm(total=total, desc=desc, disable=not enabled, unit="call", leave=False)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _round(submit: Any, wait: Any, n: int) -> tuple[float, float]:
    """Calls per second and driver CPU per call (µs) of one batch of ``n`` calls."""
    c0, t0 = _cpu_s(), time.perf_counter()
    futs = [submit(i) for i in range(n)]
    wait(futs)
    wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    return n / wall, cpu / n * 1e6


def _sequential(call: Any, n: int) -> tuple[float, float]:
    """Milliseconds per call and driver CPU per call (µs), one call at a time."""
    c0, t0 = _cpu_s(), time.perf_counter()
    for i in range(n):
        call(i)
    return (time.perf_counter() - t0) / n * 1e3, (_cpu_s() - c0) / n * 1e6


def bench_calls(n: int = 2000, *, repeat: int = 3, progress: bool = True, **runtime_kwargs: Any) -> dict[str, Any]:
    """Measure no-op throughput (calls/s) through nalar and through ``client.submit``.

    Args:
        n: Calls per round.
        repeat: Rounds of each; the best round counts (warm caches, no start-up).
        progress: Show a progress bar.
        **runtime_kwargs: Passed to :class:`~nalar_plugin.Runtime`.

    Returns:
        A JSON-able dict with both throughputs, their ratio and the settings.
    """
    nalar: list[tuple[float, float]] = []
    dask: list[tuple[float, float]] = []
    seq_n = max(20, n // 10)
    with Runtime(**runtime_kwargs) as rt:
        value(noop(0))  # warm up
        rt.client.submit(_raw, 0, pure=False).result()

        def wait_nalar(futs: list[Any]) -> None:
            for f in futs:
                f.exception()

        with _progress(2 * repeat * n + 2 * seq_n, "calls", progress) as bar:
            for _ in range(repeat):
                nalar.append(_round(noop, wait_nalar, n))
                bar.update(n)
                dask.append(_round(lambda i: rt.client.submit(_raw, i, pure=False), rt.client.gather, n))
                bar.update(n)
            nalar_seq = _sequential(lambda i: value(noop(i)), seq_n)
            bar.update(seq_n)
            dask_seq = _sequential(lambda i: rt.client.submit(_raw, i, pure=False).result(), seq_n)
            bar.update(seq_n)
        cfg = {k: rt.config[k] for k in ("processes", "worker-slots", "worker-saturation")}
    best_nalar, best_dask = max(r for r, _ in nalar), max(r for r, _ in dask)
    cpu_nalar = statistics.median(c for _, c in nalar)
    cpu_dask = statistics.median(c for _, c in dask)
    return {
        "benchmark": "calls",
        "n": n,
        "repeat": repeat,
        "journaled": True,
        "nalar_calls_per_s": round(best_nalar, 1),
        "dask_calls_per_s": round(best_dask, 1),
        "ratio_nalar_to_dask": round(best_nalar / best_dask, 3),
        "driver_cpu_per_call_us": round(cpu_nalar, 1),
        "dask_driver_cpu_per_call_us": round(cpu_dask, 1),
        "sequential_ms_per_call": {"nalar": round(nalar_seq[0], 3), "dask": round(dask_seq[0], 3)},
        "sequential_driver_cpu_per_call_us": {"nalar": round(nalar_seq[1], 1), "dask": round(dask_seq[1], 1)},
        "nalar_rounds": [round(r, 1) for r, _ in nalar],
        "dask_rounds": [round(r, 1) for r, _ in dask],
        "nalar_cpu_rounds_us": [round(c, 1) for _, c in nalar],
        "dask_cpu_rounds_us": [round(c, 1) for _, c in dask],
        "config": cfg,
    }
