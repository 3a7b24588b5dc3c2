"""PNG figures of benchmark runs: latency against offered load, and latency CDFs (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError

__all__ = ["latencies_of", "plot_runs", "pyplot"]

_COLORS = {"nalar": "tab:blue", "langgraph": "tab:red", "fcfs": "tab:gray"}
_MORE = ("tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend.

    Raises:
        ConfigError: matplotlib is missing (``pip install 'nalar-plugin[bench]'``).
    """
    try:
        import matplotlib  # noqa: PLC0415 - matplotlib is an optional dependency

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib is an optional dependency
    except ImportError as exc:
        raise ConfigError("plots need matplotlib: pip install 'nalar-plugin[bench]'") from exc
    return plt


def latencies_of(result: Any) -> list[float]:
    """Model-second latencies of a :class:`~nalar_plugin.bench.runner.RunResult`'s completed requests."""
    ts = result.summary["time_scale"]
    return sorted((r.end - r.start) / ts for r in result.records if r.error is None)


def plot_runs(runs: Mapping[str, Sequence[tuple[dict[str, Any], Sequence[float]]]], path: str, *, title: str = "") -> None:
    """Write a two-panel PNG: mean and P99 latency against offered load, and the latency CDFs.

    Args:
        runs: Per system, its runs in rate order as ``(summary, sorted latencies)``.
        path: The PNG to write.
        title: Figure title.

    Raises:
        ConfigError: matplotlib is missing (``pip install 'nalar-plugin[bench]'``).
    """
    plt = pyplot()
    fig, (ax_load, ax_cdf) = plt.subplots(1, 2, figsize=(11, 4.2))
    bound_drawn = False
    top_rate = max((s["rps_offered"] for rs in runs.values() for s, _ in rs), default=0)
    spare = iter(_MORE * 4)
    for system, rs in runs.items():
        # One colour per system, shared by its mean, P99 and CDF lines.
        color = _COLORS.get(system) or next(spare)
        rates = [s["rps_offered"] for s, _ in rs]
        ax_load.plot(rates, [s["latency_s"]["mean"] for s, _ in rs], "o-", color=color, label=f"{system} mean")
        ax_load.plot(rates, [s["latency_s"]["p99"] for s, _ in rs], "s--", color=color, alpha=0.7, label=f"{system} p99")
        if not bound_drawn and rs:
            ax_load.plot(rates, [s["lower_bound_s"] for s, _ in rs], ":", color="black", label="lower bound (mean)")
            bound_drawn = True
        for summary, lat in rs:
            if summary["rps_offered"] != top_rate or not lat:
                continue
            n = len(lat)
            ax_cdf.step(lat, [(i + 1) / n for i in range(n)], where="post", color=color,
                        label=f"{system} @ {summary['rps_offered']:g} rps")
    ax_load.set_xlabel("offered load (requests per model second)")
    ax_load.set_ylabel("latency (model seconds)")
    ax_load.set_yscale("log")
    ax_load.grid(True, which="both", alpha=0.3)
    ax_load.legend(fontsize=7)
    ax_load.set_title("latency against load")
    ax_cdf.set_xlabel("latency (model seconds)")
    ax_cdf.set_ylabel("fraction of requests")
    ax_cdf.set_xscale("log")
    ax_cdf.grid(True, which="both", alpha=0.3)
    ax_cdf.legend(fontsize=7)
    ax_cdf.set_title(f"latency CDF at {top_rate:g} rps")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
