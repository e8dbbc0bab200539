"""Benchmark the Spark job (``scale/``): N sources x P offers, two runs, stage by stage.

Run 1 lands, merges and reconciles every source's first snapshot and publishes every golden
product; run 2 does the same with each source's second snapshot (about 10% of offers changed,
1% gone, 1% new; ``scale/generate.py``), so silver merges and the serving database receive the
changes only. For each stage: wall time, the JVM's peak resident memory during the stage
(``VmHWM`` after ``clear_refs``; the heap Spark keeps from earlier stages is included), and
records per second per core. Then the tables' bytes per live offer (Iceberg's own file sizes)
and the change set sent to PostgreSQL (or SQLite).

    python -m benchmarks.bench_scale --products 1000000           # 3 sources x 1M, PostgreSQL
    python -m benchmarks.bench_scale --products 2000 --database sqlite   # a quick check
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    RESULTS_DIR,
    ROOT,
    Output,
    command_line,
    machine_lines,
    results_path,
)
from models import make_engine
from scale import generate, reconcile
from scale.session import SparkSettings, start_session, use_catalog
from scale.snapshots import find_snapshots
from tools.throwaway_postgres import postgres_server

log = logging.getLogger("bench_scale")

TABLES = ("bronze.snapshots", "silver.offers", "gold.products", "gold.offer_keys")


def read_hwm_kib(pid: int) -> int:
    """A process's peak resident memory in KiB (``VmHWM``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def reset_hwm(pid: int) -> None:
    """Start a new peak: writing 5 to ``clear_refs`` resets ``VmHWM`` to the current RSS."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")
    except OSError as exc:
        log.warning("cannot reset the peak memory of %d: %s", pid, exc)


class StageMemory:
    """A reconcile hook: the JVM's and this process's peak memory per stage."""

    def __init__(self, jvm_pid: int) -> None:
        self.pids = {"jvm": jvm_pid, "python": os.getpid()}
        self.peaks: dict[str, dict[str, int]] = {}

    def __call__(self, stage: str, event: str) -> None:
        if event == "start":
            for pid in self.pids.values():
                reset_hwm(pid)
            return
        self.peaks[stage] = {name: read_hwm_kib(pid) for name, pid in self.pids.items()}


def table_bytes(spark: Any, table: str) -> tuple[int, int]:
    """(data bytes, delete-file bytes) of a table's current snapshot, from Iceberg's metadata."""
    rows = spark.sql(
        f"SELECT content, sum(file_size_in_bytes) FROM {table}.files GROUP BY content"
    ).collect()
    sizes = {int(row[0]): int(row[1] or 0) for row in rows}
    return sizes.get(0, 0), sum(v for k, v in sizes.items() if k != 0)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--products", type=int, default=1_000_000, help="offers per source")
    parser.add_argument("--sources", type=int, default=3, help="1-3 (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--shuffle-partitions", type=int, default=16)
    parser.add_argument(
        "--database", choices=("postgresql", "sqlite"), default="postgresql",
        help="serving database (PostgreSQL: BENCH_DATABASE_URL, else a throwaway server)",
    )  # fmt: skip
    parser.add_argument(
        "--work", type=Path, default=RESULTS_DIR / "scale-work",
        help="folder for sources and the warehouse (deleted first and, without --keep, after)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the sources and warehouse")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran, 1 when a run failed, 2 on bad usage."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    if args.products < 1 or not 1 <= args.sources <= 3:
        print("error: expected --products >= 1 and --sources 1..3", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Output(results_path("bench_scale"))
    try:
        return _run(args, arguments, out)
    finally:
        out.close()
        log.info("results written to %s", out.path.relative_to(ROOT))


def _run(args: argparse.Namespace, arguments: list[str], out: Output) -> int:
    cores = os.cpu_count() or 1
    out(f"# bench_scale, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    out()
    out(f"command: {command_line('benchmarks.bench_scale', arguments)}")
    for line in machine_lines():
        out(line)
    with open("/proc/loadavg", encoding="ascii") as loadavg:
        out(f"load average at start (other work on the machine): {loadavg.read().split()[0]}")
    shutil.rmtree(args.work, ignore_errors=True)
    sources, warehouse = args.work / "sources", args.work / "warehouse"
    started = time.perf_counter()
    generate.generate(sources, args.products, runs=2, seed=args.seed, sources=args.sources)
    out(
        f"generated {args.sources} sources x {args.products:,} offers, 2 runs, seed {args.seed}: "
        f"{time.perf_counter() - started:.0f} s (scale.generate, not part of the job's figures)"
    )
    settings = SparkSettings(
        master=args.master,
        driver_memory=args.driver_memory,
        shuffle_partitions=args.shuffle_partitions,
        local_dir=args.work / "spark",
    )
    with ExitStack() as stack:
        if args.database == "postgresql":
            url = stack.enter_context(postgres_server("BENCH_DATABASE_URL"))
        else:
            url = f"sqlite:///{args.work / 'golden.db'}"
        engine = make_engine(url)
        spark = start_session(settings, app_name="bench-scale")
        stack.callback(spark.stop)
        import pyspark  # noqa: PLC0415 (the job's dependency, installed with it)

        out(
            f"spark {pyspark.__version__} {args.master}, driver memory {args.driver_memory}, "
            f"{args.shuffle_partitions} shuffle partitions; Iceberg 1.10.2 (merge-on-read); "
            f"serving database: {engine.dialect.name}"
        )
        use_catalog(spark, warehouse)
        jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # type: ignore[union-attr]
        reports = []
        for run in (1, 2):
            memory = StageMemory(jvm_pid)
            snapshots = find_snapshots(sorted(sources.glob(f"source=*/run={run}")))
            report = reconcile.reconcile(spark, snapshots, engine=engine, hook=memory)
            reports.append(report)
            _print_run(out, run, report, memory, cores)
        _print_sizes(out, spark, reports)
        out(f"warehouse on disk (every snapshot kept): {folder_bytes(warehouse) / 2**20:,.0f} MiB")
        engine.dispose()
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


def _records(report: Any, stage: str) -> int:
    """The records a stage processed: snapshot records for bronze and silver, live offers for
    gold, golden rows sent for publish."""
    offers = report.offers
    if stage == "bronze":
        return sum(c.records for c in offers)
    if stage.startswith("silver "):
        return int(
            next(c.records for c in offers if stage == f"silver {c.source_id} run {c.run_id}")
        )
    if stage == "gold":
        return sum(c.inserted + c.updated + c.unchanged for c in offers)
    published = report.published
    return published.upserted + published.retired if published else 0


def _print_run(out: Output, run: int, report: Any, memory: StageMemory, cores: int) -> None:
    out()
    out(f"## run {run}")
    for line in reconcile.format_summary(report).splitlines()[1:-1]:
        out(line)
    out()
    out("| stage | records | seconds | records/s per core | JVM peak RSS | Python peak RSS |")
    out("|---|---|---|---|---|---|")
    total = 0.0
    for stage in report.stages:
        records = _records(report, stage.name)
        per_core = records / stage.seconds / cores if stage.seconds else 0
        peaks = memory.peaks.get(stage.name, {"jvm": 0, "python": 0})
        out(
            f"| {stage.name} | {records:,} | {stage.seconds:.1f} | {per_core:,.0f} | "
            f"{mib(peaks['jvm'])} | {mib(peaks['python'])} |"
        )
        total += stage.seconds
    offers = sum(c.records for c in report.offers)
    out(f"| **run {run} total** | {offers:,} | {total:.1f} | {offers / total / cores:,.0f} | | |")


def _print_sizes(out: Output, spark: Any, reports: list[Any]) -> None:
    live = spark.sql("SELECT count(*) FROM silver.offers WHERE deleted_at IS NULL").first()[0]
    golden = spark.sql("SELECT count(*) FROM gold.products WHERE status = 'active'").first()[0]
    out()
    out("## tables after run 2 (Iceberg file sizes of the current snapshot)")
    out()
    out("| table | data files | delete files | bytes per live offer |")
    out("|---|---|---|---|")
    for table in TABLES:
        data, deletes = table_bytes(spark, table)
        out(f"| {table} | {data / 2**20:,.1f} MiB | {deletes / 2**20:,.1f} MiB | "
            f"{(data + deletes) / live:,.1f} |")  # fmt: skip
    out(f"live offers {live:,}; active golden products {golden:,}")
    out()
    out("## change set sent to the serving database")
    for run, report in enumerate(reports, start=1):
        published = report.published
        out(
            f"run {run}: {published.upserted:,} upserted, {published.retired:,} retired "
            f"({(published.upserted + published.retired) / max(golden, 1):.1%} of the golden "
            "products)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
