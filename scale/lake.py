"""The job's Iceberg tables, the SQL files it runs, and bronze: snapshots landed as-is.

Tables (in the session's current catalog, ``scale.session.use_catalog``):

- ``bronze.snapshots``: every snapshot's records as the source sent them (one JSON line a row),
  partitioned by source and run, append-only: a run already landed is never landed again;
- ``silver.offers``: one row per source offer, merged per snapshot (``scale/silver.py``);
- ``gold.products``: one row per golden product (``scale/gold.py``);
- ``gold.offer_keys``: each live offer's golden key as the last gold build saw it, so that the
  next one recomputes only the golden products whose offers changed (``scale/gold.py``);
- ``meta.reconcile_runs``: one row per run of the job, the ledger its run numbers come from.

Silver and gold write merge-on-read: a MERGE that changes 10% of a table writes those rows and
delete files, where copy-on-write would rewrite every data file holding one of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from scale.snapshots import Snapshot, check_parts_present, check_record_count

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent / "sql"
MERGE_ON_READ = (
    "'format-version' = '2', 'write.merge.mode' = 'merge-on-read', "
    "'write.update.mode' = 'merge-on-read', 'write.delete.mode' = 'merge-on-read'"
)
TABLES = {
    "bronze.snapshots": """
        CREATE TABLE IF NOT EXISTS bronze.snapshots (
            source_id STRING NOT NULL, run_id BIGINT NOT NULL, record STRING NOT NULL)
        USING iceberg PARTITIONED BY (source_id, run_id)""",
    "silver.offers": f"""
        CREATE TABLE IF NOT EXISTS silver.offers (
            source_id STRING NOT NULL, source_key STRING NOT NULL, priority INT,
            gtin STRING, mpn STRING, brand STRING, title STRING, description STRING,
            category STRING, price DECIMAL(12, 2), currency STRING, stock INT,
            source_updated_at TIMESTAMP, content_hash BIGINT NOT NULL,
            run_id BIGINT NOT NULL, deleted_at TIMESTAMP)
        USING iceberg PARTITIONED BY (source_id) TBLPROPERTIES ({MERGE_ON_READ})""",
    "gold.products": f"""
        CREATE TABLE IF NOT EXISTS gold.products (
            golden_id BIGINT NOT NULL, golden_key STRING NOT NULL, gtin STRING, title STRING,
            description STRING, brand STRING, category STRING, best_price DECIMAL(12, 2),
            currency STRING, best_price_source STRING, price_outliers INT, total_stock INT,
            availability STRING, offer_count INT, source_count INT,
            content_hash BIGINT NOT NULL, status STRING NOT NULL, changed_run BIGINT NOT NULL)
        USING iceberg TBLPROPERTIES ({MERGE_ON_READ})""",
    "gold.offer_keys": """
        CREATE TABLE IF NOT EXISTS gold.offer_keys (
            source_id STRING NOT NULL, source_key STRING NOT NULL, golden_key STRING NOT NULL,
            content_hash BIGINT NOT NULL, run_id BIGINT NOT NULL)
        USING iceberg""",
    "meta.reconcile_runs": """
        CREATE TABLE IF NOT EXISTS meta.reconcile_runs (
            reconcile_run BIGINT NOT NULL, started_at TIMESTAMP NOT NULL,
            snapshots STRING NOT NULL, summary STRING)
        USING iceberg""",
}


def create_tables(spark: SparkSession) -> None:
    """Create the namespaces and tables that are missing."""
    for name, ddl in TABLES.items():
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {name.split('.')[0]}")
        spark.sql(ddl)


def sql_text(name: str) -> str:
    """The text of one of the job's SQL files (``scale/sql/<name>.sql``)."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def run_sql_file(spark: SparkSession, name: str, args: dict[str, Any]) -> None:
    """Run a SQL file with its named parameters bound by Spark (never pasted into the text)."""
    spark.sql(sql_text(name), args=args)


def next_reconcile_run(spark: SparkSession) -> int:
    """The number of this run of the job: one more than the ledger's last."""
    last = spark.table("meta.reconcile_runs").agg(F.max("reconcile_run")).first()
    return int(last[0] or 0) + 1 if last is not None else 1


def landed_runs(spark: SparkSession) -> set[tuple[str, int]]:
    """The (source, run) partitions bronze already holds, from Iceberg's metadata alone."""
    query = "SELECT partition.source_id, partition.run_id FROM bronze.snapshots.partitions"
    rows = spark.sql(query)
    return {(row[0], int(row[1])) for row in rows.collect()}


def snapshot_text(spark: SparkSession, snapshot: Snapshot) -> DataFrame:
    """A snapshot's records as bronze rows: the text of each line, its source and run."""
    check_parts_present(snapshot)
    manifest = snapshot.manifest
    if not snapshot.parts:
        return spark.createDataFrame([], "source_id string, run_id bigint, record string")
    lines = spark.read.text([str(part) for part in snapshot.parts])
    return lines.where(F.trim("value") != "").select(
        F.lit(manifest.source_id).alias("source_id"),
        F.lit(manifest.run_id).cast("bigint").alias("run_id"),
        F.col("value").alias("record"),
    )


def land_snapshots(spark: SparkSession, snapshots: list[Snapshot]) -> dict[str, int]:
    """Bronze: check every new snapshot against its manifest, then land them all in one commit.

    A snapshot whose parts are gone or hold another count than its manifest announces refuses
    the whole run before anything is written (``SyncAborted``). Returns records landed per
    snapshot; a snapshot landed before is skipped (bronze is immutable).
    """
    landed = landed_runs(spark)
    new = [s for s in snapshots if (s.manifest.source_id, s.manifest.run_id) not in landed]
    frames = []
    counts: dict[str, int] = {}
    for snapshot in new:
        frame = snapshot_text(spark, snapshot)
        counted = frame.count()
        check_record_count(snapshot, counted)
        frames.append(frame)
        counts[str(snapshot)] = counted
    for snapshot in snapshots:
        if snapshot not in new:
            log.info("%s is in bronze already", snapshot)
    if frames:
        union = frames[0]
        for frame in frames[1:]:
            union = union.unionByName(frame)
        union.writeTo("bronze.snapshots").append()
    return counts
