"""The benchmark scripts still run end to end (tiny sizes; their figures are not checked here)."""

from __future__ import annotations

import pytest

from benchmarks import bench_extract, bench_sync


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_bench_sync_runs_every_approach_on_a_tiny_catalog(
    database: str, postgres_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_DATABASE_URL", postgres_server_url)
    args = ["--sizes", "200", "--naive-size", "50", "--repeats", "1", "--no-memory"]
    assert bench_sync.main([*args, "--database", database]) == 0


def test_bench_extract_runs_sequential_and_parallel_on_a_tiny_catalog() -> None:
    args = ["--products", "500", "--latency-ms", "1", "--concurrency", "1,4", "--repeats", "1"]
    assert bench_extract.main([*args, "--no-memory"]) == 0
