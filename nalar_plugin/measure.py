"""Cheap measurements for the hot path: a fixed-bucket histogram of plain ints.

Recording costs one bisection and two additions under an uncontended lock
(well under a microsecond); nothing else is built until someone reads the
figures (a dashboard request or a Prometheus scrape).
"""

from __future__ import annotations

import bisect
import threading
from typing import Final

__all__ = ["COMMIT_BOUNDS", "LATENCY_BOUNDS", "Histogram"]

# Upper bounds, seconds, of call latency buckets: 1 ms to 2 min.
LATENCY_BOUNDS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                         60.0, 120.0)
# Upper bounds, seconds, of journal commit (one shared transaction) buckets: 50 µs to 5 s.
COMMIT_BOUNDS: Final = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                        0.5, 1.0, 5.0)


class Histogram:
    """Counts of observations per bucket, their sum and their number.

    Args:
        bounds: Increasing upper bounds of the buckets; a last bucket takes
            everything above them.
    """

    __slots__ = ("_lock", "bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Record one observation."""
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self.counts[i] += 1
            self.sum += value

    def read(self) -> tuple[list[int], float]:
        """A consistent copy of ``(counts per bucket, sum)``."""
        with self._lock:
            return list(self.counts), self.sum

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def to_dict(self) -> dict[str, object]:
        """Plain data: ``{"bounds", "counts", "sum"}`` (counts per bucket, not cumulative)."""
        counts, total = self.read()
        return {"bounds": list(self.bounds), "counts": counts, "sum": total}
