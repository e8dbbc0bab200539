"""Product history: each product's versions in ``product_versions``, and how to read them.

The sync writes the versions (``etl.bulk.open_versions`` and ``write_versions``): a product it
inserts or changes gets a new version at the run's instant and its previous one is closed there;
a product it deletes has its current version closed. A version is the whole product, its
children as JSON, so the product as it was at any instant is one row: the version whose
``valid_from <= instant < valid_to`` (``valid_to`` NULL: still current).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, or_, select
from sqlalchemy.orm import Session

from etl.bulk import VERSIONED_COLUMNS
from etl.errors import ConfigError
from models import ProductVersion


def version_as_of(conn: Connection, product_id: int, instant: dt.datetime) -> ProductVersion | None:
    """The version of a product that was current at ``instant``, or None (not yet, or gone)."""
    query = select(ProductVersion).where(
        ProductVersion.product_id == product_id,
        ProductVersion.valid_from <= instant,
        or_(ProductVersion.valid_to.is_(None), ProductVersion.valid_to > instant),
    )
    with Session(conn) as session:
        return session.scalars(query).first()


def versions_of(conn: Connection, product_id: int) -> list[ProductVersion]:
    """Every version of a product, oldest first."""
    query = (
        select(ProductVersion)
        .where(ProductVersion.product_id == product_id)
        .order_by(ProductVersion.valid_from)
    )
    with Session(conn) as session:
        return list(session.scalars(query))


def parse_instant(text: str) -> dt.datetime:
    """An ISO-8601 instant (``2026-12-01``, ``2026-12-01T09:30``, ``...+02:00``; UTC unless it
    says otherwise); ``ConfigError`` naming ``--as-of`` when it is not one."""
    try:
        instant = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--as-of: expected an ISO-8601 instant such as 2026-12-01T09:30:00Z, got {text!r}"
        ) from None
    return instant.replace(tzinfo=dt.UTC) if instant.tzinfo is None else instant


def product_document(version: ProductVersion) -> dict[str, Any]:
    """The product as that version holds it: its columns, children and validity, JSON-ready."""
    document: dict[str, Any] = {"id": version.product_id}
    document.update((name, getattr(version, name)) for name in VERSIONED_COLUMNS)
    document.update(
        tags=version.tags,
        images=version.images,
        reviews=version.reviews,
        valid_from=version.valid_from,
        valid_to=version.valid_to,
        run_id=version.run_id,
    )
    return document


def format_product(version: ProductVersion) -> str:
    """A version as indented JSON (decimals exact, instants ISO-8601)."""
    return json.dumps(product_document(version), indent=2, ensure_ascii=False, default=_plain)


def _plain(value: Any) -> str:
    """What JSON cannot hold itself: a decimal as its exact text, an instant as ISO-8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def format_versions(product_id: int, versions: Sequence[ProductVersion]) -> str:
    """A product's versions, oldest first: when each held, the run that wrote it, price and
    stock (the figures an analyst asks for first), and the title."""
    if not versions:
        return f"product {product_id}: no version recorded"
    lines = [
        f"product {product_id}: {len(versions)} version(s)",
        f"{'valid from (UTC)':<26} {'valid to (UTC)':<26} {'run':>5} {'price':>12} "
        f"{'stock':>7}  title",
    ]
    for version in versions:
        until = "current" if version.valid_to is None else _shown(version.valid_to)
        stock = "" if version.stock is None else str(version.stock)
        lines.append(
            f"{_shown(version.valid_from):<26} {until:<26} {version.run_id:>5} "
            f"{version.price:>12} {stock:>7}  {version.title}"
        )
    return "\n".join(lines)


def _shown(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
