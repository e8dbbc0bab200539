"""Silver: each source snapshot merged into ``silver.offers``, changes only.

For one snapshot (``merge_snapshot``), in order:

1. parse its bronze records into offers (a record without an id is counted and left out);
2. de-duplicate by ``source_key`` (a shifted page repeats records): the latest update wins,
   ties to the larger content hash, so the choice is the same on every run;
3. skip unchanged offers: compare each with the stored offer of the same key (a left join on the
   key); an offer whose content hash equals a live stored offer's is counted and dropped, exactly
   as the PostgreSQL sync skips unchanged products before staging;
4. when the snapshot is complete, retire the live stored offers it lacks, unless they are more
   than ``max_retire_fraction`` of the source's live offers (R-D2: the retirements are refused,
   the upserts still apply); an incomplete snapshot retires nothing (R-D1);
5. MERGE what is left (``scale/sql/merge_offers.sql``); with nothing left, no MERGE and no commit.

A re-run of the same snapshot finds nothing left after step 3 and 4, so it changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DecimalType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from scale.lake import run_sql_file
from scale.snapshots import Snapshot

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

RECORD_SCHEMA = StructType(
    [
        StructField("id", LongType()),
        StructField("title", StringType()),
        StructField("description", StringType()),
        StructField("category", StringType()),
        StructField("brand", StringType()),
        StructField("mpn", StringType()),
        StructField("price", DecimalType(12, 2)),
        StructField("currency", StringType()),
        StructField("stock", IntegerType()),
        StructField(
            "meta",
            StructType(
                [StructField("barcode", StringType()), StructField("updatedAt", StringType())]
            ),
        ),
    ]
)
CONTENT_COLUMNS = (
    "priority",
    "gtin",
    "mpn",
    "brand",
    "title",
    "description",
    "category",
    "price",
    "currency",
    "stock",
    "source_updated_at",
)
OFFER_COLUMNS = ("source_id", "source_key", *CONTENT_COLUMNS, "content_hash")


@dataclass(frozen=True)
class OfferCounts:
    """What one snapshot did to silver."""

    source_id: str
    run_id: int
    complete: bool
    records: int
    rejected: int = 0
    duplicates: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    retired: int = 0
    retirements_refused: int = 0

    def line(self) -> str:
        """One summary line."""
        refused = (
            f", {self.retirements_refused:,} retirements REFUSED (over the allowed fraction)"
            if self.retirements_refused
            else ""
        )
        kind = "complete" if self.complete else "incomplete, retires nothing"
        return (
            f"{self.source_id} run {self.run_id} ({kind}): {self.inserted:,} inserted, "
            f"{self.updated:,} updated, {self.unchanged:,} unchanged, {self.retired:,} retired, "
            f"{self.duplicates:,} duplicates, {self.rejected:,} unreadable{refused}"
        )


def parse_offers(records: DataFrame, priority: int) -> DataFrame:
    """Bronze rows (source_id, run_id, record) -> typed offers with a content hash; records
    without an id come out with a null ``source_key``."""
    parsed = records.select("source_id", "run_id", F.from_json("record", RECORD_SCHEMA).alias("r"))
    offers = parsed.select(
        "source_id",
        "run_id",
        F.col("r.id").cast("string").alias("source_key"),
        F.lit(priority).alias("priority"),
        F.col("r.meta.barcode").alias("gtin"),
        *(F.col(f"r.{name}").alias(name) for name in ("mpn", "brand", "title", "description")),
        F.col("r.category").alias("category"),
        F.col("r.price").alias("price"),
        F.col("r.currency").alias("currency"),
        F.col("r.stock").alias("stock"),
        F.to_timestamp("r.meta.updatedAt").alias("source_updated_at"),
    )
    content = F.to_json(F.struct(*(F.col(name) for name in CONTENT_COLUMNS)))
    return offers.withColumn("content_hash", F.xxhash64(content))


def deduplicate(offers: DataFrame) -> DataFrame:
    """One offer per ``source_key``: the latest update, ties to the larger content hash."""
    window = Window.partitionBy("source_key").orderBy(
        F.col("source_updated_at").desc_nulls_last(), F.col("content_hash").desc()
    )
    return offers.withColumn("copy", F.row_number().over(window)).where("copy = 1").drop("copy")


def classify(offers: DataFrame, stored: DataFrame) -> DataFrame:
    """Each offer as ``insert`` (key never stored), ``unchanged`` (same hash as a live stored
    offer) or ``update`` (anything else: new content, or an offer coming back after a
    retirement). ``stored`` holds (source_key, content_hash, deleted_at) of the source."""
    known = stored.select(
        "source_key",
        F.col("content_hash").alias("stored_hash"),
        F.col("deleted_at").alias("stored_deleted_at"),
    )
    change = (
        F.when(F.col("stored_hash").isNull(), "insert")
        .when(
            (F.col("stored_hash") == F.col("content_hash")) & F.col("stored_deleted_at").isNull(),
            "unchanged",
        )
        .otherwise("update")
    )
    return offers.join(known, "source_key", "left").withColumn("change", change)


def offer_changes(
    classified: DataFrame, stored: DataFrame, snapshot_keys: DataFrame, retire: bool
) -> DataFrame:
    """The MERGE's source: upserts (changed and new offers) and, when ``retire``, the live
    stored offers whose key the snapshot lacks."""
    upserts = classified.where("change != 'unchanged'").select(
        *OFFER_COLUMNS, F.lit("upsert").alias("op")
    )
    if not retire:
        return upserts
    gone = stored.where("deleted_at IS NULL").join(snapshot_keys, "source_key", "left_anti")
    retirements = gone.select(
        "source_id",
        "source_key",
        *(F.lit(None).alias(name) for name in CONTENT_COLUMNS),
        F.col("content_hash"),
        F.lit("retire").alias("op"),
    )
    return upserts.unionByName(retirements, allowMissingColumns=False)


def merge_snapshot(
    spark: SparkSession,
    snapshot: Snapshot,
    run_started_at: dt.datetime,
    max_retire_fraction: float = 0.1,
) -> OfferCounts:
    """Merge one snapshot (already in bronze) into silver; see the module docstring."""
    manifest = snapshot.manifest
    records = spark.table("bronze.snapshots").where(
        (F.col("source_id") == manifest.source_id) & (F.col("run_id") == manifest.run_id)
    )
    parsed = parse_offers(records, manifest.priority).cache()
    readable = parsed.where(F.col("source_key").isNotNull())
    offers = deduplicate(readable)
    stored = (
        spark.table("silver.offers")
        .where(F.col("source_id") == manifest.source_id)
        .select("source_id", "source_key", "content_hash", "deleted_at")
    )
    classified = classify(offers, stored).cache()
    tally = classified.groupBy("change").count().collect()
    by_change = {row["change"]: row["count"] for row in tally}
    totals = parsed.agg(
        F.count(F.lit(1)).alias("records"),
        F.count("source_key").alias("readable"),
        F.countDistinct("source_key").alias("distinct"),
    ).collect()[0]
    live = stored.where("deleted_at IS NULL").count()
    changes = offer_changes(classified, stored, offers.select("source_key"), manifest.complete)
    changes = changes.cache()
    retired = changes.where("op = 'retire'").count() if manifest.complete else 0
    refused = 0
    if live and retired > max_retire_fraction * live:
        log.warning(
            "%s: %d of %d live offers would be retired (more than %.0f%%): retirements refused",
            snapshot, retired, live, 100 * max_retire_fraction,
        )  # fmt: skip
        refused, retired = retired, 0
        changes = changes.where("op = 'upsert'")
    upserts = by_change.get("insert", 0) + by_change.get("update", 0)
    if upserts + retired:
        changes.createOrReplaceTempView("offer_changes")
        args = {
            "source_id": manifest.source_id,
            "run_id": manifest.run_id,
            "run_started_at": run_started_at,
        }
        run_sql_file(spark, "merge_offers", args)
    for frame in (parsed, classified, changes):
        frame.unpersist()
    return OfferCounts(
        source_id=manifest.source_id,
        run_id=manifest.run_id,
        complete=manifest.complete,
        records=int(totals["records"]),
        rejected=int(totals["records"] - totals["readable"]),
        duplicates=int(totals["readable"] - totals["distinct"]),
        inserted=by_change.get("insert", 0),
        updated=by_change.get("update", 0),
        unchanged=by_change.get("unchanged", 0),
        retired=retired,
        retirements_refused=refused,
    )
