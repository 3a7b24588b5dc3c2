"""What the operators' view tests share: endpoints, a scripted policy, traffic, HTTP reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import nalar_plugin as nl
from nalar_plugin.hookspecs import hookimpl
from nalar_plugin.scheduler.decisions import Decision, Migrate, RouteWeights, SetPriority, Snapshot
from nalar_plugin.scheduler.policies import LeastLoadedPolicy


class Engine:
    """A deployed endpoint whose calls take ``seconds`` on the event loop."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def generate(self, x: Any, seconds: float = 0.05) -> str:
        await asyncio.sleep(seconds)
        return f"{self.name}:{x}"


class Gate:
    """A deployed endpoint whose calls wait until the gate opens (to hold calls in flight)."""

    def __init__(self) -> None:
        self.open = threading.Event()

    def wait(self, x: Any) -> Any:
        self.open.wait(30)
        return x


@nl.agent
def summarise(x: int) -> str:
    """A journaled stub call."""
    return f"summary {x}"


class Veto:
    """Refuses calls whose first argument is ``"refuse"``."""

    @hookimpl
    def nalar_call_veto(self, call: Any) -> str | None:
        return "refused by the test" if call.args and call.args[0] == "refuse" else None


class ScriptedPolicy(LeastLoadedPolicy):
    """Least-loaded choices, plus one decision of each kind for every session it sees.

    Each new active session gets a priority (its first call's number), and a
    migration to the other instance it is not on; every component with two
    instances gets route weights once.
    """

    name = "scripted"

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()
        self.migrated: set[str] = set()
        self.weighted: set[str] = set()

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        out: list[Decision] = []
        for name, comp in snapshot.components.items():
            ids = tuple(sorted(comp.instances))
            if len(ids) == 2 and name not in self.weighted:
                self.weighted.add(name)
                out.append(RouteWeights(name, ids, (0.5, 0.5)))
        for sid, sess in snapshot.sessions.items():
            if sid not in self.seen:
                self.seen.add(sid)
                out.append(SetPriority(sid, float(len(self.seen))))
            if sid in self.migrated or not sess.location:
                continue
            self.migrated.add(sid)
            for component, where in sess.location.items():
                others = sorted(i for i in snapshot.components[component].instances if i != where)
                if others:
                    out.append(Migrate(sid, where, others[0]))
        return out


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return bytes(resp.read())


def view(rt: nl.Runtime) -> dict[str, Any]:
    assert rt.dashboard_link is not None
    return dict(json.loads(get(rt.dashboard_link + "/data.json")))


def scrape(rt: nl.Runtime) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every ``nalar_*`` sample of ``<dashboard>/metrics``: (sample name, sorted labels) -> value."""
    assert rt.dask_dashboard_link is not None
    text = get(rt.dask_dashboard_link.replace("/status", "/metrics")).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("nalar_"):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Traffic:
    """Calls to ``llm`` from a background thread, in a few sessions, until stopped.

    The thread also waits for the results (the thread that drives a Playwright
    page has an event loop, where blocking on a future is refused).
    """

    def __init__(self, rt: nl.Runtime, seconds: float = 0.05, batch: int = 6) -> None:
        self.rt = rt
        self.seconds = seconds
        self.batch = batch
        self.futures: list[Any] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            for s in range(3):
                with self.rt.session(f"live-{n}-{s}"):
                    self.futures += [self.rt.call("llm", "generate", i, self.seconds) for i in range(self.batch)]
            n += 1
            self._stop.wait(0.1)
        try:
            for f in self.futures:
                f.result()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def operators_runtime(state_dir: str) -> Iterator[nl.Runtime]:
    """An embedded Runtime with the dashboard, two ``llm`` instances and a scripted policy."""
    with nl.Runtime(dashboard=True, tick_interval=0.05, state_dir=state_dir) as runtime:
        runtime.set_policy(ScriptedPolicy())
        runtime.register_plugin(Veto())
        runtime.deploy("llm", [Engine("a"), Engine("b")], capacity=2)
        yield runtime
