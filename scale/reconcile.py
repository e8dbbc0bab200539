"""Exercise 4, built: reconcile source snapshots into golden products with Spark and Iceberg.

One run, stage by stage (``reconcile`` below follows them in order):

1. **validate**: find the snapshots (``manifest.json`` + ``part-*.jsonl`` folders) and read
   their manifests;
2. **bronze**: land every new snapshot as-is in one commit, after checking that its parts hold
   what its manifest announces: a source that vanished mid-run refuses the run, nothing changes;
3. **silver**: merge each snapshot, source by source and run by run (``scale/silver.py``): skip
   unchanged offers, update changed ones, insert new ones, soft-delete what a complete snapshot
   no longer has;
4. **gold**: golden products by the matching and survivorship rules (``scale/rules.py``), the
   changed ones merged into ``gold.products`` (``scale/gold.py``);
5. **publish** (with ``--database-url``): only the golden products changed since the last
   publish, applied to PostgreSQL or SQLite in one transaction (``scale/serving.py``).

Locally::

    python -m scale.generate --out data/sources --products 10000 --runs 2
    python -m scale.reconcile --snapshots data/sources --warehouse data/warehouse \\
        --database-url sqlite:///golden.db

On a cluster, ``spark-submit`` gives the master, the Iceberg jar and the catalog (README,
"Exercise 4 at scale"). Exit codes: 0 reconciled, 1 the run failed or a guard refused it, 2 bad
usage, 130 / 143 stopped by Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dotenv import dotenv_values
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from etl.errors import ConfigError, PipelineError, exit_code, failure_message, one_line
from etl.runs import exit_process, stop_on_signals
from etl.settings import check_range, configure_logging
from models import make_engine, mask_url
from scale.session import SparkSettings, start_session, use_catalog
from scale.snapshots import Snapshot, find_snapshots

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from scale.gold import GoldCounts
    from scale.serving import PublishCounts
    from scale.silver import OfferCounts

log = logging.getLogger("scale.reconcile")

PUBLISH_BATCH = 10_000  # gold rows per batch handed to the serving database's writer
StageHook = Callable[[str, str], None]  # (stage, "start" | "end")


@dataclass(frozen=True)
class ReconcileOptions:
    """What a run does, resolved once from flags, the environment and ``.env``."""

    snapshots: list[Path]
    warehouse: Path
    database_url: str | None = None
    spark: SparkSettings = field(default_factory=SparkSettings)
    max_retire_fraction: float = 0.1
    allow_mass_retire: bool = False


@dataclass
class StageTime:
    """How long a stage took."""

    name: str
    seconds: float


@dataclass
class ReconcileReport:
    """What a run did, stage by stage."""

    reconcile_run: int
    offers: list[OfferCounts] = field(default_factory=list)
    gold: GoldCounts | None = None
    published: PublishCounts | None = None
    stages: list[StageTime] = field(default_factory=list)


class Stages:
    """Times each stage, logs a progress line for it, and tells an optional hook (benchmarks
    measure memory per stage through it)."""

    def __init__(self, report: ReconcileReport, hook: StageHook | None = None) -> None:
        self.report = report
        self.hook = hook

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("%s ...", name)
        if self.hook:
            self.hook(name, "start")
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        self.report.stages.append(StageTime(name, seconds))
        if self.hook:
            self.hook(name, "end")
        log.info("%s done in %.1f s", name, seconds)


def reconcile(
    spark: SparkSession,
    snapshots: Sequence[Snapshot],
    *,
    engine: Engine | None = None,
    max_retire_fraction: float = 0.1,
    allow_mass_retire: bool = False,
    hook: StageHook | None = None,
) -> ReconcileReport:
    """One run over the session's current catalog; see the module docstring for the stages."""
    from scale import gold, lake, serving, silver  # noqa: PLC0415 (they import pyspark)

    lake.create_tables(spark)
    started_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    report = ReconcileReport(reconcile_run=lake.next_reconcile_run(spark))
    stage = Stages(report, hook)
    with stage("bronze"):
        lake.land_snapshots(spark, list(snapshots))
    for snapshot in snapshots:
        with stage(f"silver {snapshot}"):
            counts = silver.merge_snapshot(spark, snapshot, started_at, max_retire_fraction)
        report.offers.append(counts)
        log.info("%s", counts.line())
    with stage("gold"):
        report.gold = gold.build_gold(spark, report.reconcile_run)
    log.info("%s", report.gold.line())
    _record_run(spark, report, snapshots, started_at)
    if engine is not None:
        with stage("publish"):
            report.published = serving.publish(
                engine,
                report.reconcile_run,
                lambda since: row_batches(gold.changed_since(spark, since)),
                max_retire_fraction=max_retire_fraction,
                allow_mass_retire=allow_mass_retire,
            )
        log.info("%s", report.published.line())
    return report


def row_batches(frame: Any) -> Iterator[list[dict[str, Any]]]:
    """A DataFrame's rows as dicts, in batches, streamed from the executors."""
    batch: list[dict[str, Any]] = []
    for row in frame.toLocalIterator(prefetchPartitions=True):
        batch.append(row.asDict())
        if len(batch) == PUBLISH_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _record_run(
    spark: SparkSession,
    report: ReconcileReport,
    snapshots: Sequence[Snapshot],
    started_at: dt.datetime,
) -> None:
    """Append the run to ``meta.reconcile_runs`` (its number is taken from there next time)."""
    summary = {
        "offers": [asdict(counts) for counts in report.offers],
        "gold": asdict(report.gold) if report.gold else None,
    }
    names = ", ".join(map(str, snapshots))
    row = [(report.reconcile_run, started_at, names, json.dumps(summary))]
    schema = "reconcile_run bigint, started_at timestamp, snapshots string, summary string"
    spark.createDataFrame(row, schema).writeTo("meta.reconcile_runs").append()


def format_summary(report: ReconcileReport) -> str:
    """The human summary printed at the end of a run."""
    lines = [f"reconcile run {report.reconcile_run}:"]
    lines += [f"  {counts.line()}" for counts in report.offers]
    if report.gold is not None:
        lines.append(f"  {report.gold.line()}")
    if report.published is not None:
        lines.append(f"  {report.published.line()}")
    else:
        lines.append("  serving: not published (no --database-url)")
    timings = ", ".join(f"{s.name} {s.seconds:.1f} s" for s in report.stages)
    lines.append(f"  stages: {timings}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scale.reconcile",
        description="Reconcile source snapshots into golden products (Spark + Iceberg) and "
        "send the serving database only what changed.",
    )
    parser.add_argument(
        "--snapshots",
        type=Path,
        nargs="+",
        required=True,
        help="snapshot folders (with manifest.json), or folders holding several",
    )
    parser.add_argument(
        "--warehouse", type=Path, help="Iceberg warehouse folder (env SCALE_WAREHOUSE)"
    )
    parser.add_argument(
        "--database-url",
        help="serving database to publish to (env SCALE_DATABASE_URL); none: no publish",
    )
    parser.add_argument("--master", help="Spark master (env SPARK_MASTER; default local[*])")
    parser.add_argument("--driver-memory", default="4g", help="local driver memory (default 4g)")
    parser.add_argument("--shuffle-partitions", type=int, default=8, help="default 8")
    parser.add_argument(
        "--max-retire-fraction",
        type=float,
        default=0.1,
        help="largest share of a source's offers, or of served golden products, one run may "
        "retire (default 0.1)",
    )
    parser.add_argument(
        "--allow-mass-retire",
        action="store_true",
        help="publish even when more golden products retire than --max-retire-fraction allows",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def resolve_options(args: argparse.Namespace) -> ReconcileOptions:
    """Flag > environment > ``.env`` > default, once."""
    config = {**dotenv_values(".env"), **os.environ}
    warehouse = args.warehouse or config.get("SCALE_WAREHOUSE")
    if not warehouse:
        raise ConfigError("--warehouse (or SCALE_WAREHOUSE) is required")
    check_range("--max-retire-fraction", args.max_retire_fraction, 0, 1, low_open=False)
    check_range("--shuffle-partitions", args.shuffle_partitions, 1, 100_000)
    database_url = args.database_url or config.get("SCALE_DATABASE_URL") or None
    spark = SparkSettings(
        master=args.master or config.get("SPARK_MASTER") or "local[*]",
        driver_memory=args.driver_memory,
        shuffle_partitions=args.shuffle_partitions,
    )
    return ReconcileOptions(
        snapshots=list(args.snapshots),
        warehouse=Path(warehouse),
        database_url=database_url,
        spark=spark,
        max_retire_fraction=args.max_retire_fraction,
        allow_mass_retire=args.allow_mass_retire,
    )


def open_serving(url: str) -> Engine:
    """An engine on the serving database; a bad URL raises ``ConfigError``."""
    try:
        return make_engine(url)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigError(f"--database-url is not a usable URL: {exc}") from exc


def spark_errors() -> tuple[type[Exception], ...]:
    """What Spark raises when a job fails (a missing file, a failed task), to report in one
    line like the other failures: Iceberg commits atomically, so nothing half-written remains."""
    from py4j.protocol import Py4JError  # noqa: PLC0415 (an optional dependency)
    from pyspark.errors import PySparkException  # noqa: PLC0415

    return (PySparkException, Py4JError)


def main(argv: Sequence[str] | None = None, spark: SparkSession | None = None) -> int:
    """Run one reconciliation; 0 on success, 1 if it failed or was refused, 2 on bad usage,
    130 / 143 when Ctrl-C or SIGTERM stopped it. ``spark``: a session to reuse (tests)."""
    args = build_parser().parse_args(argv)
    with stop_on_signals():
        try:
            options = resolve_options(args)
            configure_logging(args.verbose)
            snapshots = find_snapshots(options.snapshots)
            engine = open_serving(options.database_url) if options.database_url else None
            shown = mask_url(options.database_url) if options.database_url else "no database"
            log.info("%d snapshots -> %s -> %s", len(snapshots), options.warehouse, shown)
            session = spark or start_session(options.spark)
            use_catalog(session, options.warehouse)
            report = reconcile(
                session,
                snapshots,
                engine=engine,
                max_retire_fraction=options.max_retire_fraction,
                allow_mass_retire=options.allow_mass_retire,
            )
        except (PipelineError, SQLAlchemyError, KeyboardInterrupt) as exc:
            print(f"error: {failure_message(exc)}", file=sys.stderr)
            return exit_code(exc)
        except spark_errors() as exc:
            print(f"error: run failed: {one_line(exc)}", file=sys.stderr)
            return 1
        if engine is not None:
            engine.dispose()
        print(format_summary(report))
    return 0


if __name__ == "__main__":
    exit_process(main())
