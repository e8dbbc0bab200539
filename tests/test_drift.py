"""The drift profile and the extras, on products built in code: given these products, expect."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from data_pipeline import SOURCE_SHAPE
from etl.drift import Drift, DriftChange, DriftProfile, unknown_fields
from tools.local_api import make_product


def profile(products: list[dict[str, Any]]) -> set[Drift]:
    drift = DriftProfile(SOURCE_SHAPE)
    for product in products:
        drift.observe(product, product["id"])
    return set(drift.drifts())


def products(n: int = 20) -> list[dict[str, Any]]:
    return [make_product(i) for i in range(1, n + 1)]


def test_a_catalog_as_dummyjson_serves_it_shows_no_drift() -> None:
    # brand is absent from some products (optional), numbers are ints or decimals: no drift.
    catalog = products(200)
    assert any("brand" not in product for product in catalog)
    assert profile(catalog) == set()


def test_a_field_absent_from_some_products_is_counted_with_the_first_as_example() -> None:
    catalog = products()
    for product in catalog[5:8]:
        del product["meta"]["barcode"]

    assert profile(catalog) == {
        Drift(DriftChange.VANISHED, "meta.barcode", "string", None, 3, 6),
    }


def test_a_review_field_counts_products_not_reviews() -> None:
    catalog = [product for product in products(40) if len(product["reviews"]) >= 2]
    for product in catalog[:4]:
        for review in product["reviews"]:
            review["verified"] = True

    assert profile(catalog) == {
        Drift(DriftChange.NEW, "reviews[].verified", None, "boolean", 4, catalog[0]["id"]),
    }


def test_a_retyped_field_is_reported_once_per_type_seen() -> None:
    catalog = products()
    catalog[0]["price"] = "9.99"
    catalog[1]["price"] = None
    catalog[2]["dimensions"] = "10x20x5"

    assert profile(catalog) == {
        Drift(DriftChange.RETYPED, "price", "number", "string", 1, 1),
        Drift(DriftChange.RETYPED, "price", "number", "null", 1, 2),
        Drift(DriftChange.RETYPED, "dimensions", "object", "string", 1, 3),
    }


def test_a_product_without_its_nested_object_reports_the_object_not_its_fields() -> None:
    catalog = products(3)
    del catalog[1]["dimensions"]

    assert profile(catalog) == {Drift(DriftChange.VANISHED, "dimensions", "object", None, 1, 2)}


def test_unknown_fields_are_nested_as_the_source_nests_them() -> None:
    product = make_product(1)
    assert unknown_fields(product, SOURCE_SHAPE) is None
    evolved = copy.deepcopy(product)
    evolved["color"] = "red"
    evolved["meta"]["batch"] = Decimal("7.5")
    evolved["reviews"][1]["likes"] = 3

    expected_reviews: list[dict[str, Any]] = [{} for _ in evolved["reviews"]]
    expected_reviews[1] = {"likes": 3}
    assert unknown_fields(evolved, SOURCE_SHAPE) == {
        "color": "red",
        "meta": {"batch": Decimal("7.5")},
        "reviews": expected_reviews,
    }
