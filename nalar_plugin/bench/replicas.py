"""The simulated side of the ``research`` benchmark: the requests, the LLM's answers, the replicas.

:func:`make_schedule` makes the requests users send: seeded open-loop Poisson
arrivals, each with a question and heavy-tailed background material (the first
user message of every model call of that request).

``python -m nalar_plugin.bench.replicas --replicas 4 --time-scale 0.3 --seed 0``
starts one :class:`~nalar_plugin.testing.EngineServer` per replica on 127.0.0.1
(each over its own :class:`~nalar_plugin.testing.SimulatedEngine` with the
default performance model), prints ``{"urls": [...]}`` as one JSON line on
standard output and serves until standard input closes or the process is
terminated. The benchmark driver then holds only the app, so its CPU time is
the app's.

The replicas answer with :class:`ResearchScript`, the simulated LLM of the
research app. Like a real model, it follows the instruction on the first line of
the last message:

* "list the topics" - a plan: ``k`` numbered topics, ``k`` in 2..6;
* "summarise the search results" - a summary of one topic;
* "write the final report" - the report;
* anything else - a short answer.

Every decision and every answer length is drawn from a generator seeded with
the seed and a hash of the conversation, so the same requests get the same
answers from any replica, in any order, under any serving system. Output
lengths are conversation-like and heavy tailed (lognormal); the server counts
an answer's tokens from its length (four characters per token), and prompt
tokens from the request's text.

:class:`Replicas` starts and stops such a process from the benchmark's parent; it
starts at once and :meth:`Replicas.ready` waits for the URLs, so the parent can
start the driver meanwhile.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from ..errors import RuntimeStateError
from ..testing import EngineConfig, EngineServer, SimulatedEngine

__all__ = ["Job", "Replicas", "ResearchScript", "filler", "lognormal", "make_schedule", "replica_metrics",
           "schedule_digest", "serve"]

_WORDS = (
    "model", "latency", "cache", "batch", "replica", "queue", "token", "session", "policy", "throughput",
    "evidence", "survey", "benchmark", "trend", "risk", "cost", "market", "result", "method", "source",
    "analysis", "signal", "review", "design", "impact", "scale", "budget", "study", "report", "finding",
)
_ASPECTS = ("history", "current methods", "open problems", "costs", "benchmarks", "risks", "adoption",
            "alternatives", "regulation", "future work")


def lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    """One clipped lognormal draw (token lengths of chat traces are roughly lognormal).

    Args:
        rng: Generator.
        median: Median of the distribution.
        sigma: Sigma of its logarithm.
        low: Smallest value returned.
        high: Largest value returned.

    Returns:
        The rounded, clipped draw.
    """
    return min(high, max(low, round(rng.lognormvariate(math.log(median), sigma))))


def filler(rng: random.Random, tokens: int, lead: str = "") -> str:
    """Text of about ``tokens`` tokens (four characters each), starting with ``lead``.

    Args:
        rng: Generator of the words.
        tokens: Target length in tokens.
        lead: Opening text, counted in the length.

    Returns:
        The text.
    """
    target = 4 * tokens
    words = [lead] if lead else []
    size = len(lead)
    while size < target:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:max(target, len(lead))]


def _text(message: BaseMessage) -> str:
    """A message's text (list contents joined)."""
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content)


_SUBJECTS = ("prefix caching", "speculative decoding", "batch scheduling", "session affinity", "model routing",
             "quantisation", "tool latency", "context length", "load balancing", "autoscaling", "KV offloading")
_OUTCOMES = ("tail latency", "serving cost", "throughput", "answer quality", "energy use", "fairness")


@dataclass(frozen=True)
class Job:
    """One research request of the schedule.

    Attributes:
        index: Position in the schedule.
        at_s: Arrival, wall seconds after the start of the run.
        question: The first user message (question and background material).
    """

    index: int
    at_s: float
    question: str


def make_schedule(seed: int, rps: float, duration_s: float) -> list[Job]:
    """Open-loop Poisson arrivals at ``rps`` for ``duration_s``, and each request's question.

    Args:
        seed: Seed of the arrivals and questions.
        rps: Offered requests per wall second.
        duration_s: Wall seconds of arrivals.

    Returns:
        The jobs in arrival order; the same arguments always give the same jobs.
    """
    rng = random.Random(f"research-schedule/{seed}/{rps!r}/{duration_s!r}")
    jobs: list[Job] = []
    at = rng.expovariate(rps)
    while at < duration_s:
        a, b = rng.sample(_SUBJECTS, 2)
        head = f"How do {a} and {b} change {rng.choice(_OUTCOMES)}? (request {seed}-{len(jobs)})"
        # Background material: a conversation-like, heavy-tailed prompt (median ~800 tokens).
        question = filler(rng, lognormal(rng, 800, 0.7, 150, 6000), f"{head}\n\nBackground:")
        jobs.append(Job(len(jobs), round(at, 6), question))
        at += rng.expovariate(rps)
    return jobs


def schedule_digest(jobs: Sequence[Job]) -> str:
    """SHA-256 of a schedule (arrival times and questions)."""
    return hashlib.sha256(json.dumps([[j.index, j.at_s, j.question] for j in jobs]).encode()).hexdigest()


class ResearchScript:
    """The simulated LLM of the research app: a script callable for :class:`EngineServer`.

    Args:
        seed: Salt of every draw; the same seed gives the same answers.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _rng(self, *parts: str) -> random.Random:
        """A generator keyed by the seed and the given texts (stable across processes)."""
        digest = hashlib.sha256(repr((self.seed, *parts)).encode()).hexdigest()
        return random.Random(digest)

    def __call__(self, messages: list[BaseMessage]) -> str:
        """Answer a conversation.

        Args:
            messages: The request's messages.

        Returns:
            The answer text.
        """
        first = next((_text(m) for m in messages if isinstance(m, HumanMessage)), "")
        last = _text(messages[-1]) if messages else ""
        # The instruction is the last message's first line; what follows is material.
        instruction = last.split("\n", 1)[0].lower()
        rng = self._rng(first, last)
        if "list the topics" in instruction:
            return self.plan(rng, first)
        if "summarise the search results" in instruction:
            return filler(rng, lognormal(rng, 140, 0.6, 24, 1500), "Summary:")
        if "write the final report" in instruction:
            return filler(rng, lognormal(rng, 220, 0.6, 48, 2500), "Report:")
        return filler(rng, lognormal(rng, 60, 0.5, 8, 400))

    @staticmethod
    def plan(rng: random.Random, question: str) -> str:
        """A research plan: 2..6 numbered topics drawn from the question's words.

        Args:
            rng: The call's generator.
            question: The first user message.

        Returns:
            ``"Topics:\\n1. ...\\n2. ..."`` with a short rationale per topic.
        """
        k = rng.randint(2, 6)
        words = [w.strip("?.,:;").lower() for w in question.split("\n", 1)[0].split() if len(w) > 4]
        words = words or ["the question"]
        lines = ["Topics:"]
        for i in range(k):
            topic = f"{rng.choice(words)} {rng.choice(_ASPECTS)}"
            lines.append(f"{i + 1}. {topic} - {filler(rng, rng.randint(8, 20))}")
        return "\n".join(lines)


def replica_metrics(urls: Sequence[str]) -> list[dict[str, Any]]:
    """Every replica's engine metrics (``GET /v1/metrics``).

    Args:
        urls: The replicas' base URLs.

    Returns:
        One :class:`~nalar_plugin.testing.EngineMetrics` dict per engine, in URL order.
    """
    out: list[dict[str, Any]] = []
    for url in urls:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
            out.extend(json.loads(reply.read()).values())
    return out


def serve(replicas: int, time_scale: float, seed: int, max_batch: int = 16) -> ExitStack:
    """Start ``replicas`` engine servers in this process.

    Args:
        replicas: How many.
        time_scale: Wall seconds per model second of every engine.
        seed: Seed of the answers and of the engines.
        max_batch: Batch slots per engine.

    Returns:
        An exit stack that closes the servers; its ``urls`` attribute lists their base URLs.
    """
    stack = ExitStack()
    config = EngineConfig(time_scale=time_scale, max_batch=max_batch)
    script = ResearchScript(seed)
    urls: list[str] = []
    for i in range(replicas):
        engine = SimulatedEngine(f"llm-{i}", config, seed=seed * 1_000_003 + i)
        urls.append(stack.enter_context(EngineServer(engine, script=script)).url)
    stack.urls = urls  # type: ignore[attr-defined]
    return stack


def _main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m nalar_plugin.bench.replicas``."""
    p = argparse.ArgumentParser(prog="python -m nalar_plugin.bench.replicas")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--time-scale", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batch", type=int, default=16)
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with serve(args.replicas, args.time_scale, args.seed, args.max_batch) as stack:
        print(json.dumps({"urls": stack.urls}), flush=True)  # type: ignore[attr-defined]
        # Serve until the parent closes our stdin (or goes away) or terminates us.
        def watch() -> None:
            sys.stdin.read()
            stop.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        stop.wait()
    return 0


class Replicas:
    """A replica process started from the benchmark's parent (a context manager).

    Args:
        replicas: How many engine servers.
        time_scale: Wall seconds per model second.
        seed: Seed of the answers.
        max_batch: Batch slots per engine.
        timeout_s: How long to wait for the servers to come up.
    """

    def __init__(self, replicas: int, time_scale: float, seed: int, *, max_batch: int = 16,
                 timeout_s: float = 60.0) -> None:
        self.args = ["--replicas", str(replicas), "--time-scale", repr(time_scale), "--seed", str(seed),
                     "--max-batch", str(max_batch)]
        self.timeout_s = timeout_s
        self.urls: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._errors: Any = None

    def start(self) -> Replicas:
        """Start the process without waiting for it (see :meth:`ready`).

        Returns:
            self.
        """
        if self._proc is not None:
            return self
        # Standard error goes to a file: a pipe nobody reads could fill and block the servers.
        self._errors = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen([sys.executable, "-m", "nalar_plugin.bench.replicas", *self.args],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors, text=True)
        return self

    def ready(self) -> list[str]:
        """Wait until the servers listen.

        Returns:
            Their base URLs.

        Raises:
            RuntimeStateError: The process is not started, exited, or printed no URLs in time.
        """
        if self.urls:
            return self.urls
        proc = self._proc
        if proc is None:
            raise RuntimeStateError("the replica process is not started; use Replicas as a context manager")
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(proc.stdout.readline() if proc.stdout else ""),
                                  daemon=True)
        reader.start()
        reader.join(self.timeout_s)
        line = box[0] if box else ""
        try:
            self.urls = list(json.loads(line)["urls"])
        except (ValueError, KeyError, TypeError):
            self._errors.seek(0)
            tail = self._errors.read()[-2000:]
            raise RuntimeStateError(f"the replica process did not start: {line!r} {tail}") from None
        return self.urls

    def close(self) -> None:
        """Stop the process (closing its stdin asks it to exit; it is killed if it does not)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            if self._errors is not None:
                self._errors.close()
                self._errors = None

    def __enter__(self) -> Replicas:
        """Start the process (:meth:`ready` waits for its URLs)."""
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the process."""
        self.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
