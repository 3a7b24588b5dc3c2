"""Seeded traces: the requests, the scripted LLM decisions and the token lengths.

A trace is made once per ``(workload, seed, rps, duration)`` and given to every
system, so each system sees the same arrivals, the same answers (how many
subtasks, which branch, which test fails) and the same token counts. Nothing in
a trace depends on the system that runs it.

A trace has three parts:

* ``clients`` - what arrives, in arrival order (an analyst session, a routed
  request, a software job), each workload with its own plan type;
* ``book`` - every model call and tool call a client can make, by key: the
  :class:`ModelStep` says what the model answers and how many tokens it reads
  and writes, the :class:`ToolStep` how long the tool takes and what it returns;
* ``critical_paths`` - per request, the latency it would have on an idle farm
  (see :func:`service_s`), the lower bound every system is measured against.

Draws are keyed (``random.Random`` seeded with a string, hashed with SHA-512),
so the content of request *i* does not depend on the offered rate: a trace at a
higher rate has more requests, not different ones.
"""

from __future__ import annotations

import itertools
import math
import random
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..testing import EngineConfig, TokenSampler

__all__ = [
    "ModelStep",
    "Shared",
    "ToolStep",
    "Trace",
    "TraceBook",
    "apportion",
    "keyed_rng",
    "lognormal",
    "poisson_arrivals",
    "service_s",
]


@dataclass(frozen=True)
class ModelStep:
    """One model call of the trace: its answer and its token counts.

    Attributes:
        key: Unique key; the app passes it with the call (``trace_key=``).
        agent: Agent type, which is also the engine pool that serves it.
        prompt: Prompt tokens.
        output: Output tokens.
        session: Prefix-cache key (``None``: nothing to reuse).
        cached: Prompt tokens an engine that served this session's previous
            call still holds (the best case; 0 for a first call).
        content: The answer text.
        tool_calls: Tool calls of the answer, ``(tool name, tool step key, call id)``.
    """

    key: str
    agent: str
    prompt: int
    output: int
    session: str | None = None
    cached: int = 0
    content: str = ""
    tool_calls: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class ToolStep:
    """One tool call of the trace.

    Attributes:
        key: Unique key; the model's tool call carries it as its argument.
        tool: Tool name.
        latency_s: Model seconds the tool takes.
        content: What the tool returns.
    """

    key: str
    tool: str
    latency_s: float
    content: str


_SHARED: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_SHARED_IDS = itertools.count()


def _lookup_shared(uid: str) -> Any:
    obj = _SHARED.get(uid)
    if obj is None:
        raise ConfigError(f"benchmark object {uid} does not exist in this process (use a threads-mode Runtime)")
    return obj


class Shared:
    """Pickles as a reference into this process, like a simulated engine.

    Passing a trace book or a ledger to a call then costs nothing however long
    the trace is; a threads-mode Runtime (the default) resolves it in place.
    """

    def __init__(self) -> None:
        self._uid = f"{type(self).__name__}{next(_SHARED_IDS)}"
        _SHARED[self._uid] = self

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_lookup_shared, (self._uid,))


class TraceBook(Shared):
    """Every step of a trace by key; the simulated models and tools read their part here."""

    def __init__(self) -> None:
        super().__init__()
        self._steps: dict[str, ModelStep | ToolStep] = {}

    def __len__(self) -> int:
        return len(self._steps)

    def __contains__(self, key: object) -> bool:
        return key in self._steps

    def add(self, step: ModelStep | ToolStep) -> ModelStep | ToolStep:
        """Add a step; keys are unique.

        Raises:
            ConfigError: The key is taken.
        """
        if step.key in self._steps:
            raise ConfigError(f"trace step {step.key!r} is defined twice")
        self._steps[step.key] = step
        return step

    def model(self, key: str) -> ModelStep:
        """The model step ``key``.

        Raises:
            ConfigError: No model step has this key.
        """
        step = self._steps.get(key)
        if not isinstance(step, ModelStep):
            raise ConfigError(f"the trace has no model call {key!r}")
        return step

    def tool(self, key: str) -> ToolStep:
        """The tool step ``key``.

        Raises:
            ConfigError: No tool step has this key.
        """
        step = self._steps.get(key)
        if not isinstance(step, ToolStep):
            raise ConfigError(f"the trace has no tool call {key!r}")
        return step

    def model_steps(self) -> Iterable[ModelStep]:
        """Every model step."""
        return (s for s in self._steps.values() if isinstance(s, ModelStep))

    def tool_steps(self) -> Iterable[ToolStep]:
        """Every tool step."""
        return (s for s in self._steps.values() if isinstance(s, ToolStep))


@dataclass
class Trace:
    """One workload's trace at one offered rate.

    Attributes:
        workload: Workload name.
        seed: Seed of every draw.
        rps: Offered requests per model second.
        duration_s: Model seconds over which clients arrive.
        clients: What arrives, in arrival order (each has ``arrival_s``).
        book: Every model and tool step.
        critical_paths: Per request id, its latency on an idle farm.
        agents: Agent types, in a fixed order (one engine pool each).
        stateful: Agent types whose sessions should stay on one engine.
        info: Workload-specific facts for the report (mean turns, phases, ...).
    """

    workload: str
    seed: int
    rps: float
    duration_s: float
    clients: list[Any]
    book: TraceBook
    critical_paths: dict[str, float]
    agents: tuple[str, ...]
    stateful: frozenset[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        """Requests whose latency is reported."""
        return len(self.critical_paths)

    def demand(self, config: EngineConfig) -> dict[str, float]:
        """Slot-seconds of engine service per agent type (batch of one, warm prefix cache)."""
        out = {a: 0.0 for a in self.agents}
        for step in self.book.model_steps():
            out[step.agent] += service_s(step, config)
        return out

    def lower_bound_s(self) -> float:
        """Mean latency of a request on an idle farm: the bound for the mean latency."""
        paths = list(self.critical_paths.values())
        return sum(paths) / len(paths) if paths else 0.0


def service_s(step: ModelStep, config: EngineConfig) -> float:
    """Model seconds a step takes alone on an engine that holds its session's prefix.

    This is the least time the engine model allows: no queueing, a batch of one
    (the fastest decode), and every reusable prefix token cached.
    """
    return config.prefill_s(step.prompt - step.cached) + step.output * config.decode_ms(1) / 1000.0


def keyed_rng(seed: int, *key: object) -> random.Random:
    """A generator determined by the seed and ``key`` only (stable across processes)."""
    return random.Random(repr((seed, *key)))


def lognormal(rng: random.Random, median: float, sigma: float, low: float, high: float) -> float:
    """A clipped lognormal draw."""
    return min(high, max(low, rng.lognormvariate(math.log(median), sigma)))


def poisson_arrivals(seed: int, workload: str, rate: float, duration_s: float) -> list[float]:
    """Arrival times (model seconds) of a Poisson process of ``rate`` over ``duration_s``.

    One unit-rate process per ``(seed, workload)`` is scaled by ``1 / rate``, so
    traces at different rates are nested: request *i* arrives at ``t_i / rate``,
    and a higher rate brings the same requests closer together.

    Raises:
        ConfigError: A rate or duration that is not positive.
    """
    if not rate > 0 or not duration_s > 0:
        raise ConfigError(f"need rate > 0 and duration > 0, got rate={rate}, duration={duration_s}")
    rng = keyed_rng(seed, workload, "arrivals")
    out: list[float] = []
    t = rng.expovariate(1.0) / rate
    while t < duration_s:
        out.append(t)
        t += rng.expovariate(1.0) / rate
    return out


def apportion(demand: Mapping[str, float], engines: int) -> dict[str, int]:
    """Split ``engines`` over agent types in proportion to demand (largest remainder).

    Every agent type gets at least one engine; this is the static split an operator
    would choose with hindsight of the whole trace.

    Raises:
        ConfigError: Fewer engines than agent types.
    """
    names = list(demand)
    if engines < len(names):
        raise ConfigError(f"{engines} engines cannot serve {len(names)} agent types ({names}); use --engines >= {len(names)}")
    total = sum(demand.values()) or 1.0
    spare = engines - len(names)
    # One engine each first, then the rest by demand beyond that first engine's share.
    quota = {n: max(0.0, demand[n] / total * engines - 1) for n in names}
    scale = spare / sum(quota.values()) if sum(quota.values()) > 0 else 0.0
    exact = {n: quota[n] * scale for n in names}
    out = {n: 1 + int(exact[n]) for n in names}
    left = engines - sum(out.values())
    for n in sorted(names, key=lambda n: (-(exact[n] - int(exact[n])), names.index(n)))[:left]:
        out[n] += 1
    return out


class Tokens:
    """Keyed draws of ``(prompt, output)`` pairs from the package's trace shapes."""

    def __init__(self, seed: int) -> None:
        self.conversation = TokenSampler("conversation", seed)
        self.code = TokenSampler("code", seed)

    def conv(self, *key: object) -> tuple[int, int]:
        """A conversation-shaped pair (prompt median ~1k, output ~130)."""
        return self.conversation.sample_at(*key)

    def code_pair(self, *key: object) -> tuple[int, int]:
        """A code-shaped pair (prompt median ~2k, output ~30)."""
        return self.code.sample_at(*key)
