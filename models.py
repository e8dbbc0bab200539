"""Exercise 1-1: the catalog schema, as SQLAlchemy 2.x typed models.

Four catalog tables hold what DummyJSON's ``/products`` serves, normalised:

* ``products``: every scalar field, with ``dimensions`` and ``meta`` flattened into columns,
  the source ``id`` as primary key and a ``content_hash`` the production sync compares to skip
  unchanged products;
* ``product_tags``, ``product_images``, ``reviews``: one row per list element, keyed by
  ``(product_id, position)`` so the source order survives and repeated values (the same tag or
  reviewer twice) are kept, with ``ON DELETE CASCADE`` declared in the database.

Two bookkeeping tables belong to the pipelines: ``pipeline_runs`` (one row per run) and
``rejected_records`` (each product a run set aside, with the reason and the raw payload).

Run ``python models.py [--database-url URL]`` to create whatever is missing; it is idempotent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from dotenv import dotenv_values
from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    create_engine,
    event,
    func,
    inspect,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///products.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SCHEMA_LOCK_KEY = 7_301_2024  # advisory lock taken while creating the schema

# Exact decimals sized for what DummyJSON serves; the transform rejects values that would not fit
# instead of letting the database round them.
MONEY = Numeric(12, 2)
PERCENT = Numeric(5, 2)
RATING = Numeric(3, 2)
MEASURE = Numeric(10, 2)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every database.

    PostgreSQL keeps the zone (``timestamptz``); SQLite has no zone type, so values are stored as
    naive UTC and given their zone back on the way out. Both databases return the same value.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must carry a timezone")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of every table in the repository."""


class Product(Base):
    """One product as DummyJSON serves it, ``dimensions`` and ``meta`` flattened."""

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(100), index=True)
    price: Mapped[Decimal] = mapped_column(MONEY)
    discount_percentage: Mapped[Decimal | None] = mapped_column(PERCENT)
    rating: Mapped[Decimal | None] = mapped_column(RATING)
    stock: Mapped[int | None] = mapped_column(Integer)
    brand: Mapped[str | None] = mapped_column(String(200), index=True)
    sku: Mapped[str | None] = mapped_column(String(100), unique=True)
    weight: Mapped[Decimal | None] = mapped_column(MEASURE)
    width: Mapped[Decimal | None] = mapped_column(MEASURE)
    height: Mapped[Decimal | None] = mapped_column(MEASURE)
    depth: Mapped[Decimal | None] = mapped_column(MEASURE)
    warranty_information: Mapped[str | None] = mapped_column(Text)
    shipping_information: Mapped[str | None] = mapped_column(Text)
    availability_status: Mapped[str | None] = mapped_column(String(50))
    return_policy: Mapped[str | None] = mapped_column(Text)
    minimum_order_quantity: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    barcode: Mapped[str | None] = mapped_column(String(64))
    qr_code: Mapped[str | None] = mapped_column(Text)
    thumbnail: Mapped[str | None] = mapped_column(Text)
    # A 64-bit digest of the product's whole source content (children included): the sync
    # compares it to skip products that did not change, without reading their rows.
    content_hash: Mapped[int] = mapped_column(BigInteger)
    loaded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, server_default=func.now())

    tags: Mapped[list[ProductTag]] = relationship(
        back_populates="product",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ProductTag.position",
    )
    images: Mapped[list[ProductImage]] = relationship(
        back_populates="product",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ProductImage.position",
    )
    reviews: Mapped[list[Review]] = relationship(
        back_populates="product",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Review.position",
    )

    def __repr__(self) -> str:
        return f"Product(id={self.id!r}, sku={self.sku!r}, title={self.title!r})"


def _product_fk() -> Mapped[int]:
    """The foreign key every child table has; the database itself cascades deletes."""
    return mapped_column(ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)


class ProductTag(Base):
    """One tag of a product, at its position in the source list."""

    __tablename__ = "product_tags"

    product_id: Mapped[int] = _product_fk()
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag: Mapped[str] = mapped_column(Text)

    product: Mapped[Product] = relationship(back_populates="tags")

    def __repr__(self) -> str:
        return f"ProductTag(product_id={self.product_id!r}, position={self.position!r})"


class ProductImage(Base):
    """One image URL of a product, at its position in the source list."""

    __tablename__ = "product_images"

    product_id: Mapped[int] = _product_fk()
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)

    product: Mapped[Product] = relationship(back_populates="images")

    def __repr__(self) -> str:
        return f"ProductImage(product_id={self.product_id!r}, position={self.position!r})"


class Review(Base):
    """One review of a product. Reviews have no natural key, so the position is the key."""

    __tablename__ = "reviews"

    product_id: Mapped[int] = _product_fk()
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    rating: Mapped[Decimal | None] = mapped_column(RATING)
    comment: Mapped[str | None] = mapped_column(Text)
    date: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    reviewer_name: Mapped[str | None] = mapped_column(Text)
    reviewer_email: Mapped[str | None] = mapped_column(Text)

    product: Mapped[Product] = relationship(back_populates="reviews")

    def __repr__(self) -> str:
        return f"Review(product_id={self.product_id!r}, position={self.position!r})"


class PipelineRun(Base):
    """One run of a pipeline: when, how it ended, and what it did."""

    __tablename__ = "pipeline_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(50), index=True)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, server_default=func.now())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(20), default="running")
    pages: Mapped[int] = mapped_column(Integer, default=0)
    extracted: Mapped[int] = mapped_column(Integer, default=0)
    inserted: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float | None] = mapped_column(Numeric(12, 3, asdecimal=False))
    error: Mapped[str | None] = mapped_column(Text)

    rejections: Mapped[list[RejectedRecord]] = relationship(
        back_populates="run", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"PipelineRun(id={self.id!r}, pipeline={self.pipeline!r}, status={self.status!r})"


class RejectedRecord(Base):
    """A source record a run set aside instead of loading, with the reason and what arrived."""

    __tablename__ = "rejected_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True
    )
    source_id: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    rejected_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, server_default=func.now())

    run: Mapped[PipelineRun] = relationship(back_populates="rejections")

    def __repr__(self) -> str:
        return f"RejectedRecord(run_id={self.run_id!r}, source_id={self.source_id!r})"


CATALOG_TABLES = ("products", "product_tags", "product_images", "reviews")


# --- engine and URL helpers -------------------------------------------------------------------


def mask_url(url: str) -> str:
    """The URL with the secret of its user information replaced by ``***``, safe to print.

    Everything between the scheme and the last ``@`` (before any query or fragment) counts as
    user information, so an unescaped ``@`` inside a password (which should be written ``%40``)
    cannot leak the password's tail. A user name before the first ``:`` is kept; a token alone
    (``https://token@host``) is masked whole.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    authority_and_path = rest.split("?", 1)[0].split("#", 1)[0]
    at = authority_and_path.rfind("@")
    if at < 0:
        return url
    user, colon, _ = authority_and_path[:at].partition(":")
    masked = f"{user}:***" if colon else "***"
    return f"{scheme}://{masked}{rest[at:]}"


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Enforce foreign keys (SQLite ignores them otherwise), use WAL, wait for the write lock."""
    cursor = dbapi_connection.cursor()
    # The busy timeout first: switching a new file to WAL needs the lock too, and must wait.
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def _begin_sqlite(conn: Connection) -> None:
    """Emit SQLite's BEGIN ourselves; a writer asks for IMMEDIATE through an execution option."""
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url`` with the per-dialect settings the pipelines rely on.

    SQLite: foreign keys on, WAL, a 30 s busy timeout, and BEGIN issued by SQLAlchemy so that
    ``write_transaction`` can take the write lock up front. PostgreSQL: a connect timeout, so an
    unreachable server fails fast.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, echo=echo, connect_args={"isolation_level": None})
        event.listen(engine, "connect", _set_sqlite_pragmas)
        # pysqlite's own transaction handling is off (isolation_level=None); SQLAlchemy's
        # "begin" event issues the BEGIN itself. See SQLAlchemy's "Serializable isolation /
        # Savepoints / Transactional DDL" notes for the pysqlite driver.
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; this repository ships psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg2")
        return create_engine(parsed, echo=echo, connect_args={"connect_timeout": 10})
    return create_engine(url, echo=echo)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that writes: committed on success, rolled back on error.

    On SQLite it begins with ``BEGIN IMMEDIATE``: the write lock is taken at once, so a second
    writer waits (up to the busy timeout) instead of failing half-way through its run.
    """
    with engine.connect() as plain:
        conn = plain
        if engine.dialect.name == "sqlite":
            conn = plain.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def create_schema(engine: Engine) -> list[str]:
    """Create the tables and indexes that are missing; return the names of the tables created.

    A complete schema is seen with a read, so that a second process (``--history`` while a
    sync runs) never waits for SQLite's write lock. On PostgreSQL creation holds an advisory
    lock, so two first runs at once do not both try to create the same tables: the second
    waits, then finds them.
    """
    with engine.connect() as conn:
        if set(Base.metadata.tables) <= set(inspect(conn).get_table_names()):
            return []
    with write_transaction(engine) as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        existing = set(inspect(conn).get_table_names())
        Base.metadata.create_all(conn)
    return [name for name in Base.metadata.tables if name not in existing]


# --- command line -----------------------------------------------------------------------------


def resolve_database_url(flag: str | None, environ: dict[str, str | None] | None = None) -> str:
    """Flag > environment > ``.env`` > the SQLite default."""
    if flag:
        return flag
    settings = {**dotenv_values(".env"), **os.environ} if environ is None else environ
    return settings.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def main(argv: Sequence[str] | None = None) -> int:
    """Create the schema in the configured database and say what was created."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--database-url", help=f"SQLAlchemy URL (env DATABASE_URL; default {DEFAULT_DATABASE_URL})"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log SQL statements")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    url = resolve_database_url(args.database_url)
    try:
        engine = make_engine(url, echo=args.verbose)
    except (ArgumentError, ImportError, ValueError) as exc:
        print(f"error: --database-url / DATABASE_URL is not a usable URL: {exc}", file=sys.stderr)
        return 2
    try:
        created = create_schema(engine)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"error: cannot create the schema in {mask_url(url)}: {reason}", file=sys.stderr)
        return 1
    engine.dispose()
    print(f"database: {mask_url(url)}")
    if created:
        print(f"created {len(created)} tables: {', '.join(created)}")
    else:
        print("schema already complete: nothing to create")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
