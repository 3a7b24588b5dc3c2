"""The soak benchmark at a small scale: every table stays within its bound."""

from __future__ import annotations

from nalar_plugin.bench.soak import bench_soak


def test_a_small_soak_keeps_every_table_bounded() -> None:
    data = bench_soak(300, concurrency=25, sample_every=100, journal_max_sessions=50, gc_interval_s=0.2,
                      progress=False, graph_sessions=40, session_cache=60)
    assert data["sessions"] == 300 and len(data["samples"]) == 5  # start, every 100, and once drained
    tables = data["tables_at_end"]
    assert tables["graphs_kept"] <= 40 and tables["controller_sessions"] <= 60
    assert tables["adapter_flows"] == 0 and tables["calls_in_flight"] == 0 and tables["claims"] == 0
    # A sweep after the last session ended keeps only the newest ``journal_max_sessions``.
    assert data["journal_sessions_at_end"] <= 50
    assert data["threads_max"] < 60
    for key in ("rss_mib_first", "rss_mib_last", "state_dir_kib_max", "rss_growth_mib_per_1000_sessions_after_warmup"):
        assert key in data
