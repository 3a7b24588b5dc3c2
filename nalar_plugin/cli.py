"""The ``nalar`` command: ``demo``, ``policies``, ``bench``, ``state``, ``top``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import dask.config

from .bench.agent_calls import SYSTEMS as AGENT_SYSTEMS
from .bench.agent_calls import bench_agent
from .bench.calls import bench_calls
from .bench.compare import compare
from .bench.compare import format_table as format_compare_table
from .bench.control import bench_control
from .bench.plots import latencies_of, plot_runs
from .bench.research import ResearchSettings, bench_research, plot_research
from .bench.research import format_table as format_research_table
from .bench.runner import RunSettings, run
from .bench.seeds import format_markdown as format_seeds_markdown
from .bench.seeds import merge_seeds, plot_seeds
from .bench.soak import bench_soak
from .bench.workloads import workload
from .demo import run_demo, run_research_demo
from . import config as nalar_config
from .errors import NalarError
from .monitor.top import run as run_top
from .plugins import policy_entry_points
from .state.journal import Retention
from .state.service import StateService

__all__ = ["main"]


def _write_json(data: dict[str, Any], path: str | None, echo: bool = True) -> None:
    """Write ``data`` to ``path`` (if given) and, with ``echo``, to standard output."""
    text = json.dumps(data, indent=2, default=str)
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        print(f"wrote {path}", file=sys.stderr)
    if echo:
        print(text)


def _nalar_config() -> dict[str, Any]:
    """This process's ``nalar`` settings as JSON data, for the benchmark's driver subprocesses."""
    return dict(json.loads(json.dumps(dask.config.get("nalar", default={}) or {}, default=str)))


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.futures:
        run_demo(processes=args.processes or None)
        return 0
    run_research_demo(quick=args.quick, processes=args.processes, progress=not args.no_progress,
                      nalar_config=_nalar_config())
    return 0


def _cmd_policies(args: argparse.Namespace) -> int:
    for name, cls, error in sorted(policy_entry_points(), key=lambda p: p[0]):
        if cls is None:
            print(f"{name:<16} BROKEN: {error}")
            continue
        doc = (cls.__doc__ or "").strip().splitlines()
        summary = doc[0] if doc else ""
        print(f"{name:<16} {summary}")
    return 0


def _cmd_bench_calls(args: argparse.Namespace) -> int:
    data = bench_calls(args.n, repeat=args.repeat, progress=not args.no_progress, processes=args.processes or None)
    _write_json(data, args.json)
    return 0


def _cmd_bench_agent(args: argparse.Namespace) -> int:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    data = bench_agent(args.runs, concurrency=args.concurrency, repeat=args.repeat, systems=systems,
                       progress=not args.no_progress, processes=args.processes or None)
    _write_json(data, args.json)
    return 0


def _cmd_bench_soak(args: argparse.Namespace) -> int:
    data = bench_soak(args.sessions, concurrency=args.concurrency, sample_every=args.sample_every,
                      journal_max_sessions=args.journal_max_sessions, progress=not args.no_progress)
    _write_json({k: v for k, v in data.items() if k != "samples"}, None)
    if args.json:
        _write_json(data, args.json, echo=False)
    return 0


def _cmd_state_gc(args: argparse.Namespace) -> int:
    cfg = nalar_config.resolve(state_dir=args.state_dir, journal_max_age=args.max_age,
                               journal_max_sessions=args.max_sessions)
    retention = Retention(cfg["journal-max-age"], cfg["journal-max-sessions"])
    # Takes the directory's lock: a Runtime that uses the directory now refuses it.
    service = StateService(cfg["state-dir"], allowed_types=cfg["state-allowed-types"], retention=retention)
    try:
        before = len(service.journal.sessions())
        report = service.gc()
        after = len(service.journal.sessions())
    finally:
        service.close()
    _write_json({"state_dir": str(cfg["state-dir"]), "sessions_before": before, "sessions_after": after,
                 "sessions_forgotten": report.sessions, "keys_deleted": report.keys,
                 "max_age_s": retention.max_age, "max_sessions": retention.max_sessions}, None)
    return 0


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {text!r}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def _cmd_top(args: argparse.Namespace) -> int:
    return run_top(args.url, once=args.once, interval=args.interval, plain=args.plain, iterations=args.iterations)


def _cmd_bench_control(args: argparse.Namespace) -> int:
    data = bench_control(args.futures, args.instances, capacity=args.capacity, ticks=args.ticks,
                         policy=args.policy, progress=not args.no_progress)
    _write_json(data, args.json)
    return 0


def _rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rps takes numbers separated by commas, got {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"--rps needs rates > 0, got {text!r}")
    return rates


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"duration_s": args.duration, "seed": args.seed, "time_scale": args.time_scale, "engines": args.engines,
            "max_batch": args.max_batch, "warmup_s": args.warmup, "app": args.app, "policy": args.policy,
            "slo_s": args.slo, "shed": args.shed, "max_engines": args.max_engines, "admit": args.admit,
            "progress": not args.no_progress}


def _cmd_bench_workload(args: argparse.Namespace) -> int:
    base = RunSettings(args.benchmark, args.system, args.rps[0], **_settings(args))
    results = [run(replace(base, rps=rate)) for rate in args.rps]
    data: dict[str, Any] = results[0].summary if len(results) == 1 else {
        "workload": args.benchmark, "system": args.system, "runs": [r.summary for r in results]}
    _write_json(data, args.json)
    if args.plot:
        plot_runs({args.system: [(r.summary, latencies_of(r)) for r in results]}, args.plot,
                  title=f"{args.benchmark}: {args.system}")
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _report(data: dict[str, Any], args: argparse.Namespace, table: str, plot: Callable[[str], None]) -> int:
    """The table is the output; the JSON goes to ``--json`` only, the figure to ``--plot``."""
    _write_json(data, args.json, echo=False)
    print(table)
    if args.plot:
        plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _cmd_bench_compare(args: argparse.Namespace) -> int:
    rates = args.rps or list(workload(args.workload).rps)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    curves: dict[str, list[Any]] = {s: [] for s in systems}

    def keep(summary: dict[str, Any], latencies: list[float]) -> None:
        curves[summary["label"]].append((summary, latencies))

    data = compare(args.workload, rates, systems=systems, slo_factor=args.slo_factor, on_run=keep, jobs=args.jobs,
                   **_settings(args))
    # Every completed request's latency, so the plots can be redrawn from the file.
    data["latencies_s"] = {label: [[round(x, 3) for x in lat] for _, lat in runs] for label, runs in curves.items()}
    title = f"{args.workload}: {', '.join(systems)} (seed {args.seed})"
    return _report(data, args, format_compare_table(data), lambda path: plot_runs(curves, path, title=title))


def _cmd_bench_seeds(args: argparse.Namespace) -> int:
    results = []
    for path in args.files:
        try:
            with open(path, encoding="utf-8") as f:
                results.append(json.load(f))
        except (OSError, ValueError) as exc:
            raise NalarError(f"cannot read the comparison {path}: {exc}") from exc
    merged = merge_seeds(results)
    return _report(merged, args, format_seeds_markdown(merged), lambda path: plot_seeds(merged, path))


def _cmd_bench_research(args: argparse.Namespace) -> int:
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    settings = ResearchSettings(rps=tuple(args.rps), duration_s=args.duration, replicas=args.replicas, seed=args.seed,
                                time_scale=args.time_scale, capacity=args.capacity, systems=systems,
                                drain_s=args.drain, progress=not args.no_progress, nalar_config=_nalar_config())
    data = bench_research(settings)
    return _report(data, args, format_research_table(data), lambda path: plot_research(data, path))


def _workload_options(w: argparse.ArgumentParser) -> None:
    w.add_argument("--duration", type=float, help="model seconds of arrivals (default: the workload's)")
    w.add_argument("--seed", type=int, default=0, help="seed of the trace and the farm")
    w.add_argument("--time-scale", type=float, help="wall seconds per model second (default: the workload's)")
    w.add_argument("--engines", type=int, help="engines of the farm, split over agent types by demand")
    w.add_argument("--max-batch", type=int, help="batch slots per engine")
    w.add_argument("--warmup", type=float, help="model seconds an engine needs to move to another agent type (30)")
    w.add_argument("--app", choices=["graph", "futures"], help="swe only: the LangGraph app or the futures workflow")
    w.add_argument("--policy", help="the nalar system's policy (default nalar)")
    w.add_argument("--slo", type=_positive, help="per-request SLO of the goodput, model seconds (2x the lower bound)")
    w.add_argument("--shed", type=_positive,
                   help="nalar: shed model calls expected to take longer than this many model seconds at admission")
    w.add_argument("--admit", type=int, help="nalar: calls admitted per engine at once (default: max batch + 1; "
                   "0: every call, so the engines queue as with the baseline)")
    w.add_argument("--max-engines", type=int,
                   help="nalar: the farm grows to at most this many engines when the policy adds some (autoscale)")
    w.add_argument("--json", metavar="FILE", help="write the result here")
    w.add_argument("--plot", metavar="FILE.png", help="write latency-against-load and CDF plots here")
    w.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``nalar`` command."""
    p = argparse.ArgumentParser(prog="nalar", description="Serve agent workflows as futures on Dask.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="a research LangGraph app served by plain LangGraph and by nalar, side by side")
    d.add_argument("--quick", action="store_true", help="one short, fast run per system (a smoke test)")
    d.add_argument("--futures", action="store_true", help="the small futures workflow and its graph instead")
    d.add_argument("--processes", action="store_true", help="use worker processes")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    d.set_defaults(fn=_cmd_demo)

    pol = sub.add_parser("policies", help="list the installed policies")
    pol.set_defaults(fn=_cmd_policies)

    b = sub.add_parser("bench", help="run a benchmark and write JSON")
    bsub = b.add_subparsers(dest="benchmark", required=True)
    c = bsub.add_parser("calls", help="no-op call throughput through nalar next to raw Dask")
    c.add_argument("--n", type=int, default=2000, help="calls per round")
    c.add_argument("--repeat", type=int, default=3, help="rounds; the best counts")
    c.add_argument("--processes", action="store_true", help="use worker processes")
    c.add_argument("--json", metavar="FILE", help="write the result here")
    c.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    c.set_defaults(fn=_cmd_bench_calls)
    a = bsub.add_parser("agent", help="driver CPU per call of a create_agent app: plain LangGraph next to nalar")
    a.add_argument("--runs", type=int, default=1000, help="agent runs per round (three calls each)")
    a.add_argument("--concurrency", type=int, default=50, help="runs at once")
    a.add_argument("--repeat", type=int, default=3, help="rounds of each system, in turn; the median counts")
    a.add_argument("--systems", default="langgraph,nalar",
                   help=f"comma-separated, the first is the baseline (of {', '.join(AGENT_SYSTEMS)})")
    a.add_argument("--processes", action="store_true", help="nalar: use worker processes")
    a.add_argument("--json", metavar="FILE", help="write the result here")
    a.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    a.set_defaults(fn=_cmd_bench_agent)
    k = bsub.add_parser("control", help="tick time with N outstanding futures, and local cost per call")
    k.add_argument("--futures", type=int, default=131072, help="outstanding futures")
    k.add_argument("--instances", type=int, default=64, help="instances")
    k.add_argument("--capacity", type=int, default=16, help="slots per instance")
    k.add_argument("--ticks", type=int, default=30, help="ticks to time")
    k.add_argument("--policy", default="nalar", help="policy the global controller runs")
    k.add_argument("--json", metavar="FILE", help="write the result here")
    k.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    k.set_defaults(fn=_cmd_bench_control)
    for name, summary in (("financial", "W1: stateful analyst sessions fanning out to four sub-agents"),
                          ("router", "W2: a classifier routing to a chat workflow or a coding agent"),
                          ("swe", "W3: planner, parallel developers and testers, recursive")):
        w = bsub.add_parser(name, help=f"{summary}; one system at one or more rates")
        w.add_argument("--system", choices=["nalar", "langgraph", "fcfs"], default="nalar", help="who serves the app")
        w.add_argument("--rps", type=_rates, required=True, help="offered rate(s), requests per model second: R or R1,R2")
        _workload_options(w)
        w.set_defaults(fn=_cmd_bench_workload)
    rs = bsub.add_parser("research", help="a deep-research LangGraph app on ChatOpenAI replicas: langgraph vs nalar")
    rs.add_argument("--rps", type=_rates, default=[4.0, 8.0, 12.0, 16.0, 20.0],
                    help="offered rates, requests per wall second: R1,R2,... (default 4,8,12,16,20)")
    rs.add_argument("--duration", type=float, default=20.0, help="wall seconds of arrivals per run (20)")
    rs.add_argument("--replicas", type=int, default=4, help="LLM replicas (4)")
    rs.add_argument("--seed", type=int, default=0, help="seed of the requests and the model's answers")
    rs.add_argument("--time-scale", type=float, default=0.3,
                    help="wall seconds per model second of the engines (0.3: a 1k/130-token call takes ~0.65 s)")
    rs.add_argument("--capacity", type=int, help="nalar: admitted calls per replica (default: max batch + 2)")
    rs.add_argument("--drain", type=float, help="wall seconds to wait past the last arrival (60 + 2x duration)")
    rs.add_argument("--systems", default="langgraph,nalar", help="systems to run, comma-separated")
    rs.add_argument("--json", metavar="FILE", help="write the result here")
    rs.add_argument("--plot", metavar="FILE.png", help="write mean and P99 latency against rate here")
    rs.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    rs.set_defaults(fn=_cmd_bench_research)
    so = bsub.add_parser("soak", help="thousands of sessions: memory, threads and the state directory stay flat")
    so.add_argument("--sessions", type=int, default=10_000, help="sessions to run")
    so.add_argument("--concurrency", type=int, default=50, help="sessions in flight at once")
    so.add_argument("--sample-every", type=int, default=500, help="sessions between samples")
    so.add_argument("--journal-max-sessions", type=int, default=1000, help="sessions the journal keeps")
    so.add_argument("--json", metavar="FILE", help="write the result (with every sample) here")
    so.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    so.set_defaults(fn=_cmd_bench_soak)
    cmp = bsub.add_parser("compare", help="every system on the same seed; one table of ratios")
    cmp.add_argument("workload", choices=["financial", "router", "swe"])
    cmp.add_argument("--rps", type=_rates, help="offered rates R1,R2,... (default: the workload's sweep)")
    cmp.add_argument("--systems", default="langgraph,nalar,fcfs",
                     help="systems to run, comma-separated; each may name its app and policy: nalar/graph@least_loaded")
    cmp.add_argument("--slo-factor", type=float, default=2.0,
                     help="router: the mean-latency bound of a sustained rate, times the lower bound")
    cmp.add_argument("--jobs", type=_count, default=1,
                     help="rates run at once, each in its own process (default 1); a rate's systems run in turn")
    _workload_options(cmp)
    cmp.set_defaults(fn=_cmd_bench_compare)
    sd = bsub.add_parser("seeds", help="merge one workload's comparisons on several seeds: ratios and excess removed")
    sd.add_argument("files", nargs="+", metavar="COMPARE.json",
                    help="the JSON of `nalar bench compare`: one per seed, or one per seed and rate")
    sd.add_argument("--json", metavar="FILE", help="write the merged result here")
    sd.add_argument("--plot", metavar="FILE.png", help="write ratio and share of the excess removed against rate here")
    sd.set_defaults(fn=_cmd_bench_seeds)
    st = sub.add_parser("state", help="the state directory")
    stsub = st.add_subparsers(dest="state_command", required=True)
    gc = stsub.add_parser("gc", help="apply the journal's retention rules now (no Runtime may use the directory)")
    gc.add_argument("--state-dir", help="the state directory (default: nalar.state-dir)")
    gc.add_argument("--max-age", help="forget records older than this, e.g. 7d (default: nalar.journal-max-age)")
    gc.add_argument("--max-sessions", type=int,
                    help="keep this many sessions, the newest (default: nalar.journal-max-sessions)")
    gc.set_defaults(fn=_cmd_state_gc)
    top = sub.add_parser("top", help="a terminal view of the nalar page of a Dask dashboard")
    top.add_argument("url", nargs="?", default="http://127.0.0.1:8787",
                     help="the Dask dashboard (root, /status or /nalar; default http://127.0.0.1:8787)")
    top.add_argument("--once", action="store_true", help="print plain text once and exit")
    top.add_argument("--interval", type=_positive, default=1.0, help="seconds between two reads (1)")
    top.add_argument("--plain", action="store_true", help="plain text even when rich and a terminal are there")
    top.add_argument("-n", "--iterations", type=int, help="stop after this many views (default: until Ctrl-C)")
    top.set_defaults(fn=_cmd_top)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nalar`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except NalarError as exc:
        print(f"nalar: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
