"""Gold: golden products from the live offers, and the changes the serving database needs.

Each run gives every live offer its golden key (matching, ``scale.rules``), then recomputes only
the golden products whose offers changed since the last build: ``gold.offer_keys`` holds each
live offer's key, content hash and run as that build saw them, and a key is touched when an
offer that has it now, or had it then, is new, gone, changed or moved to another key (an offer
linked by brand + MPN moves when another offer's GTIN does, without changing itself). A golden
product depends only on its key's offers, so the others stay as stored. Without
``gold.offer_keys`` rows (the first run, or after deleting them when the rules change) every
golden product is recomputed.

The recomputed golden products are compared, as silver does, with the stored ones by content
hash before the MERGE (``scale/sql/merge_golden.sql``): new and changed golden products are
upserted, touched ones no live offer supports any more are retired, and every changed row is
stamped with the run's number; then ``gold.offer_keys`` is rewritten. The serving database's
change set is the rows stamped after the run it last published. A run that stops between the two
commits recomputes those keys again next time, and finds them unchanged.

A golden product's ``golden_id`` is a surrogate (R-I1): a new ``golden_key`` gets the next ids,
in key order, and keeps its id for good (a retired product that comes back has it again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import reduce
from operator import and_
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from scale.lake import run_sql_file
from scale.rules import GOLDEN_ATTRIBUTES, cluster, golden_keys, survive

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

GOLDEN_COLUMNS = ("golden_id", "golden_key", *GOLDEN_ATTRIBUTES, "content_hash")
OFFER_KEY_COLUMNS = ("source_id", "source_key", "golden_key", "content_hash", "run_id")


@dataclass(frozen=True)
class GoldCounts:
    """What one run did to gold."""

    golden: int  # active golden products after the run
    inserted: int
    updated: int
    unchanged: int
    retired: int
    recomputed: int  # golden keys whose offers changed, recomputed this run

    def line(self) -> str:
        """One summary line."""
        return (
            f"gold: {self.golden:,} golden products ({self.inserted:,} new, {self.updated:,} "
            f"changed, {self.unchanged:,} unchanged, {self.retired:,} retired; "
            f"{self.recomputed:,} recomputed)"
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


def touched_keys(offer_keys: DataFrame, built: DataFrame) -> DataFrame:
    """The golden keys to recompute: now and at the last build (``built``), the key of every
    offer that is new, gone, or differs in key, content hash or run."""
    compared = OFFER_KEY_COLUMNS[2:]
    now = offer_keys.select(
        "source_id", "source_key", *(F.col(c).alias(f"{c}_now") for c in compared)
    )
    then = built.select("source_id", "source_key", *(F.col(c).alias(f"{c}_then") for c in compared))
    same = reduce(and_, (F.col(f"{c}_now").eqNullSafe(F.col(f"{c}_then")) for c in compared))
    differ = now.join(then, ["source_id", "source_key"], "full_outer").where(~same)
    keys = differ.select(F.col("golden_key_now").alias("golden_key")).union(
        differ.select(F.col("golden_key_then").alias("golden_key"))
    )
    return keys.where("golden_key IS NOT NULL").distinct()


def build_gold(spark: SparkSession, reconcile_run: int) -> GoldCounts:
    """Recompute the golden products whose offers changed, MERGE the changed ones into
    ``gold.products`` and record every live offer's key in ``gold.offer_keys``."""
    stored = spark.table("gold.products")
    every_offer = golden_keys(live_offers(spark)).cache()
    keyed, offer_keys = every_offer, every_offer.select(*OFFER_KEY_COLUMNS)
    built = spark.table("gold.offer_keys")
    everything = not built.limit(1).count()
    kept = 0  # active golden products left as stored
    touched = None
    if not everything:
        touched = touched_keys(offer_keys, built).cache()
        keyed = keyed.join(touched, "golden_key", "left_semi")
        active = stored.where("status = 'active'")
        kept = active.join(touched, "golden_key", "left_anti").count()
        stored = stored.join(touched, "golden_key", "left_semi")
    candidates = with_golden_ids(survive(cluster(keyed)), spark.table("gold.products"))
    changes = golden_changes(candidates, stored).cache()
    counts = {row["change"]: row["count"] for row in changes.groupBy("change").count().collect()}
    changed = changes.where("change != 'unchanged'")
    if changed.limit(1).count():
        changed.drop("change").createOrReplaceTempView("golden_changes")
        run_sql_file(spark, "merge_golden", {"reconcile_run": reconcile_run})
    if everything or counts:
        offer_keys.writeTo("gold.offer_keys").overwrite(F.lit(True))
    for frame in (changes, touched, every_offer):
        if frame is not None:
            frame.unpersist()
    still_active = sum(counts.get(c, 0) for c in ("insert", "update", "unchanged"))
    return GoldCounts(
        golden=kept + still_active,
        inserted=counts.get("insert", 0),
        updated=counts.get("update", 0),
        unchanged=kept + counts.get("unchanged", 0),
        retired=counts.get("retire", 0),
        recomputed=still_active + counts.get("retire", 0),
    )


def changed_since(spark: SparkSession, published_run: int) -> DataFrame:
    """Gold rows changed after ``published_run``: what the serving database has not seen."""
    return spark.table("gold.products").where(F.col("changed_run") > published_run)
