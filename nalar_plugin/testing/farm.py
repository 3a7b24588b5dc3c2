"""A farm of simulated engines grouped in pools, one pool per agent type."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping

from nalar_plugin.errors import ConfigError
from nalar_plugin.testing.engine import SimulatedEngine
from nalar_plugin.testing.records import EngineConfig, EngineMetrics

__all__ = ["EngineFarm"]


class EngineFarm:
    """Named simulated engines grouped in pools per agent type, in-process.

    Engines are named ``"<pool>-<n>"`` in creation order (``n`` counts per
    pool from 0); a name never changes or gets reused, even when the engine is
    reassigned to another pool. Each engine draws its jitter from its own
    generator, seeded from the farm's ``seed`` and its creation index, so a
    farm is deterministic for a given admission order.

    Example::

        farm = EngineFarm({"analyst": 2, "coder": 3}, config=EngineConfig(time_scale=0.01))
        gen = await farm.engines("coder")[0].generate(1200, 40, session="s1")

    Args:
        pools: Initial engine count per pool (agent type).
        config: Performance model shared by the engines; defaults to
            :class:`EngineConfig()`. Its ``warmup_s`` is the cost of
            :meth:`reassign` and :meth:`provision`.
        seed: Base seed of the engines' generators.

    Raises:
        ConfigError: If a pool name is empty or a count is negative.
    """

    def __init__(
        self,
        pools: Mapping[str, int],
        config: EngineConfig | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.config = config if config is not None else EngineConfig()
        self.seed = seed
        self._lock = threading.Lock()
        self._pools: dict[str, list[str]] = {}
        self._engines: dict[str, SimulatedEngine] = {}
        self._next_index: dict[str, int] = {}
        self._created = 0
        # engine name -> [created, killed or None] (time.monotonic), killed engines included
        self._lifetimes: dict[str, list[float | None]] = {}
        for pool, count in pools.items():
            self._check_pool(pool)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigError(
                    f"engine count of pool {pool!r} must be an int >= 0, got {count!r}"
                )
            self._pools.setdefault(pool, [])
            for _ in range(count):
                self._create(pool, ready_at=None)

    def __repr__(self) -> str:
        """Return a short description."""
        sizes = {pool: len(names) for pool, names in self._pools.items()}
        return f"EngineFarm({sizes})"

    def __len__(self) -> int:
        """Return the number of live engines."""
        return len(self._engines)

    def __iter__(self) -> Iterator[SimulatedEngine]:
        """Iterate over the live engines, pool by pool."""
        return iter(self.all_engines())

    def __contains__(self, name: object) -> bool:
        """Return whether a live engine has this name."""
        return name in self._engines

    @staticmethod
    def _check_pool(pool: str) -> None:
        """Validate a pool name.

        Args:
            pool: The name.

        Raises:
            ConfigError: If it is not a non-empty str.
        """
        if not isinstance(pool, str) or not pool:
            raise ConfigError(f"pool name must be a non-empty str, got {pool!r}")

    def _create(self, pool: str, ready_at: float | None) -> SimulatedEngine:
        """Create an engine in ``pool`` (farm lock held, or during __init__).

        Args:
            pool: Target pool.
            ready_at: End of the engine's warm-up (wall time), or None.

        Returns:
            The new engine.
        """
        index = self._next_index.get(pool, 0)
        self._next_index[pool] = index + 1
        name = f"{pool}-{index}"
        while name in self._engines:  # a reassigned engine may hold the name
            index += 1
            self._next_index[pool] = index + 1
            name = f"{pool}-{index}"
        engine = SimulatedEngine(
            name,
            self.config,
            seed=self.seed * 1_000_003 + self._created,
            pool=pool,
            ready_at=ready_at,
        )
        self._created += 1
        self._engines[name] = engine
        self._lifetimes[name] = [time.monotonic(), None]
        self._pools.setdefault(pool, []).append(name)
        return engine

    # ----------------------------------------------------------------- lookup
    def pools(self) -> dict[str, list[str]]:
        """Engine names per pool.

        Returns:
            A fresh ``{pool: [engine name, ...]}`` mapping (empty pools included).
        """
        with self._lock:
            return {pool: list(names) for pool, names in self._pools.items()}

    def engines(self, pool: str) -> list[SimulatedEngine]:
        """The engines of a pool.

        Args:
            pool: Pool (agent type) name.

        Returns:
            Its engines in creation order (reassigned ones last).

        Raises:
            ConfigError: If the farm has no such pool.
        """
        with self._lock:
            if pool not in self._pools:
                raise ConfigError(f"no pool {pool!r}; pools are {sorted(self._pools)}")
            return [self._engines[name] for name in self._pools[pool]]

    def engine(self, name: str) -> SimulatedEngine:
        """Look up an engine by name.

        Args:
            name: Engine name.

        Returns:
            The engine.

        Raises:
            ConfigError: If no live engine has this name.
        """
        with self._lock:
            try:
                return self._engines[name]
            except KeyError:
                raise ConfigError(
                    f"no engine {name!r}; engines are {sorted(self._engines)}"
                ) from None

    def all_engines(self) -> list[SimulatedEngine]:
        """All live engines.

        Returns:
            The engines, pool by pool.
        """
        with self._lock:
            return [self._engines[name] for names in self._pools.values() for name in names]

    def pick(self, pool: str, session: str | None = None) -> SimulatedEngine:
        """A simple router: the engine of ``pool`` to send a request to.

        Among ready engines (or, if none is ready, the one ready soonest),
        prefers the least loaded engine holding the session's prefix as long
        as it has a free batch slot or is no busier than the least loaded
        engine; otherwise the least loaded engine.

        Args:
            pool: Pool (agent type) name.
            session: Session key, or None.

        Returns:
            The chosen engine.

        Raises:
            ConfigError: If the pool does not exist or is empty.
        """
        candidates = self.engines(pool)
        if not candidates:
            raise ConfigError(f"pool {pool!r} has no engines")
        now = time.monotonic()
        ready = [e for e in candidates if e.ready_at <= now] or sorted(
            candidates, key=lambda e: e.ready_at
        )[:1]
        loads = {e.name: e.load() for e in ready}
        least = min(ready, key=lambda e: loads[e.name])
        if session is not None:
            holders = [e for e in ready if e.cached_prefix(session) > 0]
            if holders:
                best = min(holders, key=lambda e: loads[e.name])
                # Cache locality wins until it would mean queueing behind a
                # full batch while another engine has room.
                if loads[best.name] < self.config.max_batch or loads[best.name] <= loads[least.name]:
                    return best
        return least

    def metrics(self) -> dict[str, EngineMetrics]:
        """Snapshot every live engine's counters.

        Returns:
            ``{engine name: EngineMetrics}``.
        """
        return {engine.name: engine.metrics() for engine in self.all_engines()}

    # -------------------------------------------------------------- lifecycle
    def reassign(
        self, engine_name: str, new_pool: str, *, warmup_s: float | None = None
    ) -> SimulatedEngine:
        """Move an engine to another pool (agent type), paying a warm-up.

        The engine drains what it already admitted, then admits nothing for
        ``warmup_s`` model seconds (scaled by ``time_scale``); its prefix cache
        is cleared. Requests sent meanwhile queue until the warm-up ends.

        Args:
            engine_name: Engine to move.
            new_pool: Target pool; created if it does not exist.
            warmup_s: Warm-up in model seconds; defaults to ``config.warmup_s``.

        Returns:
            The moved engine.

        Raises:
            ConfigError: If the engine does not exist, the pool name is invalid
                or ``warmup_s`` is negative.
        """
        self._check_pool(new_pool)
        with self._lock:
            engine = self._engines.get(engine_name)
            if engine is None:
                raise ConfigError(f"no engine {engine_name!r}; engines are {sorted(self._engines)}")
            engine.begin_warmup(warmup_s, clear_cache=True)
            if engine.pool is not None:
                self._pools[engine.pool].remove(engine_name)
            self._pools.setdefault(new_pool, []).append(engine_name)
            engine.pool = new_pool
            return engine

    def provision(self, pool: str, *, warmup_s: float | None = None) -> SimulatedEngine:
        """Add an engine to a pool; it admits nothing until warmed up.

        Args:
            pool: Target pool; created if it does not exist.
            warmup_s: Warm-up in model seconds; defaults to ``config.warmup_s``.

        Returns:
            The new engine.

        Raises:
            ConfigError: If the pool name is invalid or ``warmup_s`` is negative.
        """
        self._check_pool(pool)
        seconds = self.config.warmup_s if warmup_s is None else warmup_s
        if not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ConfigError(f"warmup_s must be a number >= 0, got {warmup_s!r}")
        with self._lock:
            ready_at = time.monotonic() + seconds * self.config.time_scale
            return self._create(pool, ready_at=ready_at)

    def kill(self, engine_name: str) -> None:
        """Remove an engine from the farm and take it down.

        Its admitted requests fail with
        :class:`~nalar_plugin.errors.RuntimeStateError`.

        Args:
            engine_name: Engine to kill.

        Raises:
            ConfigError: If no live engine has this name.
        """
        with self._lock:
            engine = self._engines.pop(engine_name, None)
            if engine is None:
                raise ConfigError(f"no engine {engine_name!r}; engines are {sorted(self._engines)}")
            if engine.pool is not None:
                self._pools[engine.pool].remove(engine_name)
            self._lifetimes[engine_name][1] = time.monotonic()
        engine.kill()

    def engine_seconds(self, start: float, end: float) -> float:
        """Wall seconds of engine time between ``start`` and ``end``, killed engines included.

        An engine counts from its creation (its warm-up costs too) until it is killed.

        Args:
            start: Start of the window (:func:`time.monotonic`).
            end: End of the window.

        Returns:
            The sum over engines of the time each was alive within the window.
        """
        with self._lock:
            spans = [(born, end if gone is None else gone) for born, gone in self._lifetimes.values()]
        return sum(max(0.0, min(end, b) - max(start, a)) for a, b in spans if a is not None)

    def engines_alive_max(self, start: float, end: float) -> int:
        """The most engines alive at once between ``start`` and ``end``."""
        with self._lock:
            spans = [(born, end if gone is None else gone) for born, gone in self._lifetimes.values()]
        events = sorted([(max(start, a), 1) for a, b in spans if a is not None and b > start and a < end]
                        + [(min(end, b), -1) for a, b in spans if a is not None and b > start and a < end],
                        key=lambda e: (e[0], e[1]))
        alive = peak = 0
        for _, step in events:
            alive += step
            peak = max(peak, alive)
        return peak
