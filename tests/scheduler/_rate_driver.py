"""One driver process of the shared rate-limit test, and the instance both drivers deploy.

``python -c "from tests.scheduler._rate_driver import main; main()" ADDRESS OUT GO CALLS RPM BURST_S``
joins the cluster at ADDRESS, deploys ``COMPONENT`` with the limits, writes ``OUT.ready``,
waits for the file GO, makes CALLS calls at once and writes to OUT, as JSON, when each
call started (as the instance saw it) and was admitted (as this driver saw it).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nalar_plugin as nl
from nalar_plugin.hookspecs import hookimpl

COMPONENT = "shared-llm"


class Clock:
    """The instance: each call answers when it started (``time.monotonic()``, one clock per host)."""

    def ask(self, i: int) -> float:
        return time.monotonic()


class Admissions:
    """Records when this driver's local controllers admit each call of ``component``."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.at: list[float] = []

    @hookimpl
    def nalar_call_admitted(self, call: Any, instance: str) -> None:
        if call.context.component == self.component:
            self.at.append(time.monotonic())


def main() -> None:
    address, out, go, calls, rpm, burst_s = sys.argv[1:7]
    admissions = Admissions(COMPONENT)
    with nl.Runtime(address, state_dir=tempfile.mkdtemp(), tick_interval=0.05) as rt:
        rt.register_plugin(admissions)
        rt.deploy(COMPONENT, [Clock()], rpm=float(rpm), burst_s=float(burst_s))
        Path(out + ".ready").touch()
        deadline = time.monotonic() + 60
        while not Path(go).exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        futs = [rt.call(COMPONENT, "ask", i) for i in range(int(calls))]
        starts = [f.result(timeout=60) for f in futs]
        stats = rt.stats()["rate_limits"][COMPONENT]
    Path(out).write_text(json.dumps({"starts": starts, "admitted": admissions.at, "stats": stats}))
