"""The benchmark scripts still run end to end (tiny sizes; their figures are not checked here)."""

from __future__ import annotations

import pytest

from benchmarks import bench_extract, bench_footprint, bench_sync


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_bench_sync_runs_every_approach_on_a_tiny_catalog(
    database: str, postgres_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_DATABASE_URL", postgres_server_url)
    args = ["--sizes", "200", "--naive-size", "50", "--repeats", "1", "--no-memory"]
    args += ["--history-off"]
    assert bench_sync.main([*args, "--database", database]) == 0


def test_bench_extract_runs_sequential_and_parallel_on_a_tiny_catalog() -> None:
    args = ["--products", "500", "--latency-ms", "1", "--concurrency", "1,4", "--repeats", "1"]
    assert bench_extract.main([*args, "--no-memory"]) == 0


def test_bench_footprint_measures_wal_and_sizes_and_lists_its_figures(
    postgres_server_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BENCH_DATABASE_URL", postgres_server_url)
    args = ["--products", "300", "--served", "200", "--shape", "200", "--memory-sizes", "0"]
    assert bench_footprint.main([*args, "--no-compression"]) == 0
    figures = capsys.readouterr().out.split("\nfigures:\n", 1)[1]
    assert "  pg.off.nochange.written = 0\n" in figures
    assert "  pg.off.changed.updated = 30\n" in figures
    assert "  served.page_bytes_per_product = " in figures
