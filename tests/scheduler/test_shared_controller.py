"""Two driver processes on one Dask cluster share one global controller in the scheduler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DRIVER = textwrap.dedent(
    """
    import json, sys, time
    import nalar_plugin as nl
    from tests._workflows import Replica

    address, name = sys.argv[1], sys.argv[2]
    with nl.Runtime(address=address, policy="las", tick_interval=0.05, state_dir=f".state-{name}") as rt:
        rt.deploy("llm", [Replica(f"{name}-a"), Replica(f"{name}-b")], capacity=1)
        futs = []
        with rt.session(f"{name}-s1"):
            futs += [rt.call("llm", "ask", i, 0.3) for i in range(4)]
        with rt.session(f"{name}-s2"):
            futs += [rt.call("llm", "ask", i, 0.3) for i in range(4)]
        deadline = time.time() + 60
        view = rt.cluster_view()
        def seen(v):  # both drivers have reported their deployed instances
            return len(v["drivers"]) == 2 and len(v["components"].get("llm", {}).get("instances", {})) == 4

        while time.time() < deadline and (not seen(view) or rt.controller.applied == 0):
            time.sleep(0.05)
            view = rt.cluster_view()
        answers = [f.result() for f in futs]
        time.sleep(1.0)  # stay visible while the other driver looks
        print(json.dumps({
            "drivers": len(view["drivers"]),
            "instances": sorted(view["components"]["llm"]["instances"]),
            "applied": rt.controller.applied,
            "ticks": view["ticks"],
            "answers": answers,
        }))
    """
)


def test_two_drivers_share_one_global_controller(tmp_path: Path) -> None:
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(sched_file)], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1",
             "--nthreads", "32", "--no-dashboard"], env=env, cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = json.loads(sched_file.read_text())["address"]
        drivers = [subprocess.Popen([sys.executable, "-c", DRIVER, address, name], env=env, cwd=tmp_path,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for name in ("d1", "d2")]
        outs = [d.communicate(timeout=180) for d in drivers]
        for d, (out, err) in zip(drivers, outs):
            assert d.returncode == 0, err
        results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
        for r in results:
            assert r["drivers"] == 2  # one view of every driver's instances
            assert len(r["instances"]) == 4
            assert r["applied"] > 0  # decisions from the scheduler's policy reached this driver
            assert r["ticks"] > 0
        assert results[0]["instances"] == results[1]["instances"]
        for name, r in zip(("d1", "d2"), results):  # each driver's calls reached its own replicas
            assert len(r["answers"]) == 8 and all(a.startswith(f"{name}-") for a in r["answers"])
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
