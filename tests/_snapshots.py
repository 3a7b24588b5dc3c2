"""Hand-made controller snapshots, for testing policies without a cluster."""

from __future__ import annotations

from nalar_plugin.scheduler import ComponentStats, InstanceStats, Snapshot


def instance(comp: str, i: int, load: int, capacity: int | None = 3, warming: bool = False,
             completed: int = 0) -> InstanceStats:
    """Instance ``comp/i`` with ``load`` calls (up to ``capacity`` in flight, the rest queued).

    ``completed`` calls so far, each of one second of service.
    """
    slots = load if capacity is None else min(load, capacity)
    return InstanceStats(f"{comp}/{i}", comp, queue_len=load - slots, in_flight=slots, capacity=capacity,
                         completed=completed, busy_s=float(completed), latency_p50=0.0, latency_p95=0.0,
                         latency_p99=0.0, warming=warming)


def snapshot(tick: int, loads: dict[str, list[int]], tools: bool = True, warming: frozenset[str] = frozenset(),
             completed: dict[str, int] | None = None) -> Snapshot:
    """Components with one instance per entry of ``loads[component]``; ``warming`` names instances warming up.

    ``completed`` gives, per instance id, the calls it completed so far (each of one
    second of service). With ``tools``, an unbounded component (a tool) is added:
    re-allocation must ignore it.
    """
    done = completed or {}
    comps = {c: ComponentStats(c, {f"{c}/{i}": instance(c, i, x, warming=f"{c}/{i}" in warming,
                                                        completed=done.get(f"{c}/{i}", 0))
                                   for i, x in enumerate(ls)}) for c, ls in loads.items()}
    if tools:
        comps["search"] = ComponentStats("search", {"search/0": instance("search", 0, 50, capacity=None)})
    return Snapshot(time=0.0, tick=tick, components=comps, sessions={}, futures=0)
