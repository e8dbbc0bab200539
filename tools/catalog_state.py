"""Whole-catalog comparison for tests: what the API serves vs what the database holds.

Both sides are reduced to the same plain shape, ``{id: {column: value, ..., "tags": [...],
"images": [...], "reviews": [...]}}``, built independently: the served side straight from the
JSON the server sends (decimals exact), the database side with plain ``select()``. A test then
asserts ``database_catalog(engine) == served_catalog(url)``, every product, field and child.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import requests
from sqlalchemy import Engine, func, or_, select, text

from models import Product, ProductImage, ProductTag, ProductVersion, Review

# Product column -> how to read it from a served product.
SCALARS: dict[str, tuple[str, ...]] = {
    "title": ("title",),
    "description": ("description",),
    "category": ("category",),
    "price": ("price",),
    "discount_percentage": ("discountPercentage",),
    "rating": ("rating",),
    "stock": ("stock",),
    "brand": ("brand",),
    "sku": ("sku",),
    "weight": ("weight",),
    "width": ("dimensions", "width"),
    "height": ("dimensions", "height"),
    "depth": ("dimensions", "depth"),
    "warranty_information": ("warrantyInformation",),
    "shipping_information": ("shippingInformation",),
    "availability_status": ("availabilityStatus",),
    "return_policy": ("returnPolicy",),
    "minimum_order_quantity": ("minimumOrderQuantity",),
    "created_at": ("meta", "createdAt"),
    "updated_at": ("meta", "updatedAt"),
    "barcode": ("meta", "barcode"),
    "qr_code": ("meta", "qrCode"),
    "thumbnail": ("thumbnail",),
}
TIMESTAMPS = {"created_at", "updated_at"}
REVIEW_KEYS = ("rating", "comment", "date", "reviewerName", "reviewerEmail")
# Every key the mapping reads, per object: the rest of a served product belongs in ``extras``.
KNOWN_KEYS: dict[str, set[str]] = {
    "": {"id", "tags", "images", "reviews"} | {path[0] for path in SCALARS.values()},
    "dimensions": {path[1] for path in SCALARS.values() if path[0] == "dimensions"},
    "meta": {path[1] for path in SCALARS.values() if path[0] == "meta"},
}


def _dig(product: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = product
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _normal(value: Any) -> Any:
    """Numbers as Decimal (so 10 == 10.00), everything else unchanged."""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return Decimal(str(value)).normalize()
    return value


def _normal_json(value: Any) -> Any:
    """A JSON value with every number as an exact Decimal (so 0.5 == Decimal("0.5"))."""
    if isinstance(value, dict):
        return {key: _normal_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normal_json(item) for item in value]
    return _normal(value)


def _served_extras(product: dict[str, Any]) -> dict[str, Any] | None:
    """The values of the fields the mapping does not read, nested as the product nests them."""
    extras = {k: v for k, v in product.items() if k not in KNOWN_KEYS[""]}
    for container in ("dimensions", "meta"):
        nested = product.get(container) or {}
        unknown = {k: v for k, v in nested.items() if k not in KNOWN_KEYS[container]}
        if unknown:
            extras[container] = unknown
    reviews = [
        {k: v for k, v in review.items() if k not in REVIEW_KEYS}
        for review in product.get("reviews") or []
    ]
    if any(reviews):
        extras["reviews"] = reviews
    return _normal_json(extras) if extras else None


def _timestamp(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value).astimezone(dt.UTC)


def served_products(api_url: str) -> list[dict[str, Any]]:
    """Every product the server serves, decoded with exact decimals."""
    response = requests.get(f"{api_url}/products", params={"limit": 0}, timeout=30)
    response.raise_for_status()
    return list(json.loads(response.content, parse_float=Decimal)["products"])


def served_catalog(api_url: str, exclude: set[int] | None = None) -> dict[int, dict[str, Any]]:
    """The served catalog in the comparison shape (``exclude``: ids expected to be rejected)."""
    catalog = {}
    for product in served_products(api_url):
        if exclude and product.get("id") in exclude:
            continue
        row: dict[str, Any] = {}
        for column, path in SCALARS.items():
            value = _dig(product, path)
            row[column] = _timestamp(value) if column in TIMESTAMPS else _normal(value)
        row["tags"] = list(product.get("tags") or [])
        row["images"] = list(product.get("images") or [])
        row["reviews"] = [
            (
                _normal(review.get("rating")),
                review.get("comment"),
                _timestamp(review.get("date")),
                review.get("reviewerName"),
                review.get("reviewerEmail"),
            )
            for review in product.get("reviews") or []
        ]
        row["extras"] = _served_extras(product)
        catalog[product["id"]] = row
    return catalog


def database_catalog(engine: Engine) -> dict[int, dict[str, Any]]:
    """The database's catalog in the comparison shape, read with plain selects."""
    catalog: dict[int, dict[str, Any]] = {}
    with engine.connect() as conn:
        for product in conn.execute(select(Product.__table__)).mappings():
            row = {column: _normal(product[column]) for column in SCALARS}
            row.update(tags=[], images=[], reviews=[], extras=_normal_json(product["extras"]))
            catalog[product["id"]] = row
        tags = select(ProductTag.product_id, ProductTag.tag).order_by(
            ProductTag.product_id, ProductTag.position
        )
        for product_id, tag in conn.execute(tags):
            catalog[product_id]["tags"].append(tag)
        images = select(ProductImage.product_id, ProductImage.url).order_by(
            ProductImage.product_id, ProductImage.position
        )
        for product_id, url in conn.execute(images):
            catalog[product_id]["images"].append(url)
        reviews = select(
            Review.product_id,
            Review.rating,
            Review.comment,
            Review.date,
            Review.reviewer_name,
            Review.reviewer_email,
        ).order_by(Review.product_id, Review.position)
        for product_id, *fields in conn.execute(reviews):
            fields[0] = _normal(fields[0])
            catalog[product_id]["reviews"].append(tuple(fields))
    return catalog


def versioned_catalog(engine: Engine, instant: dt.datetime) -> dict[int, dict[str, Any]]:
    """The catalog as ``product_versions`` says it was at ``instant``, in the comparison shape
    (the versions current then: ``valid_from <= instant < valid_to``, NULL ``valid_to`` open)."""
    versions = ProductVersion.__table__
    query = select(versions).where(
        versions.c.valid_from <= instant,
        or_(versions.c.valid_to.is_(None), versions.c.valid_to > instant),
    )
    catalog: dict[int, dict[str, Any]] = {}
    with engine.connect() as conn:
        for version in conn.execute(query).mappings():
            row = {column: _normal(version[column]) for column in SCALARS}
            row["tags"] = list(version["tags"])
            row["images"] = list(version["images"])
            row["reviews"] = [
                (
                    _normal(review["rating"]),
                    review["comment"],
                    _timestamp(review["date"]),
                    review["reviewer_name"],
                    review["reviewer_email"],
                )
                for review in version["reviews"]
            ]
            row["extras"] = _normal_json(version["extras"])
            catalog[version["product_id"]] = row
    return catalog


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows per catalog table."""
    with engine.connect() as conn:
        return {
            model.__tablename__: conn.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Product, ProductTag, ProductImage, Review)
        }


_KEYS = {
    "products": "id",
    "product_tags": "product_id, position",
    "product_images": "product_id, position",
    "reviews": "product_id, position",
}


def row_versions(engine: Engine) -> dict[str, set[tuple[Any, ...]]]:
    """Every catalog row's key with its physical version (PostgreSQL's ``xmin``).

    A row that is updated, or deleted and inserted again, gets a new ``xmin``: comparing two
    snapshots shows exactly which rows a run wrote, whatever the run itself reports.
    """
    with engine.connect() as conn:
        return {
            table: {
                tuple(row) for row in conn.execute(text(f"SELECT {key}, xmin::text FROM {table}"))
            }
            for table, key in _KEYS.items()
        }


def install_write_log(engine: Engine) -> None:
    """SQLite has no row versions: triggers log each write to a catalog table instead."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS write_log (tbl TEXT, op TEXT, pid INTEGER)"))
        for table, key in _KEYS.items():
            product_key = key.split(",")[0]
            for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
                conn.execute(
                    text(
                        f"CREATE TRIGGER IF NOT EXISTS log_{table}_{op.lower()} AFTER {op} ON "
                        f"{table} BEGIN INSERT INTO write_log "
                        f"VALUES ('{table}', '{op}', {row}.{product_key}); END"
                    )
                )


def write_snapshot(engine: Engine) -> Any:
    """A mark to compare against with ``products_written_since``."""
    if engine.dialect.name == "postgresql":
        return row_versions(engine)
    install_write_log(engine)
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM write_log")).scalar_one())


def products_written_since(engine: Engine, before: Any) -> set[int]:
    """The ids of products any of whose catalog rows were written since ``before``."""
    if engine.dialect.name == "postgresql":
        after = row_versions(engine)
        return {key[0] for table in _KEYS for key in before[table] ^ after[table]}
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT pid FROM write_log LIMIT -1 OFFSET :n"), {"n": before})
        return {pid for (pid,) in rows}
