"""The matching and survivorship rules of ``data_at_scale_design.md`` §4, one function each.

Each function takes and returns Spark DataFrames (or builds a Column), so that the same code runs
in a test on ten rows and on a cluster on hundreds of millions; ``tests/test_scale_rules.py``
holds one given -> expect test per rule. Built here: R-M1 GTIN normalisation, R-M2 exact GTIN,
R-M3 brand + MPN, the total tie-break order, R-S1 text, R-S2 weighted votes, R-S3 GTIN, R-S4
best in-stock price with outliers excluded, R-S5 total stock. Not built (the design's later
steps): blocked fuzzy matching (R-M4, R-M5), GTIN suspicion (R-M7), overrides (R-S0),
staleness windows, images and reviews (R-S6, R-S7), golden merges and splits (R-I2, R-I3).
"""

from __future__ import annotations

import unicodedata
from functools import cache
from typing import TYPE_CHECKING

from pyspark.sql import Column, Window, WindowSpec
from pyspark.sql import functions as F

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

OUTLIER_FACTOR = 5  # R-S4: a price above 5x or below 1/5 of its cluster's median is excluded
# R-M1: 8, 12, 13 or 14 digits once spaces and hyphens are stripped.
GTIN_DIGITS = r"^([0-9]{8}|[0-9]{12,14})$"


# --------------------------------------------------------------------------- normalisation


def normalise_gtin(gtin: Column) -> Column:
    """R-M1: the GTIN as 14 digits when it is a key, else null: stripped of spaces and hyphens,
    8/12/13/14 digits, left-padded to 14, GS1 check digit valid, not all zeros, and not an
    in-store number (13-digit form starting with 2 or 02)."""
    digits = F.regexp_replace(gtin, r"[\s-]", "")
    padded = F.lpad(digits, 14, "0")
    # GS1 weights 3, 1, 3, ... from the rightmost body digit: in the 14-digit form, position 0
    # (counted from the left, over the 13 body digits) has weight 3.
    weighted = [
        F.substring(padded, i + 1, 1).cast("int") * (3 if i % 2 == 0 else 1) for i in range(13)
    ]
    total = weighted[0]
    for term in weighted[1:]:
        total = total + term
    check = (F.lit(10) - total % 10) % 10
    thirteen = F.substring(padded, 2, 13)
    is_key = (
        digits.rlike(GTIN_DIGITS)
        & (check == F.substring(padded, 14, 1).cast("int"))
        & (padded != F.lit("0" * 14))
        & ~thirteen.startswith("2")
        & ~thirteen.startswith("02")
    )
    return F.when(is_key, padded)


@cache
def accent_table() -> tuple[str, str]:
    """``translate``'s two strings: each character of the Basic Multilingual Plane whose NFKD
    form without combining marks is one other character (``É`` -> ``E``, full-width ``\\uff25`` ->
    ``E``), and that character. Built once from Python's ``unicodedata`` on the driver."""
    found, plain = [], []
    for code in range(0x80, 0x10000):
        char = chr(code)
        if 0xD800 <= code < 0xE000 or unicodedata.combining(char):
            continue
        decomposed = unicodedata.normalize("NFKD", char)
        stripped = "".join(part for part in decomposed if not unicodedata.combining(part))
        if len(stripped) == 1 and stripped != char:
            found.append(char)
            plain.append(stripped)
    return "".join(found), "".join(plain)


def normalise_text(text: Column) -> Column:
    """``brand_norm``/``title_norm`` (§4.2): NFKD with combining marks removed, lower case, a
    number split from the unit after it, every run of characters that are not letters or digits
    one space, trimmed; so "Crème Brûlée, 250g" and "Creme brulee 250 g" are equal.

    Spark SQL has no NFKD: a fixed ``translate`` table does it in the JVM, for the characters
    that decompose to one letter; one that decomposes to several stays as it is (``ﬁ``, and
    ``ß``: ``lower`` is not ``casefold``). A Python UDF would be exact but several times slower
    (``benchmarks/bench_normalise.py``); a pandas UDF would need pandas and pyarrow."""
    found, plain = accent_table()
    folded = F.regexp_replace(F.translate(text, found, plain), r"\p{M}+", "")
    split = F.regexp_replace(F.lower(folded), r"(\p{N})(\p{L})", "$1 $2")
    return F.trim(F.regexp_replace(split, r"[^\p{L}\p{N}]+", " "))


def normalise_mpn(mpn: Column) -> Column:
    """``mpn_norm``: upper case with spaces, hyphens, dots and slashes removed."""
    return F.regexp_replace(F.upper(mpn), r"[\s./-]", "")


def present(text: Column) -> Column:
    """A text value counts only when it is not null and not blank."""
    return text.isNotNull() & (F.trim(text) != "")


# --------------------------------------------------------------------------- matching


def golden_keys(offers: DataFrame) -> DataFrame:
    """R-M2 then R-M3: each offer's ``golden_key``.

    An offer with a valid GTIN belongs to ``gtin:<gtin14>`` (R-M2, whatever the source). An
    offer without one but with a brand and an MPN belongs to the GTIN cluster of the offers that
    share its (``brand_norm``, ``mpn_norm``) and have a GTIN (the smallest GTIN if they disagree),
    else to ``mpn:<brand_norm>|<mpn_norm>`` (R-M3). Anything else stays alone:
    ``offer:<source_id>:<source_key>`` (a source's own key never links across sources).
    """
    keyed = (
        offers.withColumn("gtin14", normalise_gtin(F.col("gtin")))
        .withColumn("brand_norm", normalise_text(F.col("brand")))
        .withColumn("mpn_norm", normalise_mpn(F.col("mpn")))
        .withColumn(
            "mpn_key",
            F.when(
                present(F.col("brand_norm")) & present(F.col("mpn_norm")),
                F.concat(F.lit("mpn:"), F.col("brand_norm"), F.lit("|"), F.col("mpn_norm")),
            ),
        )
    )
    gtin_of_mpn = F.min("gtin14").over(Window.partitionBy("mpn_key"))
    linked = F.when(F.col("mpn_key").isNotNull(), gtin_of_mpn)
    return (
        keyed.withColumn("mpn_gtin14", linked)
        .withColumn(
            "golden_key",
            F.coalesce(
                F.concat(F.lit("gtin:"), F.col("gtin14")),
                F.concat(F.lit("gtin:"), F.col("mpn_gtin14")),
                F.col("mpn_key"),
                F.concat(F.lit("offer:"), F.col("source_id"), F.lit(":"), F.col("source_key")),
            ),
        )
        .drop("mpn_gtin14")
    )


# --------------------------------------------------------------------------- survivorship
#
# Each survivorship rule adds its golden attribute to every offer of the cluster, as a window
# over ``golden_key``. The offers are hash-partitioned by golden key once (``cluster``), so no
# rule shuffles again; ``survive`` then keeps one row per key.


def in_cluster() -> WindowSpec:
    """The window every rule aggregates over: all offers of one golden key."""
    return Window.partitionBy("golden_key")


def tie_key() -> Column:
    """The total tie-break order of §4.4 as a struct that sorts best first: priority ascending,
    the source's update time descending (unknown last), the run descending, then source id and
    source key ascending."""
    updated = F.coalesce(-F.unix_micros("source_updated_at"), F.lit(2**63 - 1))
    return F.struct(
        F.col("priority").alias("priority"),
        updated.alias("updated"),
        (-F.col("run_id")).alias("run"),
        F.col("source_id").alias("source_id"),
        F.col("source_key").alias("source_key"),
    )


def cluster(keyed: DataFrame) -> DataFrame:
    """Offers with a ``golden_key``, partitioned by it, each with its ``tie`` key."""
    return keyed.repartition("golden_key").withColumn("tie", tie_key())


def _best(value: str) -> Column:
    """Over the cluster: the value of the best-ranked offer that has one."""
    best = F.min(F.when(present(F.col(value)), F.struct(F.col("tie"), F.col(value).alias("v"))))
    return best.over(in_cluster())["v"]


def survive_text(offers: DataFrame) -> DataFrame:
    """R-S1: title and description are the best-ranked offer's non-empty values."""
    return offers.withColumn("golden_title", _best("title")).withColumn(
        "golden_description", _best("description")
    )


def survive_vote(offers: DataFrame, attribute: str) -> DataFrame:
    """R-S2: the value carried by the most offers weighted by 1/priority (compared after
    normalisation); a tie goes to the best-ranked offer's value, shown as that offer wrote it."""
    vote = normalise_text(F.col(attribute))
    voting = present(F.col(attribute))
    same_vote = Window.partitionBy("golden_key", f"{attribute}_vote")
    weight = F.round(F.sum(F.when(voting, 1.0 / F.col("priority"))).over(same_vote), 9)
    ballot = F.when(voting, F.struct((-F.col("weight")).alias("w"), "tie", F.col(attribute)))
    return (
        offers.withColumn(f"{attribute}_vote", vote)
        .withColumn("weight", weight)
        .withColumn(f"golden_{attribute}", F.min(ballot).over(in_cluster())[attribute])
        .drop("weight", f"{attribute}_vote")
    )


def survive_gtin(offers: DataFrame) -> DataFrame:
    """R-S3: the cluster's valid GTIN (R-M2 makes it unique; clusters matched by MPN alone have
    none)."""
    return offers.withColumn("golden_gtin", F.max("gtin14").over(in_cluster()))


def best_price(offers: DataFrame) -> DataFrame:
    """R-S4: the lowest price among offers in stock, in the best-ranked offer's currency (no
    exchange rates here), ties by the tie-break order, naming its source. A price above 5x or
    below 1/5 of the median of the cluster's prices in that currency (a unit or currency error)
    is excluded and counted in ``price_outliers``. With no eligible offer in stock, no price."""
    in_currency = (F.col("currency") == F.col("golden_currency")) & F.col("price").isNotNull()
    median = F.median(F.when(in_currency, F.col("price"))).over(in_cluster())
    beyond = (F.col("price") > F.col("median_price") * OUTLIER_FACTOR) | (
        F.col("price") < F.col("median_price") / OUTLIER_FACTOR
    )
    outlier = in_currency & beyond
    eligible = in_currency & ~beyond & (F.col("stock") > 0)
    best = F.min(F.when(eligible, F.struct("price", "tie", "source_id"))).over(in_cluster())
    return (
        offers.withColumn("golden_currency", _best("currency"))
        .withColumn("median_price", median)
        .withColumn("golden_best_price", best["price"])
        .withColumn("golden_best_price_source", best["source_id"])
        .withColumn("golden_price_outliers", F.sum(outlier.cast("int")).over(in_cluster()))
        .drop("median_price")
    )


def total_stock(offers: DataFrame) -> DataFrame:
    """R-S5: the sum of each source's latest offer's stock (the same warehouse seen twice counts
    once; negative stock counts as 0); in stock when that sum is above 0."""
    latest = Window.partitionBy("golden_key", "source_id").orderBy(
        F.col("source_updated_at").desc_nulls_last(), F.col("run_id").desc(), "source_key"
    )
    stock = F.greatest(F.coalesce("stock", F.lit(0)), F.lit(0))
    counted = F.when(F.col("source_latest") == 1, stock)
    total = F.coalesce(F.sum(counted).over(in_cluster()), F.lit(0)).cast("int")
    return (
        offers.withColumn("source_latest", F.row_number().over(latest))
        .withColumn("golden_total_stock", total)
        .withColumn(
            "golden_availability",
            F.when(F.col("golden_total_stock") > 0, "in_stock").otherwise("out_of_stock"),
        )
        .drop("source_latest")
    )


def count_offers(offers: DataFrame) -> DataFrame:
    """How many offers and how many sources the golden product has."""
    sources = F.size(F.collect_set("source_id").over(in_cluster()))
    return offers.withColumn("golden_offer_count", F.count(F.lit(1)).over(in_cluster())).withColumn(
        "golden_source_count", sources
    )


GOLDEN_ATTRIBUTES = (
    "gtin",
    "title",
    "description",
    "brand",
    "category",
    "best_price",
    "currency",
    "best_price_source",
    "price_outliers",
    "total_stock",
    "availability",
    "offer_count",
    "source_count",
)
RULES = (
    survive_text,
    lambda offers: survive_vote(offers, "brand"),
    lambda offers: survive_vote(offers, "category"),
    survive_gtin,
    best_price,
    total_stock,
    count_offers,
)


def survive(clustered: DataFrame) -> DataFrame:
    """Every rule, then one row per golden key with the survived attributes and a hash."""
    for rule in RULES:
        clustered = rule(clustered)
    best = clustered.withColumn("best_tie", F.min("tie").over(in_cluster()))
    golden = best.where(F.col("tie") == F.col("best_tie")).select(
        "golden_key",
        *(F.col(f"golden_{name}").alias(name) for name in GOLDEN_ATTRIBUTES),
    )
    golden = golden.withColumn("offer_count", F.col("offer_count").cast("int"))
    attributes = F.struct(*(F.col(name) for name in GOLDEN_ATTRIBUTES))
    return golden.withColumn("content_hash", F.xxhash64(F.to_json(attributes)))


def golden_products(offers: DataFrame) -> DataFrame:
    """Live offers -> golden products: matching (R-M1..R-M3), then survivorship (R-S1..R-S5)."""
    return survive(cluster(golden_keys(offers)))
