"""``nalar bench seeds``: one workload's comparisons on several seeds, merged.

Each input is the JSON of one ``nalar bench compare`` run (one seed, every system on
the same trace). Per system and offered rate this reports, on every seed and over
them (mean, min, max):

- the ratio to the baseline of mean and P99 latency (below 1 is better);
- the share of the baseline's excess over the floor that the system removes:
  ``(baseline - system) / (baseline - floor)``, where the floor of the mean is the
  mean critical path (``lower_bound_s``) and the floor of the P99 is the critical
  paths' P99 (for a LangGraph app on a trace with barrier paths, ``swe``, the barrier
  paths: the superstep barrier belongs to the graph's semantics). 1 means the system reached the floor, 0 that it did no better than the
  baseline, below 0 that it did worse. Where the baseline is within
  :data:`NOTHING_TO_REMOVE` of the floor there is nothing to remove, and the share
  is ``None``;
- the most of the mean's excess any system could remove on that farm:
  ``(baseline - bound) / (baseline - floor)``, where the bound is
  :func:`~nalar_plugin.bench.bound.capacity_bound`, the floor with the farm's
  slots counted (``None`` for a row that does not name its trace and farm);
- the never-worse check: the largest ratio over the seeds against
  :data:`NEVER_WORSE` (1.02).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from .bound import capacity_bound_of
from .compare import BASELINE
from .plots import pyplot

__all__ = ["NEVER_WORSE", "NOTHING_TO_REMOVE", "format_markdown", "merge_seeds", "plot_seeds", "removable",
           "share_removed"]

NEVER_WORSE = 1.02
# A baseline whose excess over the floor is under this share of the floor leaves nothing to remove.
NOTHING_TO_REMOVE = 0.05
_STATS = ("mean", "p99")


def share_removed(system: float | None, baseline: float | None, floor: float | None) -> float | None:
    """``(baseline - system) / (baseline - floor)``; ``None`` when the baseline sits on the floor."""
    if system is None or baseline is None or floor is None or floor <= 0:
        return None
    excess = baseline - floor
    if excess <= NOTHING_TO_REMOVE * floor:
        return None
    return round((baseline - system) / excess, 3)


def _floors(base: Mapping[str, Any], mine: Mapping[str, Any]) -> tuple[str, dict[str, float | None]]:
    """What floors ``mine``, and the floors of its mean and P99.

    The trace's critical paths, or, for a LangGraph app on a trace that has them, the
    barrier paths: the superstep barrier is part of the graph's semantics, so no
    scheduler serving the graph can beat them.
    """
    barrier = (base.get("trace") or {}).get("barrier_path_s")
    if mine.get("app") == "graph" and barrier:
        paths = sorted(barrier.values())
        return "barrier path", {"mean": statistics.fmean(paths),
                                "p99": paths[min(len(paths) - 1, int(0.99 * len(paths)))]}
    return "critical path", {"mean": base.get("lower_bound_s"), "p99": (base.get("critical_path_s") or {}).get("p99")}


def removable(base: Mapping[str, Any], mine: Mapping[str, Any]) -> float | None:
    """The most of the baseline's mean excess over the floor that the farm's capacity lets any system remove."""
    kind, floors = _floors(base, mine)
    try:
        bound = capacity_bound_of(base, barrier=kind == "barrier path")
    except ConfigError:
        return None
    return share_removed(bound, base["latency_s"]["mean"], floors["mean"])


def _spread(values: Sequence[float | None]) -> dict[str, Any]:
    known = [v for v in values if v is not None]
    if not known:
        return {"mean": None, "min": None, "max": None, "seeds": list(values)}
    return {"mean": round(statistics.fmean(known), 3), "min": min(known), "max": max(known), "seeds": list(values)}


def join_rates(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Join comparisons of the same seed that ran different rates (each rate as its own process).

    Returns one comparison per seed, in the order the seeds first appear, each
    system's runs in order of rate.

    Raises:
        ConfigError: A seed's comparisons ran different systems, or a seed's rate is given twice.
    """
    joined: dict[Any, dict[str, Any]] = {}
    for r in results:
        seed = r["seed"]
        if seed not in joined:
            joined[seed] = {"workload": r["workload"], "seed": seed, "runs": {s: list(v) for s, v in r["runs"].items()}}
            continue
        into = joined[seed]["runs"]
        if list(r["runs"]) != list(into):
            raise ConfigError(f"seed {seed}'s comparisons ran different systems: {list(into)} and {list(r['runs'])}")
        for system, runs in r["runs"].items():
            into[system].extend(runs)
    for seed, r in joined.items():
        for system, runs in r["runs"].items():
            rates = [x["rps_offered"] for x in runs]
            if len(set(rates)) != len(rates):
                raise ConfigError(f"seed {seed} gives a rate twice for {system}: {rates}")
            runs.sort(key=lambda x: x["rps_offered"])
    return list(joined.values())


def merge_seeds(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge ``nalar bench compare`` results of one workload on different seeds.

    Comparisons of one seed at different rates are joined first (:func:`join_rates`).

    Raises:
        ConfigError: No result, results of different workloads, a seed's rate given
            twice, a missing baseline, or systems or rates that differ between seeds.
    """
    if not results:
        raise ConfigError("no comparison to merge")
    workloads = {r["workload"] for r in results}
    if len(workloads) != 1:
        raise ConfigError(f"comparisons of different workloads: {sorted(workloads)}")
    results = join_rates(results)
    seeds = [r["seed"] for r in results]
    systems = list(results[0]["runs"])
    if BASELINE not in systems:
        raise ConfigError(f"the comparisons have no {BASELINE} baseline to take ratios to")
    rates = [r["rps_offered"] for r in results[0]["runs"][BASELINE]]
    for r in results[1:]:
        if list(r["runs"]) != systems or [x["rps_offered"] for x in r["runs"][BASELINE]] != rates:
            raise ConfigError(f"seed {r['seed']} ran other systems or rates than seed {seeds[0]}")
    out_systems: dict[str, list[dict[str, Any]]] = {}
    for system in systems:
        if system == BASELINE:
            continue
        rows = []
        for i, rate in enumerate(rates):
            row: dict[str, Any] = {"rps": rate}
            for stat in _STATS:
                ratios, shares = [], []
                for r in results:
                    base, mine = r["runs"][BASELINE][i], r["runs"][system][i]
                    b, m = base["latency_s"][stat], mine["latency_s"][stat]
                    ratios.append(None if b in (None, 0) or m is None else round(m / b, 3))
                    shares.append(share_removed(m, b, _floors(base, mine)[1][stat]))
                row[f"{stat}_ratio"] = _spread(ratios)
                row[f"{stat}_share_removed"] = _spread(shares)
            row["mean_removable"] = _spread([removable(r["runs"][BASELINE][i], r["runs"][system][i])
                                             for r in results])
            worst = max((v for s in _STATS for v in row[f"{s}_ratio"]["seeds"] if v is not None), default=None)
            row["floor"] = _floors(results[0]["runs"][BASELINE][i], results[0]["runs"][system][i])[0]
            row["worst_ratio"] = worst
            row["never_worse"] = worst is not None and worst <= NEVER_WORSE
            row["completed"] = all(r["runs"][system][i]["completed"] == r["runs"][system][i]["requests"]
                                   for r in results)
            rows.append(row)
        out_systems[system] = rows
    never_worse = {s: all(row["never_worse"] for row in rows) for s, rows in out_systems.items()}
    return {
        "workload": results[0]["workload"],
        "seeds": seeds,
        "rates": rates,
        "baseline": BASELINE,
        "never_worse_bound": NEVER_WORSE,
        "systems": out_systems,
        "never_worse": never_worse,
        "goals": {str(r["seed"]): r.get("goals", {}) for r in results},
    }


def _fmt(spread: Mapping[str, Any], percent: bool = False) -> str:
    if spread["mean"] is None:
        return "—"
    if percent:
        return f"{spread['mean'] * 100:.0f} % ({spread['min'] * 100:.0f}–{spread['max'] * 100:.0f})"
    return f"{spread['mean']:.2f} ({spread['min']:.2f}–{spread['max']:.2f})"


def format_markdown(merged: Mapping[str, Any]) -> str:
    """A Markdown table per system: ratios and shares of the excess removed, mean (min–max) over the seeds."""
    lines = []
    seeds = ", ".join(str(s) for s in merged["seeds"])
    for system, rows in merged["systems"].items():
        floor = rows[0]["floor"] if rows else "critical path"
        lines.append(f"`{system}` against `{merged['baseline']}`, seeds {seeds}: mean over the seeds (min–max); "
                     f"floor: the {floor}")
        lines.append("")
        lines.append("| rps | mean ratio | P99 ratio | mean: excess removed | P99: excess removed | "
                     f"mean: most removable | worst ratio | ≤ {merged['never_worse_bound']}x |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for row in rows:
            lines.append(
                f"| {row['rps']:g} | {_fmt(row['mean_ratio'])} | {_fmt(row['p99_ratio'])} | "
                f"{_fmt(row['mean_share_removed'], True)} | {_fmt(row['p99_share_removed'], True)} | "
                f"{_fmt(row['mean_removable'], True)} | {row['worst_ratio']:.2f} | "
                f"{'yes' if row['never_worse'] else '**no**'} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot_seeds(merged: Mapping[str, Any], path: str) -> None:
    """Write a two-panel PNG: ratio to the baseline, and share of its excess removed, against rate (bars: min–max).

    Raises:
        ConfigError: matplotlib is missing (``pip install 'nalar-plugin[bench]'``).
    """
    plt = pyplot()
    fig, (ax_ratio, ax_share) = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn: set[tuple[tuple[float, float], ...]] = set()
    for system, rows in merged["systems"].items():
        for stat, style in (("mean", "o-"), ("p99", "s--")):
            for ax, key in ((ax_ratio, f"{stat}_ratio"), (ax_share, f"{stat}_share_removed")):
                pts = [(r["rps"], r[key]) for r in rows if r[key]["mean"] is not None]
                if not pts:
                    continue
                xs = [x for x, _ in pts]
                ys = [s["mean"] for _, s in pts]
                err = [[s["mean"] - s["min"] for _, s in pts], [s["max"] - s["mean"] for _, s in pts]]
                ax.errorbar(xs, ys, yerr=err, fmt=style, capsize=3, label=f"{system} {stat}")
        most = tuple((r["rps"], r["mean_removable"]["mean"]) for r in rows if r["mean_removable"]["mean"] is not None)
        if most and most not in drawn:  # systems with the same floor share one curve
            drawn.add(most)
            ax_share.plot([x for x, _ in most], [y for _, y in most], ":", color="gray", lw=1.5,
                          label=f"most removable, {rows[0]['floor']} + capacity")
    ax_ratio.axhline(1.0, color="black", lw=0.8)
    ax_ratio.axhline(merged["never_worse_bound"], color="tab:red", lw=0.8, ls=":", label="never-worse bound")
    ax_ratio.set_ylabel(f"latency / {merged['baseline']}'s")
    ax_ratio.set_title("ratio to the baseline (below 1 is better)")
    ax_share.axhline(0.0, color="black", lw=0.8)
    ax_share.axhline(0.8, color="tab:green", lw=0.8, ls=":", label="80 % goal")
    ax_share.set_ylabel("share of the baseline's excess removed")
    ax_share.set_title("excess over the critical-path floor removed")
    for ax in (ax_ratio, ax_share):
        ax.set_xlabel("offered load (requests per model second)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    seeds = ", ".join(str(s) for s in merged["seeds"])
    fig.suptitle(f"{merged['workload']}: seeds {seeds}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
