"""``nalar bench calls``: no-op call throughput through nalar next to raw Dask.

Both are measured in the same run on the same cluster, so their ratio is the
cost of nalar's plumbing (context, controllers, futures) per call.
"""

from __future__ import annotations

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
    nalar_rates: list[float] = []
    dask_rates: list[float] = []
    with Runtime(**runtime_kwargs) as rt:
        value(noop(0))  # warm up: the first task pays the pickling of the function
        rt.client.submit(_raw, 0, pure=False).result()
        with _progress(2 * repeat * n, "calls", progress) as bar:
            for _ in range(repeat):
                t0 = time.perf_counter()
                futs: list[Any] = [noop(i) for i in range(n)]
                for f in futs:
                    f.exception()
                nalar_rates.append(n / (time.perf_counter() - t0))
                bar.update(n)
                t0 = time.perf_counter()
                dfuts = [rt.client.submit(_raw, i, pure=False) for i in range(n)]
                rt.client.gather(dfuts)
                dask_rates.append(n / (time.perf_counter() - t0))
                bar.update(n)
                del futs, dfuts
        cfg = {k: rt.config[k] for k in ("processes", "worker-slots", "worker-saturation")}
    best_nalar, best_dask = max(nalar_rates), max(dask_rates)
    return {
        "benchmark": "calls",
        "n": n,
        "repeat": repeat,
        "nalar_calls_per_s": round(best_nalar, 1),
        "dask_calls_per_s": round(best_dask, 1),
        "ratio_nalar_to_dask": round(best_nalar / best_dask, 3),
        "nalar_rounds": [round(r, 1) for r in nalar_rates],
        "dask_rounds": [round(r, 1) for r in dask_rates],
        "config": cfg,
    }
