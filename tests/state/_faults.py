"""The workflow the fault tests run, and the checks they make on its traces.

Each ``record`` call writes one line to an *attempts log* when its body starts
(``key attempt time pid``), waits a little (the window in which a worker gets
killed), then makes its effect: an append to the session's managed list
``effects``, committed with the call's result by the journal. The attempts log
is written outside the journal on purpose, so it shows every execution of a
body, including the ones a fault cut short.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import nalar_plugin as nl
from nalar_plugin.state import Journal, managed_list


def _log_start(log: str) -> None:
    ctx = nl.current_call()
    assert ctx is not None
    line = f"{ctx.idempotency_key}\t{ctx.attempt}\t{time.time():.6f}\t{os.getpid()}\n"
    # One write() of a short line with O_APPEND: lines from several processes never interleave.
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@nl.tool
def record(log: str, tag: str, i: int, pause: float) -> int:
    _log_start(log)
    time.sleep(pause)
    managed_list("effects").append(f"{tag}:{i}")
    return i * i + len(tag)


@nl.agent
def pipeline(log: str, tag: str, n: int, pause: float) -> dict[str, Any]:
    _log_start(log)
    total = 0
    for i in range(n):
        total += record(log, tag, i, pause).result()
    return {"tag": tag, "total": total}


def expected(tag: str, n: int) -> dict[str, Any]:
    """What a fault-free run of ``pipeline(tag, n)`` returns."""
    return {"tag": tag, "total": sum(i * i + len(tag) for i in range(n))}


def expected_effects(tag: str, n: int) -> list[str]:
    """The managed effects a fault-free run commits, in order."""
    return [f"{tag}:{i}" for i in range(n)]


def read_log(log: Path) -> list[tuple[str, int, float, int]]:
    """The attempts log as ``(key, attempt, started, pid)`` rows."""
    rows = []
    for line in log.read_text().splitlines():
        key, attempt, started, pid = line.split("\t")
        rows.append((key, int(attempt), float(started), int(pid)))
    return rows


def bodies_after_commit(journal: Journal, sessions: list[str], log: Path, *, slack: float = 0.25) -> list[str]:
    """Executions of a body that started after its call had committed (must be none).

    An execution racing the one that commits looks the journal up just before
    that commit and starts its body just after it; ``slack`` covers the time
    from the lookup's reply to the body's first line. A call that skipped the
    journal would start long after.
    """
    committed = {r.key: r.committed_at for s in sessions for r in journal.records(s)}
    late = []
    for key, attempt, started, _ in read_log(log):
        if key in committed and started > committed[key] + slack:
            late.append(f"{key} attempt {attempt} started {started - committed[key]:.3f}s after its commit")
    return late


def reruns_not_explained_by(killed: set[int], log: Path) -> list[str]:
    """Bodies that ran again although the process of their earlier run survived (must be none).

    A call's body may start more than once only because the process running
    an earlier start died: a live execution holds the call's claim, and a
    committed one is replayed.
    """
    runs: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for key, _, started, pid in read_log(log):
        runs[key].append((started, pid))
    return [
        f"{key}: an earlier run in live process {pid} was followed by another"
        for key, starts in runs.items()
        for _, pid in sorted(starts)[:-1]
        if pid not in killed
    ]


def executions_per_key(log: Path) -> dict[str, int]:
    """How often each call's body started."""
    counts: dict[str, int] = defaultdict(int)
    for key, *_ in read_log(log):
        counts[key] += 1
    return dict(counts)


@nl.tool(idempotent=True)
def touch(path: str) -> dict[str, Any]:
    """Open ``path`` (the audit hook's canary) and report where this worker runs."""
    Path(path).exists()
    with open(path, "a", encoding="utf-8"):
        pass
    return {"pid": os.getpid(), "cwd": os.getcwd()}
