"""Every matching and survivorship rule of the Spark job, given -> expect, in local Spark.

The cases are the design's own (``data_at_scale_design.md`` §4.2 and §4.4), run through the
functions of ``scale/rules.py`` on a real Spark session.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from scale.generate import gtin13, gtin_check_digit

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OFFER_SCHEMA = (
    "golden_key string, source_id string, source_key string, priority int, gtin string, "
    "mpn string, brand string, title string, description string, category string, "
    "price decimal(12,2), currency string, stock int, source_updated_at timestamp, run_id bigint"
)
NOON = dt.datetime(2026, 11, 25, 12, 0)


def offer(**fields: Any) -> dict[str, Any]:
    """An offer with harmless defaults; ``fields`` override them."""
    row: dict[str, Any] = {
        "golden_key": "g1",
        "source_id": "s1",
        "source_key": "1",
        "priority": 1,
        "gtin": None,
        "mpn": None,
        "brand": "Colombo",
        "title": "Creme brulee 250 g",
        "description": "A dessert",
        "category": "desserts",
        "price": Decimal("4.99"),
        "currency": "USD",
        "stock": 10,
        "source_updated_at": NOON,
        "run_id": 1,
    }
    row.update(fields)
    if isinstance(row["price"], str):
        row["price"] = Decimal(row["price"])
    return row


def frame(spark: Any, rows: list[dict[str, Any]]) -> Any:
    names = [part.split()[0] for part in OFFER_SCHEMA.split(", ")]
    return spark.createDataFrame([tuple(row[name] for name in names) for row in rows], OFFER_SCHEMA)


def golden(spark: Any, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Survivorship over offers whose golden key is given: golden rows by key."""
    from pyspark.sql import functions as F

    from scale.rules import cluster, normalise_gtin, survive

    offers = frame(spark, rows).withColumn("gtin14", normalise_gtin(F.col("gtin")))
    result = survive(cluster(offers)).collect()
    return {row["golden_key"]: row.asDict() for row in result}


def test_the_generator_writes_gtins_whose_check_digit_is_valid() -> None:
    assert gtin_check_digit("629104150021") == 3
    assert all(gtin_check_digit(g[:12]) == int(g[12]) for g in map(gtin13, range(1, 500)))


def test_gtin_normalisation_keeps_only_valid_gs1_keys_r_m1(spark: Any) -> None:
    from pyspark.sql import functions as F

    from scale.rules import normalise_gtin

    cases = {
        "629104150021-3": "06291041500213",  # hyphen stripped, padded to 14, check digit 3
        "06291041500213": "06291041500213",  # already 14 digits
        "6291041500214": None,  # wrong check digit
        "2012345678903": None,  # valid check digit, in-store prefix 201
        "0212345678909": None,  # in-store prefix 021 (13-digit form starts with 02)
        "00000000000000": None,  # all zeros
        "96385074": "00000096385074",  # a valid GTIN-8
        "12345": None,  # not 8, 12, 13 or 14 digits
        "62910415002A3": None,  # not digits
    }
    rows = spark.createDataFrame([(raw,) for raw in cases], "gtin string")
    result = rows.select("gtin", normalise_gtin(F.col("gtin")).alias("key")).collect()
    assert {row["gtin"]: row["key"] for row in result} == cases


def test_offers_link_by_gtin_across_sources_then_by_brand_and_mpn_r_m2_r_m3(spark: Any) -> None:
    from scale.rules import golden_keys

    rows = [
        # R-M2: the same GTIN, written as 13 and as 14 digits, from two sources.
        offer(source_id="s1", source_key="o1", gtin="6291041500213", mpn="CB-250"),
        offer(source_id="s2", source_key="o2", gtin="06291041500213"),
        # R-M3: no GTIN, but the brand and MPN of o1 (other case, spaces): o1's golden product.
        offer(source_id="s3", source_key="o3", brand="colombo", mpn="cb 250"),
        # R-M3 alone: two sources, no GTIN anywhere, brand "Diablo", MPN DX-1.
        offer(source_id="s1", source_key="o4", brand="Diablo", mpn="DX-1"),
        offer(source_id="s2", source_key="o5", brand="DIABLO", mpn="dx1"),
        # Equal seller keys and MPN-less offers never link across sources.
        offer(source_id="s1", source_key="00RCH45Q", brand="Acme"),
        offer(source_id="s2", source_key="00RCH45Q", brand="Other"),
        # A wrong check digit is not a key: this offer stays alone.
        offer(source_id="s3", source_key="o8", gtin="6291041500214"),
    ]
    keys = {
        (r["source_id"], r["source_key"]): r["golden_key"]
        for r in golden_keys(frame(spark, rows)).collect()
    }
    assert keys[("s1", "o1")] == keys[("s2", "o2")] == keys[("s3", "o3")] == "gtin:06291041500213"
    assert keys[("s1", "o4")] == keys[("s2", "o5")] == "mpn:diablo|DX1"
    assert keys[("s1", "00RCH45Q")] == "offer:s1:00RCH45Q"
    assert keys[("s2", "00RCH45Q")] == "offer:s2:00RCH45Q"
    assert keys[("s3", "o8")] == "offer:s3:o8"


def test_text_normalisation_strips_accents_and_splits_units_as_the_design_says(
    spark: Any,
) -> None:
    from pyspark.sql import functions as F

    from scale.rules import golden_keys, normalise_text

    full_width = "\uff23\uff52\uff45\uff4d\uff45"  # "Creme" in full-width letters
    given = ["Crème Brûlée d'Été & Co, 250 g", "Creme Brulee d'Ete & Co 250g", full_width]
    texts = spark.createDataFrame([(text,) for text in given], "text string")
    result = [row[0] for row in texts.select(normalise_text(F.col("text"))).collect()]
    assert result == ["creme brulee d ete co 250 g", "creme brulee d ete co 250 g", "creme"]
    # So R-M3 links a brand written with accents to the same brand written without.
    rows = [
        offer(source_id="s1", source_key="o1", brand="Crème Délice", mpn="CD-1"),
        offer(source_id="s2", source_key="o2", brand="CREME DELICE", mpn="cd1"),
    ]
    keys = {r["source_key"]: r["golden_key"] for r in golden_keys(frame(spark, rows)).collect()}
    assert keys == {"o1": "mpn:creme delice|CD1", "o2": "mpn:creme delice|CD1"}


def test_survivorship_follows_the_design_cases_r_s1_to_r_s5(spark: Any) -> None:
    rows = [
        # R-S1: titles "A" (1), "B" (2) -> "A".
        offer(golden_key="t1", source_id="s1", priority=1, title="A"),
        offer(golden_key="t1", source_id="s2", priority=2, title="B"),
        # R-S1: "" (1), "B" (2) -> "B".
        offer(golden_key="t2", source_id="s1", priority=1, title=""),
        offer(golden_key="t2", source_id="s2", priority=2, title="B"),
        # R-S2: "Colombo" from two offers (3), "Columbo" from one (1): 0.67 against 1.
        offer(golden_key="b1", source_id="s3", source_key="1", priority=3, brand="Colombo"),
        offer(golden_key="b1", source_id="s3", source_key="2", priority=3, brand="COLOMBO"),
        offer(golden_key="b1", source_id="s1", priority=1, brand="Columbo"),
        # R-S4: (4.99, 120), (4.49, 0), (4.79, 8) -> 4.79; add (0.05, 9): median 4.64,
        # 0.05 < 4.64 / 5 -> excluded as an outlier, best price still 4.79.
        offer(golden_key="p1", source_id="s1", price="4.99", stock=120),
        offer(golden_key="p1", source_id="s2", price="4.49", stock=0),
        offer(golden_key="p1", source_id="s3", price="4.79", stock=8),
        offer(golden_key="p1", source_id="s4", price="0.05", stock=9),
        # R-S5: one source reports 8 (older) and 6 (newer): it counts 6, once; another adds 10.
        offer(golden_key="k1", source_id="s2", source_key="a", stock=8, source_updated_at=NOON),
        offer(
            golden_key="k1",
            source_id="s2",
            source_key="b",
            stock=6,
            source_updated_at=NOON + dt.timedelta(minutes=10),
        ),
        offer(golden_key="k1", source_id="s1", stock=10),
        # No offer in stock: no best price, out of stock.
        offer(golden_key="z1", stock=0),
    ]
    result = golden(spark, rows)
    assert result["t1"]["title"] == "A"
    assert result["t2"]["title"] == "B"
    assert result["b1"]["brand"] == "Columbo"
    assert (result["p1"]["best_price"], result["p1"]["best_price_source"]) == (
        Decimal("4.79"),
        "s3",
    )
    assert result["p1"]["price_outliers"] == 1
    assert (result["k1"]["total_stock"], result["k1"]["availability"]) == (16, "in_stock")
    assert (result["k1"]["offer_count"], result["k1"]["source_count"]) == (3, 2)
    assert result["z1"]["best_price"] is None
    assert result["z1"]["availability"] == "out_of_stock"


def test_the_tie_break_order_is_total_and_the_result_the_same_on_every_run(spark: Any) -> None:
    later = NOON + dt.timedelta(minutes=5)
    rows = [
        # Two priority-2 titles: "X" updated 11:00 ... "Y" at 11:05 -> "Y".
        offer(golden_key="x", source_id="s1", priority=2, title="X"),
        offer(golden_key="x", source_id="s2", priority=2, title="Y", source_updated_at=later),
        # Same priority, update time and run: the smaller source id wins.
        offer(golden_key="y", source_id="s9", priority=2, title="Nine"),
        offer(golden_key="y", source_id="s1", priority=2, title="One"),
        # R-S2 tie (one vote of weight 1 each): the best-ranked offer's value.
        offer(golden_key="v", source_id="s2", priority=1, brand="Beta", source_updated_at=later),
        offer(golden_key="v", source_id="s1", priority=1, brand="Alpha"),
        # R-S4 tie on price: the better-ranked source is named.
        offer(golden_key="w", source_id="s2", priority=2, price="3.10"),
        offer(golden_key="w", source_id="s1", priority=3, price="3.10"),
    ]
    first, second = golden(spark, rows), golden(spark, list(reversed(rows)))
    assert first == second
    assert first["x"]["title"] == "Y"
    assert first["y"]["title"] == "One"
    assert first["v"]["brand"] == "Beta"
    assert first["w"]["best_price_source"] == "s2"


def test_a_change_in_any_survived_attribute_changes_the_golden_content_hash(spark: Any) -> None:
    base = [offer(golden_key="g", source_id="s1"), offer(golden_key="g", source_id="s2")]
    cheaper = [base[0], offer(golden_key="g", source_id="s2", price="4.98")]
    hashes = {golden(spark, rows)["g"]["content_hash"] for rows in (base, base, cheaper)}
    assert len(hashes) == 2
