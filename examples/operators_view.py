"""The operators' view under load: the nalar page, the metrics and ``nalar top`` on a live Runtime.

A simulated engine farm serves three agent types; sessions arrive at random,
each a planner call, a fan-out to analysts and a coder call, some of them with
a higher priority. The default ``nalar`` policy balances, migrates and
re-allocates engines while you watch:

* the page: the ``/nalar`` address printed at start (``rt.dashboard_link``);
* the metrics: ``/metrics`` on the same server (``nalar_*``);
* the terminal: ``nalar top <that address>`` in another shell.

Run: ``python examples/operators_view.py [--seconds 60] [--screenshot docs/img/dashboard.png]``
(the screenshot needs the ``playwright`` package and a Chromium, e.g. ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from typing import Any

import nalar_plugin as nl
from nalar_plugin.testing import EngineConfig, EngineFarm, FarmProvisioner


def session(rt: nl.Runtime, sid: str, rng: random.Random, done: list[Any]) -> None:
    """One request: plan, three analyses side by side, then code."""
    priority = 2.0 if rng.random() < 0.2 else 0.0
    with rt.session(sid, priority=priority):
        plan = rt.call("planner", "generate", rng.randint(400, 1200), rng.randint(40, 120), sid)
        plan.result()
        notes = [rt.call("analyst", "generate", rng.randint(800, 2000), rng.randint(60, 200), sid) for _ in range(3)]
        for n in notes:
            n.result()
        done.append(rt.call("coder", "generate", rng.randint(1000, 3000), rng.randint(100, 300), sid).result())


def screenshot(url: str, path: str, chromium: str) -> None:
    """Save a full-page screenshot of ``url`` (Playwright driving a local Chromium)."""
    from playwright.sync_api import sync_playwright  # optional: only for --screenshot

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_selector("#status.live")
        time.sleep(1.5)  # two refreshes
        page.screenshot(path=path, full_page=True)
        browser.close()
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long sessions arrive")
    ap.add_argument("--rate", type=float, default=8.0, help="sessions per second")
    ap.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the page here, then stop")
    ap.add_argument("--screenshot-after", type=float, default=20.0, help="seconds of load before the screenshot")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium binary for --screenshot")
    args = ap.parse_args()

    farm = EngineFarm({"planner": 3, "analyst": 2, "coder": 2},
                      config=EngineConfig(time_scale=0.25, max_batch=4, warmup_s=10.0), seed=1)
    with nl.Runtime(dashboard=True, policy="nalar", tick_interval=0.1) as rt:
        FarmProvisioner(rt, farm).deploy()
        print(f"the nalar page: {rt.dashboard_link}")
        print(f"metrics: {rt.dashboard_link.replace('/nalar', '/metrics') if rt.dashboard_link else None}")
        print(f"in another shell: nalar top {rt.dashboard_link}")
        rng = random.Random(0)
        done: list[Any] = []
        threads = []
        start = time.monotonic()
        stop_at = start + (args.screenshot_after + 3 if args.screenshot else args.seconds)
        shot: threading.Thread | None = None
        n = 0
        while time.monotonic() < stop_at:
            t = threading.Thread(target=session, args=(rt, f"s{n:04d}", random.Random(n), done), daemon=True)
            t.start()
            threads.append(t)
            n += 1
            if args.screenshot and shot is None and time.monotonic() - start > args.screenshot_after:
                assert rt.dashboard_link is not None
                shot = threading.Thread(target=screenshot, args=(rt.dashboard_link, args.screenshot, args.chromium))
                shot.start()
            time.sleep(rng.expovariate(args.rate))
        if shot is not None:
            shot.join()
        for t in threads:
            t.join()
        print(f"{len(done)} sessions served; decisions: {rt.controller.decision_counts}")


if __name__ == "__main__":
    main()
