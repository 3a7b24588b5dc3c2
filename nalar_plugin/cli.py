"""The ``nalar`` command: ``demo``, ``policies``, ``bench``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _write_json(data: dict[str, Any], path: str | None) -> None:
    text = json.dumps(data, indent=2, default=str)
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        print(f"wrote {path}", file=sys.stderr)
    print(text)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(processes=args.processes or None)
    return 0


def _cmd_policies(args: argparse.Namespace) -> int:
    from .plugins import PluginManager

    for name, cls in sorted(PluginManager().policies().items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        summary = doc[0] if doc else ""
        print(f"{name:<16} {summary}")
    return 0


def _cmd_bench_calls(args: argparse.Namespace) -> int:
    from .bench.calls import bench_calls

    data = bench_calls(args.n, repeat=args.repeat, progress=not args.no_progress, processes=args.processes or None)
    _write_json(data, args.json)
    return 0


def _cmd_bench_control(args: argparse.Namespace) -> int:
    from .bench.control import bench_control

    data = bench_control(args.futures, args.instances, capacity=args.capacity, ticks=args.ticks,
                         policy=args.policy, progress=not args.no_progress)
    _write_json(data, args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``nalar`` command."""
    p = argparse.ArgumentParser(prog="nalar", description="Serve agent workflows as futures on Dask.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run a small futures workflow on the embedded cluster")
    d.add_argument("--processes", action="store_true", help="use worker processes")
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
    k = bsub.add_parser("control", help="tick time with N outstanding futures, and local cost per call")
    k.add_argument("--futures", type=int, default=131072, help="outstanding futures")
    k.add_argument("--instances", type=int, default=64, help="instances")
    k.add_argument("--capacity", type=int, default=16, help="slots per instance")
    k.add_argument("--ticks", type=int, default=30, help="ticks to time")
    k.add_argument("--policy", default="nalar", help="policy the global controller runs")
    k.add_argument("--json", metavar="FILE", help="write the result here")
    k.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    k.set_defaults(fn=_cmd_bench_control)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nalar`` console script."""
    args = build_parser().parse_args(argv)
    from .errors import NalarError

    try:
        return int(args.fn(args))
    except NalarError as exc:
        print(f"nalar: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
