"""Gold: golden products from the live offers, and the changes the serving database needs.

Each run recomputes every golden product from silver's live offers (``scale.rules``), then, as
silver does, compares it with the stored one by content hash before its MERGE
(``scale/sql/merge_golden.sql``): new and changed golden products are upserted, golden products
no live offer supports any more are retired, and every changed row is stamped with the run's
number. The serving database's change set is the rows stamped after the run it last published.

A golden product's ``golden_id`` is a surrogate (R-I1): a new ``golden_key`` gets the next ids,
in key order, and keeps its id for good (a retired product that comes back has it again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from scale.lake import run_sql_file
from scale.rules import GOLDEN_ATTRIBUTES, golden_products

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

GOLDEN_COLUMNS = ("golden_id", "golden_key", *GOLDEN_ATTRIBUTES, "content_hash")


@dataclass(frozen=True)
class GoldCounts:
    """What one run did to gold."""

    golden: int  # active golden products after the run
    inserted: int
    updated: int
    unchanged: int
    retired: int

    def line(self) -> str:
        """One summary line."""
        return (
            f"gold: {self.golden:,} golden products ({self.inserted:,} new, {self.updated:,} "
            f"changed, {self.unchanged:,} unchanged, {self.retired:,} retired)"
        )


def live_offers(spark: SparkSession) -> DataFrame:
    """Silver's offers that are not soft-deleted."""
    return spark.table("silver.offers").where("deleted_at IS NULL")


def with_golden_ids(candidates: DataFrame, stored: DataFrame) -> DataFrame:
    """Candidates with their stored ``golden_id``, or the next free ids for new keys."""
    ids = stored.select("golden_key", "golden_id")
    joined = candidates.join(ids, "golden_key", "left")
    top = stored.agg(F.max("golden_id")).collect()[0][0] or 0
    fresh = Window.orderBy("golden_key")  # one partition, but only over the new keys
    new = joined.where("golden_id IS NULL").withColumn(
        "golden_id", F.row_number().over(fresh) + F.lit(top)
    )
    return joined.where("golden_id IS NOT NULL").unionByName(new)


def golden_changes(candidates: DataFrame, stored: DataFrame) -> DataFrame:
    """The gold MERGE's source: upserts (new, changed, or back from retirement) and retirements
    (active stored products without a candidate), each with a ``change`` label for counting."""
    known = stored.select(
        "golden_key",
        F.col("content_hash").alias("stored_hash"),
        F.col("status").alias("stored_status"),
    )
    change = (
        F.when(F.col("stored_hash").isNull(), "insert")
        .when(
            (F.col("stored_hash") == F.col("content_hash")) & (F.col("stored_status") == "active"),
            "unchanged",
        )
        .otherwise("update")
    )
    classified = candidates.join(known, "golden_key", "left").withColumn("change", change)
    upserts = classified.select(*GOLDEN_COLUMNS, "change", F.lit("upsert").alias("op"))
    gone = stored.where("status = 'active'").join(candidates, "golden_key", "left_anti")
    retirements = gone.select(
        "golden_id",
        "golden_key",
        *(F.lit(None).alias(name) for name in GOLDEN_ATTRIBUTES),
        "content_hash",
        F.lit("retire").alias("change"),
        F.lit("retire").alias("op"),
    )
    return upserts.unionByName(retirements)


def build_gold(spark: SparkSession, reconcile_run: int) -> GoldCounts:
    """Recompute the golden products and MERGE the changed ones into ``gold.products``."""
    stored = spark.table("gold.products")
    candidates = with_golden_ids(golden_products(live_offers(spark)), stored)
    changes = golden_changes(candidates, stored).cache()
    counts = {row["change"]: row["count"] for row in changes.groupBy("change").count().collect()}
    changed = changes.where("change != 'unchanged'")
    if changed.limit(1).count():
        changed.drop("change").createOrReplaceTempView("golden_changes")
        run_sql_file(spark, "merge_golden", {"reconcile_run": reconcile_run})
    changes.unpersist()
    golden = counts.get("insert", 0) + counts.get("update", 0) + counts.get("unchanged", 0)
    return GoldCounts(
        golden=golden,
        inserted=counts.get("insert", 0),
        updated=counts.get("update", 0),
        unchanged=counts.get("unchanged", 0),
        retired=counts.get("retire", 0),
    )


def changed_since(spark: SparkSession, published_run: int) -> DataFrame:
    """Gold rows changed after ``published_run``: what the serving database has not seen."""
    return spark.table("gold.products").where(F.col("changed_run") > published_run)
