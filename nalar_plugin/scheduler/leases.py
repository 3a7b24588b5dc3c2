"""The driver's side of rate limits: leases of the scheduler's buckets, spent at admission.

The local controllers ask :meth:`RateLimiter.admit` before they admit a call of a
rate-limited component (see :mod:`nalar_plugin.scheduler.limits` for the rule). The
answer never waits: it is yes when the driver's lease of the component's buckets holds
one call and the call's token estimate, and no otherwise. A call told no stays at the
head of its queue: it is not an error and it is never dropped. The limiter's thread
then exchanges the lease with the scheduler (one round trip: the unused part back,
tokens settled, a new lease, or how long to wait for one) and wakes the component's
local controllers when it has a lease again.

Tokens: a call's estimate at admission is its prompt's characters / 4 (messages,
strings, tool schemas among its arguments) plus its ``max_tokens`` (or
``max_completion_tokens``, ``max_output_tokens``) if it has one, else the component's
output estimate (a deployed model's own ``max_tokens``, else ``nalar.rate-output-tokens``).
When the call completes, what the model reports (``usage_metadata``: input plus output
tokens) replaces the estimate: overspend is taken from the lease, or charged to the
scheduler's bucket as debt; underspend goes back. A call that reports no usage (an
error, a stream, an endpoint without ``usage_metadata``) is charged its estimate.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from .controller import Call
from .limits import RateLimit, RateLimits, lease_slice

__all__ = ["HOLD_S", "RateLimiter", "estimate_tokens", "tokens_used"]

logger = logging.getLogger(__name__)

HOLD_S = 0.25  # a lease unused this long goes back to the bucket
_EXPIRY_MARGIN = 0.9  # a lease is spent only in this part of its life (the scheduler's clock runs behind ours)
_SETTLE_BATCH_S = 0.05  # settlements wait this long for company before they travel alone
_RETRY_S = 0.5  # after a failed round trip
_OUTPUT_KEYS = frozenset({"max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens"})


def _scan(obj: Any, depth: int, chars: list[int], output: list[int]) -> None:
    if depth > 8 or obj is None:
        return
    if isinstance(obj, str):
        chars[0] += len(obj)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if key in _OUTPUT_KEYS and isinstance(value, int) and not isinstance(value, bool) and value > 0:
                output.append(value)
            else:
                _scan(value, depth + 1, chars, output)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _scan(item, depth + 1, chars, output)
    elif hasattr(obj, "content"):  # a message
        _scan(obj.content, depth + 1, chars, output)
        _scan(getattr(obj, "tool_calls", None), depth + 1, chars, output)
    elif hasattr(obj, "messages"):  # a shipped model call
        _scan(obj.messages, depth + 1, chars, output)
        _scan(getattr(obj, "kwargs", None), depth + 1, chars, output)


def estimate_tokens(args: tuple[Any, ...], kwargs: dict[str, Any], output_tokens: int,
                    chars_per_token: float = 4.0) -> int:
    """A call's tokens before it runs: its text's characters / ``chars_per_token``, plus its output.

    The output is the call's own ``max_tokens`` (or ``max_completion_tokens``,
    ``max_output_tokens``, ``max_new_tokens``) when its arguments have one, else ``output_tokens``.
    """
    chars: list[int] = [0]
    output: list[int] = []
    _scan(args, 0, chars, output)
    _scan(kwargs, 0, chars, output)
    return math.ceil(chars[0] / chars_per_token) + (max(output) if output else output_tokens)


def _usage(obj: Any) -> Any:
    usage = obj.get("usage_metadata") if isinstance(obj, dict) else getattr(obj, "usage_metadata", None)
    return usage if isinstance(usage, dict) else None


def tokens_used(value: Any) -> int | None:
    """Input plus output tokens a call's value reports (``usage_metadata``), or ``None`` if it says nothing.

    Reads an ``AIMessage``, a ``ChatResult``, its packed form (``{"generations": [...]}``)
    or a dict with ``usage_metadata``.
    """
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("generations"), list):
        messages = [g.get("message") if isinstance(g, dict) else getattr(g, "message", None)
                    for g in value["generations"]]
    elif hasattr(value, "generations"):
        messages = [getattr(g, "message", None) for g in (value.generations or [])]
    else:
        messages = [value]
    total: int | None = None
    for m in messages:
        usage = _usage(m) if m is not None else None
        if usage is not None:
            total = (total or 0) + int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
    return total


class _Local:
    """One component's lease and counts, in this driver."""

    def __init__(self, limit: RateLimit, output_tokens: int) -> None:
        self.limit = limit
        self.output_tokens = output_tokens
        self.token_cap = limit.token_capacity
        self.slice_r = 0.0 if limit.request_capacity is None else lease_slice(limit.request_capacity)
        self.slice_t = 0.0 if limit.token_capacity is None else lease_slice(limit.token_capacity)
        self.lease: str | None = None
        self.requests = 0.0
        self.tokens = 0.0
        self.expires = 0.0
        self.last_used = 0.0
        self.asking = False  # a call waits for a lease
        self.busy = False  # a round trip is under way
        self.retry_at = 0.0  # the scheduler said: not before then
        self.need = 0.0  # tokens the waiting call needs
        self.settle = 0.0  # tokens to charge (negative: refund) at the next round trip
        self.settle_at = 0.0
        # counts
        self.admitted = 0
        self.limited = 0  # calls that waited for budget
        self.wait_s = 0.0
        self.reserved = 0.0
        self.used = 0.0
        self.debt = 0.0
        self.refunded = 0.0
        self.exchanges = 0
        self.denials = 0  # round trips answered "no budget yet"

    def live(self, now: float) -> bool:
        return self.lease is not None and now < self.expires

    def take_lease(self) -> tuple[str, float, float] | None:
        """Hand the lease over to a round trip (nothing of it may be spent meanwhile)."""
        if self.lease is None:
            return None
        out = (self.lease, self.requests, self.tokens)
        self.lease, self.requests, self.tokens = None, 0.0, 0.0
        return out

    def stats(self, now: float) -> dict[str, Any]:
        live = self.live(now)
        return {**self.limit.as_dict(), "admitted": self.admitted, "limited": self.limited, "wait_s": self.wait_s,
                "tokens_reserved": self.reserved, "tokens_used": self.used, "tokens_debt": self.debt,
                "tokens_refunded": self.refunded, "exchanges": self.exchanges,
                "lease_requests": self.requests if live else 0.0, "lease_tokens": self.tokens if live else 0.0}


class RateLimiter:
    """The rate limits of this driver's components: leases taken from the scheduler, spent at admission.

    Args:
        client: The Dask client (its scheduler hosts :class:`~.limits.RateLimits`).
        driver: The driver's token.
        wake: Called with a component's name when it has budget again (the local
            controllers look at its queue).
        output_tokens: The output estimate of calls that give no ``max_tokens``.
    """

    def __init__(self, client: Any, driver: str, wake: Callable[[str], None], *, output_tokens: int = 256) -> None:
        self._client = client
        self._driver = driver
        self._wake = wake
        self.output_tokens = output_tokens
        self._cond = threading.Condition(threading.Lock())
        self._limits: dict[str, _Local] = {}
        self._registered = False
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- deploy time ------------------------------------------------------------------------------
    def configure(self, component: str, limit: RateLimit, *, output_tokens: int | None = None) -> None:
        """Give ``component`` its limits, in the scheduler's buckets and here.

        Raises:
            Exception: The scheduler could not be reached or lacks nalar-plugin (the caller maps it).
        """
        if not self._registered:
            self._client.register_plugin(RateLimits())
            self._registered = True
        self._client.sync(self._client.scheduler.nalar_rate_configure, component=component, **limit.as_dict())
        with self._cond:
            self._limits[component] = _Local(limit, output_tokens or self.output_tokens)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="nalar-rate-limits", daemon=True)
                self._thread.start()

    def limits(self) -> dict[str, RateLimit]:
        """The rate-limited components and their limits."""
        with self._cond:
            return {n: loc.limit for n, loc in self._limits.items()}

    # -- admission (the local controllers, under their lock: never waits) ----------------------------
    def admit(self, call: Call) -> bool:
        """Whether ``call`` may be admitted now; if not, a lease is asked for and the component woken later."""
        local = self._limits.get(call.context.component)
        if local is None:
            return True
        need = 0.0
        if local.token_cap is not None:
            est = call.extra.get("rate_estimate")
            if est is None:
                est = call.extra["rate_estimate"] = estimate_tokens(call.args, call.kwargs, local.output_tokens)
            need = min(float(est), local.token_cap)
        now = time.monotonic()
        with self._cond:
            if (local.live(now) and (local.limit.rpm is None or local.requests >= 1.0)
                    and (local.token_cap is None or local.tokens >= need)):
                if local.limit.rpm is not None:
                    local.requests -= 1.0
                if local.token_cap is not None:
                    local.tokens -= need
                    local.reserved += need
                    call.extra["rate_reserved"] = need
                local.last_used = now
                local.admitted += 1
                waited = call.extra.pop("rate_wait_at", None)
                if waited is not None and local.denials > waited[1]:  # the bucket was empty, not just far
                    local.limited += 1
                    local.wait_s += now - waited[0]
                return True
            call.extra.setdefault("rate_wait_at", (now, local.denials))
            local.need = need
            if not local.asking:
                local.asking = True
                self._cond.notify()
            return False

    def done(self, call: Call) -> None:
        """Settle a completed call's tokens: what it reported (``tokens_used``) against what it reserved."""
        reserved = call.extra.get("rate_reserved")
        if reserved is None:
            return
        local = self._limits.get(call.context.component)
        if local is None:
            return
        used = call.extra.get("tokens_used")
        if used is None:
            used = call.extra.get("rate_estimate", reserved)
        diff = float(used) - float(reserved)
        now = time.monotonic()
        with self._cond:
            local.used += used
            if diff > 0:
                local.debt += diff
                take = min(diff, local.tokens) if local.live(now) else 0.0
                local.tokens -= take
                diff -= take
            elif diff < 0:
                local.refunded -= diff
                if local.live(now):
                    local.tokens -= diff
                    diff = 0.0
            if diff:
                if not local.settle:
                    local.settle_at = now + _SETTLE_BATCH_S
                local.settle += diff
                self._cond.notify()

    # -- the round trips ------------------------------------------------------------------------------
    def _due(self, now: float) -> tuple[list[tuple[str, _Local, dict[str, Any]]], float]:
        """Round trips to make now, and when to look again (caller holds the lock)."""
        jobs: list[tuple[str, _Local, dict[str, Any]]] = []
        later = now + 1.0
        for name, loc in self._limits.items():
            if loc.busy:
                continue
            if loc.lease is not None and now >= loc.expires:
                loc.take_lease()  # expired: the scheduler counts it as spent
            req: dict[str, Any] | None = None
            if self._closed:
                if loc.lease is not None or loc.settle:
                    req = {"returning": loc.take_lease()}
            elif loc.asking:
                if now >= loc.retry_at:
                    req = {"returning": loc.take_lease(), "want_requests": loc.slice_r,
                           "want_tokens": max(loc.slice_t, loc.need), "need_tokens": loc.need}
                else:
                    later = min(later, loc.retry_at)
            elif loc.lease is not None and now - loc.last_used >= HOLD_S:
                req = {"returning": loc.take_lease()}
            elif loc.settle and now >= loc.settle_at:
                req = {}
            else:
                if loc.lease is not None:
                    later = min(later, loc.last_used + HOLD_S, loc.expires)
                if loc.settle:
                    later = min(later, loc.settle_at)
            if req is None:
                continue
            req["settle"], loc.settle = loc.settle, 0.0
            req.update(component=name, driver=self._driver, limit=loc.limit.as_dict())
            loc.busy = True
            jobs.append((name, loc, req))
        return jobs, later

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                jobs, later = self._due(now)
                if not jobs:
                    if self._closed:
                        return
                    self._cond.wait(max(0.001, later - now))
                    continue
            for name, loc, req in jobs:
                try:
                    if self._exchange(loc, req):
                        self._wake(name)
                except Exception:  # the thread must survive anything: calls wait on it
                    logger.exception("rate limits of %s: a round trip or the wake-up after it failed", name)
                    with self._cond:
                        loc.busy = False

    def _exchange(self, loc: _Local, req: dict[str, Any]) -> bool:
        """One round trip; True when it brought a lease."""
        sent = time.monotonic()
        try:
            reply = self._client.sync(self._client.scheduler.nalar_rate_lease, callback_timeout=10, **req)
            if not isinstance(reply, dict) or "wait" not in reply:
                raise RuntimeError(f"unexpected reply {reply!r}")
        except Exception:
            if not self._closed:
                logger.warning("rate limits of %s: the scheduler could not be reached; retrying",
                               req["component"], exc_info=True)
            with self._cond:
                loc.busy = False
                if not self._closed:
                    loc.settle += req.get("settle", 0.0)  # it travels with the next round trip
                loc.retry_at = time.monotonic() + _RETRY_S
                if loc.asking:
                    self._cond.notify()
            return False
        with self._cond:
            loc.busy = False
            loc.exchanges += 1
            if reply["lease"] is None:
                if loc.asking:
                    loc.denials += 1
                    loc.retry_at = sent + float(reply["wait"])
                self._cond.notify()
                return False
            loc.lease = str(reply["lease"])
            loc.requests, loc.tokens = float(reply["requests"]), float(reply["tokens"])
            loc.expires = sent + float(reply["ttl"]) * _EXPIRY_MARGIN
            loc.last_used = time.monotonic()
            loc.asking = False
            loc.retry_at = 0.0
            self._cond.notify()
        return True

    # -- views and lifecycle ----------------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        """Per rate-limited component: its limits, calls admitted, calls that waited and for how long, tokens.

        ``limited`` counts the calls that waited for budget (the scheduler's bucket was empty,
        not just a round trip away) and ``wait_s`` their waits, in all;
        ``tokens_reserved`` the estimates, ``tokens_used`` what the calls reported (their estimate
        when they said nothing), ``tokens_debt`` overspend charged on completion,
        ``tokens_refunded`` underspend given back; ``exchanges`` the round trips to the scheduler.
        """
        now = time.monotonic()
        with self._cond:
            return {n: loc.stats(now) for n, loc in self._limits.items()}

    def view(self) -> dict[str, Any]:
        """The scheduler's buckets of every rate-limited component of the cluster (one round trip)."""
        if not self._registered:
            return {}
        return self._client.sync(self._client.scheduler.nalar_rate_view)  # type: ignore[no-any-return]

    def close(self, timeout: float = 5.0) -> None:
        """Give the leases back and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
