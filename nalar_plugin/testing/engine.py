"""One simulated LLM replica with continuous batching and a prefix cache.

The simulated engine never runs a model. It computes, under a
:class:`threading.Lock`, *when* a request would start and finish on a replica
that has ``max_batch`` decoding slots, then the caller sleeps until that
moment. Admission is analytic (a virtual clock over :func:`time.monotonic`), so
the engine holds no asyncio primitive and can be shared by many threads and by
several event loops at once, and a request costs O(``max_batch``) work no matter
how many tokens it generates.

Two approximations keep admission that cheap: a request's per-token decode
time is fixed by the batch size at its start (itself included; later arrivals
do not slow it down), and a session's prefix enters the cache when its request
is admitted rather than when its prefill ends.

Time has two units:

* **model seconds** - what a real replica would take (``queued_s``,
  ``prefill_s``, ``decode_s`` of a :class:`Generation`, the metrics' ``busy_s``);
* **wall seconds** - model seconds times :attr:`EngineConfig.time_scale`; the
  absolute timestamps of a :class:`Generation` (``submitted_at``,
  ``started_at``, ``first_token_at``, ``finished_at``) are wall-clock
  :func:`time.monotonic` values of the process that owns the engine.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import threading
import time
import weakref
from collections import OrderedDict, deque
from typing import Any

from nalar_plugin.errors import ConfigError, RuntimeStateError
from nalar_plugin.testing.records import EngineConfig, EngineMetrics, Generation

__all__ = ["SimulatedEngine", "lookup_engine"]


# Process-wide registry so a pickled engine can be resolved by reference: the
# engine itself holds a lock and live state, which cannot travel. Weak values so
# engines of finished tests do not accumulate.
_REGISTRY: weakref.WeakValueDictionary[str, SimulatedEngine] = weakref.WeakValueDictionary()
_REGISTRY_LOCK = threading.Lock()
_UIDS = itertools.count()


def lookup_engine(uid: str, name: str) -> SimulatedEngine:
    """Resolve a pickled engine reference in this process.

    Args:
        uid: The engine's process-unique id.
        name: The engine's name, for the error message.

    Returns:
        The live engine.

    Raises:
        ConfigError: If the engine does not exist in this process (it was
            unpickled in another process, or was garbage collected).
    """
    with _REGISTRY_LOCK:
        engine = _REGISTRY.get(uid)
    if engine is None:
        raise ConfigError(
            f"simulated engine {name!r} does not exist in this process: an in-process "
            "engine only unpickles in the process that created it. Serve it with "
            "nalar_plugin.testing.EngineServer and pass engine=server.url to "
            "SimulatedChatModel to use it from other processes."
        )
    return engine


def _wake(waiter: asyncio.Future[None]) -> None:
    """Resolve a coroutine's wait future unless it is already done.

    Args:
        waiter: The future, on its own loop.
    """
    if not waiter.done():
        waiter.set_result(None)


def _check_tokens(name: str, value: int) -> int:
    """Validate a token count.

    Args:
        name: Argument name, for the error message.
        value: The count.

    Returns:
        The count as an int.

    Raises:
        ConfigError: If the value is not a non-negative integer.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
    return value


class SimulatedEngine:
    """One simulated LLM replica: continuous batching, FCFS queue, prefix cache.

    Thread-safe and event-loop agnostic: :meth:`generate` may be awaited from
    any loop and :meth:`generate_sync` called from any thread, concurrently.

    Args:
        name: Engine name (shown in generations, metrics and the HTTP API).
        config: Performance model; defaults to :class:`EngineConfig()`.
        seed: Seed of the generator used for ``jitter``.
        pool: Pool (agent type) the engine belongs to, if any.
        ready_at: Wall time (:func:`time.monotonic`) before which the engine
            admits nothing, e.g. the end of a warm-up; None means now.

    Raises:
        ConfigError: If ``name`` is empty.
    """

    def __init__(
        self,
        name: str,
        config: EngineConfig | None = None,
        *,
        seed: int = 0,
        pool: str | None = None,
        ready_at: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"engine name must be a non-empty str, got {name!r}")
        self.name = name
        self.config = config if config is not None else EngineConfig()
        self.pool = pool
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        now = time.monotonic()
        start = now if ready_at is None else max(now, ready_at)
        self._ready_at = start
        # Wall time each batch slot becomes free; a request takes the earliest.
        self._slots: list[float] = [start] * self.config.max_batch
        self._last_start = start
        # Admission order makes start times non-decreasing, so queued requests
        # are a FIFO of start times; running ones are tracked by finish time.
        self._pending_starts: deque[float] = deque()
        self._pending_finishes: list[float] = []
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_used = 0
        self._alive = True
        # Waiters to wake when the engine is killed: one event for blocked
        # threads, and one future per awaiting coroutine, each created on (and
        # resolved through) its own loop, so no primitive spans two loops.
        self._killed = threading.Event()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._admitted = 0
        self._prompt_tokens = 0
        self._cached_tokens = 0
        self._output_tokens = 0
        # Busy time as a union of intervals: closed segments plus the open one.
        self._busy_closed = 0.0
        self._seg_start = start
        self._seg_end = start
        self._uid = f"{name}#{next(_UIDS)}"
        with _REGISTRY_LOCK:
            _REGISTRY[self._uid] = self

    def __repr__(self) -> str:
        """Return a short description."""
        return f"SimulatedEngine(name={self.name!r}, pool={self.pool!r})"

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        """Pickle as a reference into this process's engine registry.

        Returns:
            The reconstruction recipe (:func:`lookup_engine` and its arguments).
        """
        return (lookup_engine, (self._uid, self.name))

    # ------------------------------------------------------------------ state
    @property
    def alive(self) -> bool:
        """False once :meth:`kill` was called."""
        return self._alive

    @property
    def ready_at(self) -> float:
        """Wall time at which the current warm-up ends (may be in the past)."""
        return self._ready_at

    def is_ready(self) -> bool:
        """Whether the engine is alive and not warming up.

        Returns:
            True if a request submitted now is not delayed by a warm-up.
        """
        return self._alive and time.monotonic() >= self._ready_at

    def cached_prefix(self, session: str | None) -> int:
        """Tokens of a session's prefix held in this engine's cache.

        Args:
            session: Session key.

        Returns:
            The cached token count, 0 if none (or ``session`` is None).
        """
        if session is None:
            return 0
        with self._lock:
            return self._cache.get(session, 0)

    def load(self) -> int:
        """Requests admitted and not finished yet (queued plus running).

        Returns:
            The count, for least-loaded routing.
        """
        with self._lock:
            self._prune(time.monotonic())
            return len(self._pending_finishes)

    # -------------------------------------------------------------- lifecycle
    def begin_warmup(self, warmup_s: float | None = None, *, clear_cache: bool = True) -> float:
        """Stop admitting for a warm-up, as when weights are reloaded.

        Work already admitted drains first (a replica cannot reload while
        serving); then the engine spends ``warmup_s`` model seconds admitting
        nothing.

        Args:
            warmup_s: Model seconds of warm-up; defaults to ``config.warmup_s``.
            clear_cache: Empty the prefix cache (new weights invalidate it).

        Returns:
            The wall time at which the engine is ready again.

        Raises:
            ConfigError: If ``warmup_s`` is negative.
            RuntimeStateError: If the engine was killed.
        """
        seconds = self.config.warmup_s if warmup_s is None else warmup_s
        if not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ConfigError(f"warmup_s must be a number >= 0, got {warmup_s!r}")
        with self._lock:
            self._check_alive()
            drained = max(time.monotonic(), *self._slots)
            ready = drained + seconds * self.config.time_scale
            self._ready_at = ready
            self._slots = [ready] * len(self._slots)
            if clear_cache:
                self._cache.clear()
                self._cache_used = 0
        return ready

    def clear_cache(self) -> None:
        """Empty the prefix cache."""
        with self._lock:
            self._cache.clear()
            self._cache_used = 0

    def kill(self) -> None:
        """Take the engine down for good.

        New requests raise :class:`RuntimeStateError`; requests already
        admitted and waiting in :meth:`generate` / :meth:`generate_sync` are
        woken at once and raise it too, as with a crashed replica.
        """
        with self._lock:
            self._alive = False
            self._cache.clear()
            self._cache_used = 0
            waiters, self._waiters = self._waiters, set()
        self._killed.set()
        for loop, waiter in waiters:
            try:
                loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass
        with _REGISTRY_LOCK:
            _REGISTRY.pop(self._uid, None)

    def _check_alive(self) -> None:
        """Raise if the engine was killed.

        Raises:
            RuntimeStateError: If the engine was killed.
        """
        if not self._alive:
            raise RuntimeStateError(f"simulated engine {self.name!r} was killed")

    # -------------------------------------------------------------- admission
    def reserve(
        self, prompt_tokens: int, output_tokens: int, session: str | None = None
    ) -> Generation:
        """Admit a request and return its schedule without waiting for it.

        The request is committed: it occupies a slot from ``started_at`` to
        ``finished_at`` whether or not anybody waits for it. :meth:`generate`
        and :meth:`generate_sync` are this plus a sleep.

        Args:
            prompt_tokens: Prompt length in tokens.
            output_tokens: Tokens to generate.
            session: Session key for the prefix cache; None disables caching.

        Returns:
            The planned :class:`Generation`.

        Raises:
            ConfigError: If a token count is not a non-negative int.
            RuntimeStateError: If the engine was killed.
        """
        prompt = _check_tokens("prompt_tokens", prompt_tokens)
        output = _check_tokens("output_tokens", output_tokens)
        cfg = self.config
        scale = cfg.time_scale
        with self._lock:
            self._check_alive()
            now = time.monotonic()
            self._prune(now)
            slot = min(range(len(self._slots)), key=self._slots.__getitem__)
            # FCFS: never start before a request admitted earlier.
            start = max(now, self._slots[slot], self._last_start)
            batch = 1 + sum(1 for i, free in enumerate(self._slots) if i != slot and free > start)
            cached = self._lookup_cache(session, prompt)
            prefill = cfg.prefill_s(prompt - cached)
            decode = output * cfg.decode_ms(batch) / 1000.0
            if cfg.jitter > 0:
                noise = math.exp(self._rng.gauss(0.0, cfg.jitter))
                prefill *= noise
                decode *= noise
            first = start + prefill * scale
            finish = first + decode * scale
            self._slots[slot] = finish
            self._last_start = start
            self._pending_starts.append(start)
            heapq.heappush(self._pending_finishes, finish)
            self._store_cache(session, prompt + output)
            self._account_busy(start, finish)
            self._admitted += 1
            self._prompt_tokens += prompt
            self._cached_tokens += cached
            self._output_tokens += output
        return Generation(
            engine=self.name,
            session=session,
            prompt_tokens=prompt,
            output_tokens=output,
            cached_tokens=cached,
            batch=batch,
            queued_s=(start - now) / scale,
            prefill_s=prefill,
            decode_s=decode,
            submitted_at=now,
            started_at=start,
            first_token_at=first,
            finished_at=finish,
            time_scale=scale,
        )

    async def generate(
        self, prompt_tokens: int, output_tokens: int, session: str | None = None
    ) -> Generation:
        """Run a request, awaiting its simulated completion on the current loop.

        Cancelling the awaiting task does not give the slot back: the request
        stays scheduled, like a replica that does not notice a client leaving.

        Args:
            prompt_tokens: Prompt length in tokens.
            output_tokens: Tokens to generate.
            session: Session key for the prefix cache; None disables caching.

        Returns:
            The :class:`Generation`, once it finished.

        Raises:
            ConfigError: If a token count is not a non-negative int.
            RuntimeStateError: If the engine was killed before the request
                finished.
        """
        gen = self.reserve(prompt_tokens, output_tokens, session)
        delay = gen.finished_at - time.monotonic()
        if delay > 0:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            entry = (loop, waiter)
            with self._lock:
                registered = self._alive
                if registered:
                    self._waiters.add(entry)
            if registered:
                timer = loop.call_later(delay, _wake, waiter)
                try:
                    await waiter
                finally:
                    timer.cancel()
                    with self._lock:
                        self._waiters.discard(entry)
        self._check_alive()
        return gen

    def generate_sync(
        self, prompt_tokens: int, output_tokens: int, session: str | None = None
    ) -> Generation:
        """Run a request, blocking the calling thread until it completes.

        Args:
            prompt_tokens: Prompt length in tokens.
            output_tokens: Tokens to generate.
            session: Session key for the prefix cache; None disables caching.

        Returns:
            The :class:`Generation`, once it finished.

        Raises:
            ConfigError: If a token count is not a non-negative int.
            RuntimeStateError: If the engine was killed before the request
                finished.
        """
        gen = self.reserve(prompt_tokens, output_tokens, session)
        delay = gen.finished_at - time.monotonic()
        if delay > 0:
            self._killed.wait(delay)  # returns early only if the engine is killed
        self._check_alive()
        return gen

    # ---------------------------------------------------------------- metrics
    def metrics(self) -> EngineMetrics:
        """Snapshot the engine's counters.

        Returns:
            The current :class:`EngineMetrics`.
        """
        with self._lock:
            now = time.monotonic()
            self._prune(now)
            queued = len(self._pending_starts)
            open_busy = min(max(now - self._seg_start, 0.0), self._seg_end - self._seg_start)
            return EngineMetrics(
                name=self.name,
                pool=self.pool,
                alive=self._alive,
                ready=self._alive and now >= self._ready_at,
                admitted=self._admitted,
                served=self._admitted - len(self._pending_finishes),
                queue_len=queued,
                in_flight=len(self._pending_finishes) - queued,
                busy_s=(self._busy_closed + open_busy) / self.config.time_scale,
                prompt_tokens=self._prompt_tokens,
                cached_tokens=self._cached_tokens,
                output_tokens=self._output_tokens,
                cache_used_tokens=self._cache_used,
                cache_sessions=len(self._cache),
            )

    # --------------------------------------------------------------- helpers
    def _prune(self, now: float) -> None:
        """Forget requests that started / finished before ``now`` (lock held).

        Args:
            now: Current wall time.
        """
        starts = self._pending_starts
        while starts and starts[0] <= now:
            starts.popleft()
        finishes = self._pending_finishes
        while finishes and finishes[0] <= now:
            heapq.heappop(finishes)

    def _account_busy(self, start: float, finish: float) -> None:
        """Add ``[start, finish]`` to the busy-time union (lock held).

        Args:
            start: Wall start time (never earlier than a previous start).
            finish: Wall finish time.
        """
        if start > self._seg_end:
            self._busy_closed += self._seg_end - self._seg_start
            self._seg_start = start
            self._seg_end = finish
        else:
            self._seg_end = max(self._seg_end, finish)

    def _lookup_cache(self, session: str | None, prompt: int) -> int:
        """Prompt tokens of ``session`` served from the prefix cache (lock held).

        Args:
            session: Session key, or None.
            prompt: Prompt length.

        Returns:
            Cached tokens, at most ``prompt``.
        """
        if session is None:
            return 0
        held = self._cache.get(session)
        if held is None:
            return 0
        self._cache.move_to_end(session)
        return min(held, prompt)

    def _store_cache(self, session: str | None, tokens: int) -> None:
        """Remember a session's prefix, evicting least recently used ones (lock held).

        The cache is updated at admission: a real engine holds the prompt's KV
        blocks once prefilled, and the analytic model has no later hook.

        Args:
            session: Session key, or None (nothing is stored).
            tokens: Prefix length: the request's prompt plus its output.
        """
        capacity = self.config.prefix_cache_tokens
        if session is None or capacity == 0:
            return
        # A prefix longer than the whole cache keeps its leading blocks only.
        tokens = min(tokens, capacity)
        self._cache_used -= self._cache.pop(session, 0)
        self._cache[session] = tokens
        self._cache_used += tokens
        while self._cache_used > capacity:
            _, evicted = self._cache.popitem(last=False)
            self._cache_used -= evicted
