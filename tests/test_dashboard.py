"""The nalar page in Dask's dashboard, its JSON endpoint, a real browser on it, and ``nalar top``."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import nalar_plugin as nl
from nalar_plugin.cli import main
from nalar_plugin.monitor import dashboard_base, page_url
from nalar_plugin.monitor.top import data_url, render_text
from tests._operators import Traffic, get, operators_runtime, scrape, summarise, total, view, wait_until

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in (os.environ.get("NALAR_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and os.path.exists(p)), None)


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nl.Runtime]:
    """An embedded Runtime with the dashboard, two ``llm`` instances and a scripted policy."""
    with operators_runtime(str(tmp_path_factory.mktemp("dash"))) as runtime:
        yield runtime


def test_links() -> None:
    assert page_url("http://127.0.0.1:8787/status") == "http://127.0.0.1:8787/nalar"
    assert dashboard_base("http://h:1/prefix/nalar/") == "http://h:1/prefix"
    assert data_url("127.0.0.1:8787") == "http://127.0.0.1:8787/nalar/data.json"
    assert data_url("http://h:1/nalar/data.json") == "http://h:1/nalar/data.json"


def test_dashboard_link_is_the_page(rt: nl.Runtime) -> None:
    assert rt.dashboard_link is not None and rt.dask_dashboard_link is not None
    assert rt.dashboard_link.startswith("http://127.0.0.1:") and rt.dashboard_link.endswith("/nalar")
    assert rt.dask_dashboard_link == rt.dashboard_link[: -len("/nalar")] + "/status"
    page = get(rt.dashboard_link).decode()
    assert "<title>nalar</title>" in page and "data.json" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from elsewhere
    assert get(rt.dashboard_link + "/").decode() == page
    get(rt.dask_dashboard_link)  # Dask's own dashboard runs beside it


def test_no_dashboard_no_link(tmp_path: Path) -> None:
    with nl.Runtime(state_dir=str(tmp_path)) as plain:
        assert plain.dashboard_link is None and plain.dask_dashboard_link is None


def test_data_json_shows_components_sessions_and_decisions(rt: nl.Runtime) -> None:
    with rt.session("dash-a"):
        futs = [rt.call("llm", "generate", i, 0.1) for i in range(8)]
    with rt.session("dash-b"):
        futs += [rt.call("llm", "generate", i, 0.1) for i in range(8)]

    def busy() -> dict[str, Any] | None:
        v = view(rt)
        llm = {c["name"]: c for c in v["components"]}.get("llm")
        rows = {s["session"] for s in v["sessions"]["rows"]}
        return v if llm and llm["in_flight"] > 0 and {"dash-a", "dash-b"} <= rows else None

    v = wait_until(busy, what="the sessions in data.json")
    llm = {c["name"]: c for c in v["components"]}["llm"]
    assert [i["id"] for i in llm["instances"]] == ["llm/0", "llm/1"]
    assert llm["capacity"] == 4 and all(i["capacity"] == 2 for i in llm["instances"])
    assert llm["queued"] + llm["in_flight"] > 0
    assert v["policy"] == "scripted" and len(v["drivers"]) == 1 and v["drivers"][0]["driver"] == rt.token
    for f in futs:
        f.result()
    v = wait_until(lambda: (x := view(rt))["decisions"]["counts"].get("Migrate") and x, what="decisions")
    kinds = {d["kind"] for d in v["decisions"]["recent"]}
    assert {"priority", "migration", "reallocation"} <= kinds
    mine = [d for d in v["decisions"]["recent"] if d.get("session") in ("dash-a", "dash-b")]
    assert {d["type"] for d in mine} >= {"SetPriority", "Migrate"}
    assert all(abs(d["time"] - time.time()) < 60 for d in mine)
    assert v["decisions"]["counts"] == rt.controller.decision_counts
    llm = {c["name"]: c for c in v["components"]}["llm"]
    assert llm["calls"]["finished"] >= 16 and v["totals"]["finished"] >= 16
    wait_until(lambda: view(rt)["history"], what="a history sample", timeout=5)


def test_priorities_reach_the_sessions_table(rt: nl.Runtime) -> None:
    with rt.session("prio-x"):
        futs = [rt.call("llm", "generate", i, 0.3) for i in range(10)]
    row = wait_until(lambda: next((s for s in view(rt)["sessions"]["rows"]
                                   if s["session"] == "prio-x" and s["priority_set"]), None), what="the priority")
    assert row["priority"] > 0 and row["location"]
    for f in futs:
        f.result()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium; .ci/run installs it)")
def test_page_in_a_real_browser_updates_while_traffic_runs(rt: nl.Runtime, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    assert rt.dashboard_link is not None
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(rt.dashboard_link + "?interval=250")
            page.wait_for_selector('[data-component="llm"] tr[data-instance="llm/1"]', timeout=10_000)
            page.wait_for_selector("#status.live", timeout=10_000)
            before = int(page.inner_text("#total-finished"))
            with Traffic(rt, seconds=0.08):
                # Calls are in flight on the page while the traffic runs ...
                page.wait_for_function(
                    "() => [...document.querySelectorAll('[data-component=\"llm\"] td.f')]"
                    ".some(td => Number(td.textContent) > 0)", timeout=10_000)
                # ... and the finished count grows.
                page.wait_for_function(f"() => Number(document.querySelector('#total-finished').textContent) > {before}",
                                       timeout=10_000)
                page.wait_for_selector('#sessions tr[data-session^="live-"]', timeout=10_000)
                page.wait_for_selector("#decisions tr[data-kind]", timeout=10_000)
                page.wait_for_function("() => document.querySelectorAll('#chart polyline').length === 2"
                                       " && document.querySelector('#chart polyline').getAttribute('points').length > 0",
                                       timeout=10_000)
                shot = os.environ.get("NALAR_DASHBOARD_PNG") or str(tmp_path / "dashboard.png")
                time.sleep(float(os.environ.get("NALAR_DASHBOARD_PNG_DELAY", "0")))
                page.screenshot(path=shot, full_page=True)
            page.wait_for_function(f"() => Number(document.querySelector('#total-finished').textContent) > {before}")
            assert "llm/0" in page.inner_text("#components")
            assert page.inner_text("#policy") == "scripted"
            assert not errors, errors
            assert Path(shot).stat().st_size > 10_000
        finally:
            browser.close()


def test_top_once_prints_the_same_numbers(rt: nl.Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    with rt.session("top-s"):
        futs = [rt.call("llm", "generate", i, 0.2) for i in range(4)]
    for f in futs:
        f.result()
    wait_until(lambda: (v := view(rt))["totals"]["finished"] >= 4 and v["decisions"]["counts"].get("SetPriority"),
               what="finished calls and a decision")
    assert rt.dask_dashboard_link is not None
    assert main(["top", rt.dask_dashboard_link, "--once"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("nalar  policy scripted  drivers 1")
    assert "COMPONENT" in out and "llm/0" in out and "llm/1" in out and "(shared queue)" in out
    assert "decisions:" in out and "SetPriority" in out
    finished = int(lines[1].split("finished ")[1].split()[0])
    assert finished >= 4
    # The page's URL works as well as the dashboard's root.
    assert main(["top", rt.dashboard_link or "", "--once"]) == 0
    assert "llm/1" in capsys.readouterr().out


def test_top_reports_an_unreachable_dashboard(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", "http://127.0.0.1:9/", "--once"]) == 2
    assert "could not read the nalar dashboard at http://127.0.0.1:9/nalar/data.json" in capsys.readouterr().err


def test_top_renders_an_empty_view() -> None:
    empty = {"time": time.time(), "drivers": [], "policy": "", "components": [],
             "totals": {"queued": 0, "in_flight": 0, "finished": 0, "error": 0, "rejected": 0, "calls_in_flight": 0},
             "sessions": {"active": 0, "rows": []}, "decisions": {"counts": {}, "recent": []}, "history": []}
    text = render_text(empty)
    assert "no component yet" in text and "decisions: none" in text


def test_vetoes_count_as_rejections_on_the_page(rt: nl.Runtime) -> None:
    fut = rt.call("llm", "generate", "refuse")
    with pytest.raises(nl.errors.CallVetoedError):
        fut.result()
    llm = wait_until(lambda: next((c for c in view(rt)["components"]
                                   if c["name"] == "llm" and c["rejections"].get("veto")), None), what="the veto")
    assert llm["calls"]["rejected"] >= 1


def test_processes_mode_serves_the_page(tmp_path: Path) -> None:
    with nl.Runtime(processes=True, n_workers=1, dashboard=True, tick_interval=0.05, state_dir=str(tmp_path)) as prt:
        assert [summarise(i).result() for i in range(3)] == [f"summary {i}" for i in range(3)]
        v = wait_until(lambda: (x := view(prt))["components"] and x["components"][0]["completed"] == 3 and x,
                       what="the component's completed calls")
        comp = {c["name"]: c for c in v["components"]}["summarise"]
        assert comp["calls"]["finished"] == 3
        samples = scrape(prt)
        assert total(samples, "nalar_calls_total", component="summarise", outcome="finished") == 3


DRIVER = """
import sys, time, json
import nalar_plugin as nl
from tests._operators import Engine
address, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with nl.Runtime(address=address, tick_interval=0.05, state_dir=f".state-{name}") as rt:
    rt.deploy(f"llm-{name}", [Engine(name)], capacity=2)
    futs = [rt.call(f"llm-{name}", "generate", i, 0.01) for i in range(n)]
    [f.result() for f in futs]
    print(json.dumps({"link": rt.dashboard_link, "token": rt.token}), flush=True)
    sys.stdin.readline()  # stay until the test has looked
"""


def test_several_drivers_on_one_cluster_show_up(tmp_path: Path) -> None:
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    drivers: list[subprocess.Popen[str]] = []
    try:
        wait_until(sched_file.exists, timeout=60, what="the scheduler")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1",
             "--nthreads", "8", "--no-dashboard"], env=env, cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = json.loads(sched_file.read_text())["address"]
        drivers = [subprocess.Popen([sys.executable, "-c", DRIVER, address, name, str(n)], env=env, cwd=tmp_path,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for name, n in (("d1", 3), ("d2", 5))]
        infos = []
        for d in drivers:
            assert d.stdout is not None
            line = d.stdout.readline()
            assert line, d.stderr.read() if d.stderr else ""
            infos.append(json.loads(line))
        link = infos[0]["link"]
        assert link == infos[1]["link"] and link.endswith("/nalar")

        def both() -> dict[str, Any] | None:
            v = json.loads(get(link + "/data.json"))
            names = {c["name"]: c for c in v["components"]}
            done = names.get("llm-d1", {}).get("calls", {}).get("finished") == 3 and \
                names.get("llm-d2", {}).get("calls", {}).get("finished") == 5
            return v if done else None

        v = wait_until(both, timeout=20, what="both drivers' reports")
        assert sorted(d["driver"] for d in v["drivers"]) == sorted(i["token"] for i in infos)
        ids = [i["id"] for c in v["components"] for i in c["instances"]]
        assert sorted(ids) == sorted(f"{i['token']}|llm-{n}/0" for i, n in zip(infos, ("d1", "d2")))
        # The scheduler's /metrics (another process) has both drivers' counts.
        text = get(link.replace("/nalar", "/metrics")).decode()
        calls = {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
                 if f.name == "nalar_calls" for s in f.samples}
        assert calls[(("component", "llm-d1"), ("driver", infos[0]["token"]), ("outcome", "finished"))] == 3
        assert calls[(("component", "llm-d2"), ("driver", infos[1]["token"]), ("outcome", "finished"))] == 5
        # A driver that closes leaves the page at once.
        drivers[0].communicate("\n", timeout=60)
        assert drivers[0].returncode == 0
        v = json.loads(get(link + "/data.json"))
        assert [d["driver"] for d in v["drivers"]] == [infos[1]["token"]]
    finally:
        for d in drivers:
            if d.poll() is None:
                d.communicate("\n", timeout=60)
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_top_renders_with_rich(rt: nl.Runtime) -> None:
    console_mod = pytest.importorskip("rich.console", reason="rich is not installed (the top extra)")
    from nalar_plugin.monitor.top import _render_rich

    buf = io.StringIO()
    console_mod.Console(file=buf, width=160, color_system=None).print(_render_rich(view(rt)))
    out = buf.getvalue()
    assert "components and instances" in out and "llm/0" in out and "decisions (" in out


def test_top_live_mode_refreshes(rt: nl.Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    """``nalar top`` without ``--once`` (plain text, not a terminal) prints a view per interval."""
    assert rt.dask_dashboard_link is not None
    t0 = time.monotonic()
    assert main(["top", rt.dask_dashboard_link, "--interval", "0.2", "-n", "3"]) == 0
    assert time.monotonic() - t0 >= 0.4
    out = capsys.readouterr().out
    assert out.count("nalar  policy scripted") == 3
    ticks = [int(line.split("ticks ")[1].split()[0]) for line in out.splitlines() if line.startswith("nalar  ")]
    assert ticks == sorted(ticks) and ticks[-1] > ticks[0]  # three reads, not one view printed three times
