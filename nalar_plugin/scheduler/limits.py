"""Rate limits of components: requests and tokens per minute, held in the Dask scheduler.

A component deployed with ``rpm=`` (requests per minute) and/or ``tpm=`` (tokens per
minute, input plus output) has one token bucket per limit in the scheduler, in the
:class:`RateLimits` ``SchedulerPlugin``: every driver of the cluster draws on the same
buckets. The rule, per bucket:

* it refills at ``rate = limit / 60`` per second and holds at most
  ``capacity = max(1, rate x burst_s)`` (``burst_s`` defaults to 1 s), less what is out
  on lease;
* it starts full;
* so over any window of ``W`` seconds, what all drivers together take from it is at
  most ``capacity + rate x W``: calls started for ``rpm``, tokens charged for ``tpm``.

A driver does not ask the scheduler for every call: it takes a **lease**, a slice of
the bucket (at most a quarter of its capacity, at least one call's worth), spends it
locally as its local controllers admit calls, and asks for more when it runs out. A
lease unused for a moment goes back to the bucket; one that is not given back expires
(:data:`LEASE_TTL_S`) and counts as spent. What a lease holds counts against the
bucket's capacity until it is given back or expires, which is what keeps the window
bound true across drivers.

Tokens are charged twice: a call's estimate when it is admitted (see
:mod:`nalar_plugin.scheduler.leases`), then the difference with what the model reports
(``usage_metadata``) when it completes. Overspend is debt: the bucket's level goes
below zero and the next grants wait until it refills. Underspend is refunded.
A call estimated above the token capacity reserves the capacity and is charged the
rest on completion.

:class:`LimitBook` is the bookkeeping as plain data in and out; the plugin is its
host in the scheduler, reached by the ``nalar_rate_configure``, ``nalar_rate_lease``
and ``nalar_rate_view`` handlers.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ..errors import ConfigError

__all__ = ["LEASE_TTL_S", "LimitBook", "RateLimit", "RateLimits", "lease_slice"]

LEASE_TTL_S = 2.0  # a lease not given back by then counts as spent
_MIN_WAIT_S = 0.002
_BATCH_S = 0.05  # a refused driver waits for this much of the rate to refill (see _grant)
_SLICES = 4  # a lease holds at most capacity / _SLICES (and at least one call's worth)


def _positive(name: str, value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number > 0 ({what}), got {value!r}")
    out = float(value)
    if not out > 0 or math.isinf(out):
        raise ConfigError(f"{name} must be a finite number > 0 ({what}), got {value!r}")
    return out


@dataclass(frozen=True)
class RateLimit:
    """The rate limits of one component.

    Attributes:
        rpm: Calls started per minute, or ``None``.
        tpm: Tokens (input plus output) per minute, or ``None``.
        burst_s: Seconds of each rate a bucket holds when full (its burst).
    """

    rpm: float | None = None
    tpm: float | None = None
    burst_s: float = 1.0

    @classmethod
    def checked(cls, rpm: Any = None, tpm: Any = None, burst_s: Any = 1.0) -> RateLimit | None:
        """The limits, validated; ``None`` when neither ``rpm`` nor ``tpm`` is given.

        Raises:
            ConfigError: A limit or ``burst_s`` that is not a finite number > 0.
        """
        r = _positive("rpm", rpm, "requests per minute")
        t = _positive("tpm", tpm, "tokens per minute")
        b = _positive("burst_s", burst_s, "seconds of each rate a full bucket holds")
        if b is None:
            raise ConfigError("burst_s must be a finite number > 0, got None")
        if r is None and t is None:
            return None
        return cls(r, t, b)

    @property
    def request_capacity(self) -> float | None:
        """Calls a full requests bucket holds: ``max(1, rpm / 60 x burst_s)``."""
        return None if self.rpm is None else max(1.0, self.rpm / 60.0 * self.burst_s)

    @property
    def token_capacity(self) -> float | None:
        """Tokens a full tokens bucket holds: ``max(1, tpm / 60 x burst_s)``."""
        return None if self.tpm is None else max(1.0, self.tpm / 60.0 * self.burst_s)

    def as_dict(self) -> dict[str, Any]:
        """The limits as plain data (what travels to the scheduler)."""
        return {"rpm": self.rpm, "tpm": self.tpm, "burst_s": self.burst_s}


class _Bucket:
    """One token bucket: ``rate`` per second, at most ``capacity`` less what is out on lease."""

    __slots__ = ("capacity", "leased", "level", "rate")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity  # below zero: debt
        self.leased = 0.0

    def refill(self, dt: float) -> None:
        self.level = min(self.capacity - self.leased, self.level + self.rate * dt)

    def add(self, amount: float) -> None:
        """Give back ``amount`` (a lease's unused part, a refund); never above the capacity."""
        self.level = min(self.capacity - self.leased, self.level + amount)

    def wait(self, need: float) -> float:
        """Seconds until the level reaches ``need``, at the refill rate (0 if it has)."""
        return max(0.0, (need - self.level) / self.rate)


@dataclass
class _Lease:
    driver: str
    requests: float
    tokens: float
    expires: float


class _Limit:
    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.requests = None if limit.rpm is None else _Bucket(limit.rpm / 60.0, limit.request_capacity or 1.0)
        self.tokens = None if limit.tpm is None else _Bucket(limit.tpm / 60.0, limit.token_capacity or 1.0)
        self.at = now
        self.leases: dict[str, _Lease] = {}
        self.granted_requests = 0.0
        self.granted_tokens = 0.0
        self.debt_tokens = 0.0  # overspend charged on completion, in all
        self.refunded_tokens = 0.0

    def buckets(self) -> list[_Bucket]:
        return [b for b in (self.requests, self.tokens) if b is not None]

    def advance(self, now: float) -> None:
        """Expire the leases that are due, then refill (in that order: expiry frees capacity)."""
        for lid in [k for k, v in self.leases.items() if v.expires <= now]:
            self._close(self.leases.pop(lid))
        dt = max(0.0, now - self.at)
        self.at = now
        for b in self.buckets():
            b.refill(dt)

    def _close(self, lease: _Lease) -> None:
        if self.requests is not None:
            self.requests.leased -= lease.requests
        if self.tokens is not None:
            self.tokens.leased -= lease.tokens


class LimitBook:
    """Every component's buckets and leases: the state the scheduler keeps.

    Args:
        ttl: Seconds a lease lives unless given back.
        clock: Monotonic seconds (the scheduler's clock).
    """

    def __init__(self, ttl: float = LEASE_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._limits: dict[str, _Limit] = {}
        self._ids = itertools.count()

    def configure(self, component: str, rpm: float | None = None, tpm: float | None = None,
                  burst_s: float = 1.0) -> dict[str, Any]:
        """Set the limits of ``component``; its buckets start full, or keep their level if it had limits.

        The latest limits apply to every driver (drivers sharing a component deploy the same).

        Returns:
            The limits in force.

        Raises:
            ConfigError: Invalid limits.
        """
        limit = RateLimit.checked(rpm, tpm, burst_s)
        if limit is None:
            raise ConfigError(f"component {component!r}: a rate limit needs rpm or tpm")
        now = self.clock()
        with self._lock:
            old = self._limits.get(component)
            if old is None or old.limit != limit:
                new = _Limit(limit, now)
                if old is not None:  # keep what was spent and what is out on lease
                    old.advance(now)
                    for was, b in ((old.requests, new.requests), (old.tokens, new.tokens)):
                        if was is not None and b is not None:
                            b.leased = was.leased
                            b.level = min(was.level, b.capacity - b.leased)
                    new.leases = old.leases
                self._limits[component] = new
        return limit.as_dict()

    def exchange(self, component: str, driver: str, *, want_requests: float = 0.0, want_tokens: float = 0.0,
                 need_tokens: float = 0.0, settle: float = 0.0, returning: Any = None,
                 limit: dict[str, Any] | None = None) -> dict[str, Any]:
        """A driver's one round trip: give back a lease, settle tokens, take a new lease.

        Args:
            component: The component.
            driver: The driver's token.
            want_requests: Calls the new lease should hold (0: no new lease).
            want_tokens: Tokens it should hold.
            need_tokens: Tokens the next call needs: no lease is granted with fewer.
            settle: Tokens to charge (overspend; negative: a refund).
            returning: ``(lease id, unused calls, unused tokens)`` of the lease given back.
            limit: The driver's limits, applied if the scheduler does not know the component
                (it restarted).

        Returns:
            ``{"lease", "requests", "tokens", "ttl", "wait"}``: the new lease (``None`` if
            none: then ``wait`` says how long until asking again makes sense).
        """
        now = self.clock()
        with self._lock:
            lim = self._limits.get(component)
            if lim is None:
                if limit is None:
                    return {"lease": None, "requests": 0.0, "tokens": 0.0, "ttl": self.ttl, "wait": 0.0,
                            "unknown": True}
                checked = RateLimit.checked(**limit)
                assert checked is not None
                lim = self._limits[component] = _Limit(checked, now)
            lim.advance(now)
            if returning:
                lid, unused_r, unused_t = returning
                lease = lim.leases.pop(str(lid), None)
                if lease is not None and lease.driver == driver:
                    lim._close(lease)
                    if lim.requests is not None:
                        lim.requests.add(max(0.0, float(unused_r)))
                    if lim.tokens is not None:
                        lim.tokens.add(max(0.0, float(unused_t)))
                elif lease is not None:  # not this driver's: leave it alone
                    lim.leases[str(lid)] = lease
            if settle and lim.tokens is not None:
                if settle > 0:
                    lim.tokens.level -= settle
                    lim.debt_tokens += settle
                else:
                    lim.tokens.add(-settle)
                    lim.refunded_tokens -= settle
            if want_requests <= 0 and want_tokens <= 0:
                return {"lease": None, "requests": 0.0, "tokens": 0.0, "ttl": self.ttl, "wait": 0.0}
            return self._grant(lim, driver, now, want_requests, want_tokens, need_tokens)

    def _grant(self, lim: _Limit, driver: str, now: float, want_r: float, want_t: float,
               need_t: float) -> dict[str, Any]:
        r, t = lim.requests, lim.tokens
        if t is not None:
            need_t = min(max(need_t, 0.0), t.capacity)
        waits = []
        # Refused, a driver comes back when a batch has refilled (at most its lease, at least
        # one call): under saturation it asks some 1 / _BATCH_S times a second, not once per call.
        if r is not None and r.level < 1.0:
            waits.append(r.wait(max(1.0, min(math.floor(want_r), r.rate * _BATCH_S, r.capacity))))
        if t is not None and t.level < need_t:
            waits.append(t.wait(max(need_t, min(want_t, t.rate * _BATCH_S, t.capacity))))
        if waits:  # a call needs both: grant nothing until both suffice
            wait = min(max(max(waits), _MIN_WAIT_S), self.ttl)
            return {"lease": None, "requests": 0.0, "tokens": 0.0, "ttl": self.ttl, "wait": wait}
        got_r = 0.0 if r is None else float(min(max(1.0, math.floor(want_r)), math.floor(r.level)))
        got_t = 0.0 if t is None else min(max(want_t, need_t), t.level)
        lid = f"{driver}#{next(self._ids)}"
        lim.leases[lid] = _Lease(driver, got_r, got_t, now + self.ttl)
        if r is not None:
            r.level -= got_r
            r.leased += got_r
            lim.granted_requests += got_r
        if t is not None:
            t.level -= got_t
            t.leased += got_t
            lim.granted_tokens += got_t
        return {"lease": lid, "requests": got_r, "tokens": got_t, "ttl": self.ttl, "wait": 0.0}

    def view(self) -> dict[str, Any]:
        """Every component's buckets: limits, level, leased, granted, debt and refunds."""
        now = self.clock()
        out: dict[str, Any] = {}
        with self._lock:
            for name, lim in self._limits.items():
                lim.advance(now)
                row: dict[str, Any] = {**lim.limit.as_dict(), "leases": len(lim.leases),
                                       "granted_requests": lim.granted_requests,
                                       "granted_tokens": lim.granted_tokens, "debt_tokens": lim.debt_tokens,
                                       "refunded_tokens": lim.refunded_tokens}
                for key, b in (("requests", lim.requests), ("tokens", lim.tokens)):
                    if b is not None:
                        row[key] = {"level": b.level, "leased": b.leased, "capacity": b.capacity, "rate": b.rate}
                out[name] = row
        return out


def lease_slice(capacity: float) -> float:
    """What a driver asks one lease to hold: a quarter of the capacity, at least one call's worth."""
    return max(1.0, math.floor(capacity / _SLICES))


class RateLimits(SchedulerPlugin):
    """The rate limits of a cluster's components, as a Dask ``SchedulerPlugin`` (one per cluster).

    Registered by the first driver that deploys a rate-limited component; a second
    driver registering it keeps the running one (and its buckets).

    Args:
        ttl: Seconds a lease lives unless given back.
    """

    name = "nalar-rate-limits"
    idempotent = True

    def __init__(self, ttl: float = LEASE_TTL_S) -> None:
        self.ttl = ttl

    async def start(self, scheduler: Any) -> None:
        """Make the book and add the handlers (Dask calls this when the plugin is added)."""
        self.book = LimitBook(self.ttl)
        scheduler.handlers["nalar_rate_configure"] = self.book.configure
        scheduler.handlers["nalar_rate_lease"] = self.book.exchange
        scheduler.handlers["nalar_rate_view"] = self.book.view
