"""Exercise 1-1: the catalog schema, as SQLAlchemy 2.x typed models.

Four catalog tables hold what DummyJSON's ``/products`` serves, normalised:

* ``products``: every scalar field, with ``dimensions`` and ``meta`` flattened into columns,
  the source ``id`` as primary key and a ``content_hash`` the production sync compares to skip
  unchanged products;
* ``product_tags``, ``product_images``, ``reviews``: one row per list element, keyed by
  ``(product_id, position)`` so the source order survives and repeated values (the same tag or
  reviewer twice) are kept, with ``ON DELETE CASCADE`` declared in the database.

Fields the mapping does not know yet are kept with their product in ``products.extras`` (JSON;
``JSONB`` on PostgreSQL), so a field the API adds is queryable the day it appears.

``product_versions`` keeps every version of every product, deleted ones included, so that a
product can be shown as of any instant (a type-2 slowly changing dimension).

Three bookkeeping tables belong to the pipelines: ``pipeline_runs`` (one row per run),
``rejected_records`` (each product a run set aside, with the reason and the raw payload) and
``source_drift`` (each field a run saw appear, vanish or change type).

Schema changes are Alembic revisions in ``migrations/``; the models are the latest revision
(``tests/test_migrations.py`` checks that the two agree). Run ``python models.py
[--database-url URL]`` to bring a database to the latest revision: an empty one is created, an
older one is upgraded in place with its data, and one holding tables this code did not make, or a
revision newer than the code, is refused (exit 1). It is idempotent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from dotenv import dotenv_values
from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
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
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///products.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SCHEMA_LOCK_KEY = 7_301_2024  # advisory lock taken while creating or upgrading the schema
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Exact decimals sized for what DummyJSON serves; the transform rejects values that would not fit
# instead of letting the database round them.
MONEY = Numeric(12, 2)
PERCENT = Numeric(5, 2)
RATING = Numeric(3, 2)
MEASURE = Numeric(10, 2)
# JSON text on SQLite, binary JSONB on PostgreSQL (indexable, queryable with ->, ->>, @>);
# Python's None is SQL NULL, not the JSON text 'null'.
JSON_DOCUMENT = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
HISTORY_JSON = JSON(none_as_null=True)  # plain JSON on both: see ProductVersion


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
    # The values of source fields the mapping does not know, shaped as the source nests them
    # ({"color": "red", "meta": {"batch": 7}}); NULL when there are none.
    extras: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOCUMENT)
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


class SourceDrift(Base):
    """A field a run saw appear, vanish or change type, against what the mapping expects."""

    __tablename__ = "source_drift"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True
    )
    change: Mapped[str] = mapped_column(String(20))  # new, vanished or retyped
    field: Mapped[str] = mapped_column(Text)  # a path: "color", "meta.batch", "reviews[].likes"
    expected: Mapped[str | None] = mapped_column(String(100))  # JSON types the mapping takes
    seen: Mapped[str | None] = mapped_column(String(100))  # the JSON type that arrived
    products: Mapped[int] = mapped_column(Integer)  # how many products showed the change
    example_id: Mapped[int | None] = mapped_column(Integer)  # one of them
    seen_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, server_default=func.now())

    def __repr__(self) -> str:
        return f"SourceDrift(run_id={self.run_id!r}, change={self.change!r}, field={self.field!r})"


class ProductVersion(Base):
    """One version of a product, whole: its columns, and its tags, images and reviews as they
    were (JSON), valid from ``valid_from`` until ``valid_to`` (NULL: the current version).

    A type-2 slowly changing dimension: the sync that inserts or changes a product closes its
    current version and opens a new one at the run's instant; the sync that deletes it closes
    it. Versions are never removed, and no product row references them: history outlives the
    product. ``(product_id, valid_from)`` is the key and the as-of lookup's index.
    """

    __tablename__ = "product_versions"
    __table_args__ = (
        # At most one current version per product: a second would be a history that forks.
        Index(
            "ix_product_versions_current",
            "product_id",
            unique=True,
            sqlite_where=text("valid_to IS NULL"),
            postgresql_where=text("valid_to IS NULL"),
        ),
    )

    product_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    valid_from: Mapped[dt.datetime] = mapped_column(UtcDateTime, primary_key=True)
    valid_to: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # The run that wrote it (pipeline_runs.id; not a foreign key: one check per version
    # written would cost the sync more than the integrity is worth in an append-only table).
    run_id: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(100))
    price: Mapped[Decimal] = mapped_column(MONEY)
    discount_percentage: Mapped[Decimal | None] = mapped_column(PERCENT)
    rating: Mapped[Decimal | None] = mapped_column(RATING)
    stock: Mapped[int | None] = mapped_column(Integer)
    brand: Mapped[str | None] = mapped_column(String(200))
    sku: Mapped[str | None] = mapped_column(String(100))
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
    content_hash: Mapped[int] = mapped_column(BigInteger)
    extras: Mapped[dict[str, Any] | None] = mapped_column(JSON_DOCUMENT)
    # The children as JSON arrays, in position order. Plain JSON (``json`` on PostgreSQL, not
    # ``jsonb``): written at every change and read rarely, it is kept as the database builds
    # it, half the cost of building JSONB (bench_sync), and ``->`` / ``->>`` still query it.
    tags: Mapped[list[str]] = mapped_column(HISTORY_JSON)  # ["beauty", "mascara"]
    images: Mapped[list[str]] = mapped_column(HISTORY_JSON)  # the URLs
    # [{"rating": 4.5, "comment": ..., "date": "2024-05-23T08:56:21.618+00:00",
    #   "reviewer_name": ..., "reviewer_email": ...}]
    reviews: Mapped[list[dict[str, Any]]] = mapped_column(HISTORY_JSON)

    def __repr__(self) -> str:
        return (
            f"ProductVersion(product_id={self.product_id!r}, valid_from={self.valid_from!r}, "
            f"valid_to={self.valid_to!r})"
        )


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


class SchemaError(Exception):
    """The database's schema is not one this code can use as it is."""


class SchemaOutdated(SchemaError):
    """The database is at an older revision: ``python models.py`` upgrades it."""


class SchemaRefused(SchemaError):
    """The database holds tables this code did not make, or a revision newer than the code."""


class SchemaState(StrEnum):
    """Where a database stands against the migrations."""

    EMPTY = "empty"  # none of our tables: created at the latest revision
    CURRENT = "current"  # at the latest revision
    OLDER = "older"  # at an earlier revision: upgraded in place
    UNVERSIONED = "unversioned"  # made by a release before migrations: the first revision
    NEWER = "newer"  # at a revision this code does not know: refused
    FOREIGN = "foreign"  # holds tables we did not make: refused


@dataclass(frozen=True)
class SchemaCheck:
    """A database's schema state, its revision, and what a refusal should say."""

    state: SchemaState
    revision: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class SchemaUpgrade:
    """What ``upgrade_schema`` did: the revision before and after, and the tables created."""

    before: str | None
    after: str
    created: list[str]


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for ``migrations/``, optionally running on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    """The revisions in ``migrations/`` (read once per process)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The latest revision: the one the models describe."""
    head = _scripts().get_current_head()
    if head is None:
        raise SchemaError(f"no revision in {MIGRATIONS}")
    return head


@cache
def _first_revision_tables() -> dict[str, frozenset[str]]:
    """Each table of the first revision with its columns: what releases before migrations made.

    Read off the first revision itself, run on an in-memory SQLite database, so that nothing
    here restates it.
    """
    first = _scripts().get_base()
    engine = make_engine("sqlite://")
    try:
        with engine.connect() as conn:
            command.upgrade(alembic_config(conn), first or "base")
            inspector = inspect(conn)
            return {
                name: frozenset(column["name"] for column in inspector.get_columns(name))
                for name in inspector.get_table_names()
                if name != "alembic_version"
            }
    finally:
        engine.dispose()


def check_schema(conn: Connection) -> SchemaCheck:
    """Where the database of ``conn`` stands against the migrations (a read, no lock)."""
    tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
    revision = MigrationContext.configure(conn).get_current_revision()
    if revision is None:
        return _check_unversioned(conn, tables)
    if revision == head_revision():
        return SchemaCheck(SchemaState.CURRENT, revision)
    try:
        _scripts().get_revision(revision)
    except CommandError:  # an unknown revision: "Can't locate revision identified by ..."
        return SchemaCheck(
            SchemaState.NEWER,
            revision,
            f"the database is at revision {revision}, which this code does not know "
            f"(its latest is {head_revision()}): a newer release made it; upgrade the code",
        )
    return SchemaCheck(SchemaState.OLDER, revision)


def _check_unversioned(conn: Connection, tables: set[str]) -> SchemaCheck:
    """A database without a revision: empty, made by a release before migrations, or foreign."""
    if not tables:
        return SchemaCheck(SchemaState.EMPTY)
    first = _first_revision_tables()
    foreign = sorted(tables - set(first))
    if foreign:
        return SchemaCheck(
            SchemaState.FOREIGN,
            detail=f"the database holds tables this code did not make ({', '.join(foreign)}); "
            "point --database-url / DATABASE_URL at an empty database or one this code made",
        )
    inspector = inspect(conn)
    for name in sorted(tables):
        found = {column["name"] for column in inspector.get_columns(name)}
        if found != first[name]:
            missing = ", ".join(sorted(first[name] - found)) or "none"
            unknown = ", ".join(sorted(found - first[name])) or "none"
            return SchemaCheck(
                SchemaState.FOREIGN,
                detail=f"table {name} is not the one any release of this code made (columns "
                f"missing: {missing}; unknown: {unknown}); it cannot be upgraded in place",
            )
    absent = sorted(set(first) - tables)
    if absent:
        return SchemaCheck(
            SchemaState.FOREIGN,
            detail=f"the database holds only some of this code's tables (missing: "
            f"{', '.join(absent)}); it cannot be upgraded in place",
        )
    return SchemaCheck(SchemaState.UNVERSIONED)


def create_schema(engine: Engine) -> list[str]:
    """Create the schema in an empty database; return the tables created (none if current).

    What the pipelines call before a run. A database at the latest revision is seen with a
    read, so that a second process (``--history`` while a sync runs) never waits for SQLite's
    write lock. An older revision raises ``SchemaOutdated`` (the message names the command that
    upgrades it); a foreign or newer schema raises ``SchemaRefused``.
    """
    with engine.connect() as conn:
        check = check_schema(conn)
    if check.state is SchemaState.EMPTY:
        with _schema_transaction(engine) as conn:
            check = check_schema(conn)  # another process may have created it meanwhile
            if check.state is SchemaState.EMPTY:
                return _create_latest(conn)
    _require_current(check)
    return []


def upgrade_schema(engine: Engine) -> SchemaUpgrade:
    """Bring the database to the latest revision, keeping its data: ``python models.py``.

    Empty: created. Older, or made by a release before migrations (adopted as the first
    revision once its columns are checked): upgraded in place, in one transaction. Current:
    nothing. Foreign or newer: ``SchemaRefused``, nothing touched.
    """
    head = head_revision()
    with engine.connect() as conn:
        check = check_schema(conn)
    if check.state is SchemaState.CURRENT:
        return SchemaUpgrade(head, head, [])
    with _schema_transaction(engine) as conn:
        check = check_schema(conn)
        if check.state is SchemaState.EMPTY:
            return SchemaUpgrade(None, head, _create_latest(conn))
        if check.state in (SchemaState.NEWER, SchemaState.FOREIGN):
            raise SchemaRefused(check.detail)
        before = set(inspect(conn).get_table_names())
        log.info("upgrading the schema from %s to %s", check.revision or "before migrations", head)
        if check.state is SchemaState.UNVERSIONED:
            MigrationContext.configure(conn).stamp(_scripts(), _scripts().get_base() or "base")
        command.upgrade(alembic_config(conn), "head")
        created = [name for name in Base.metadata.tables if name not in before]
        return SchemaUpgrade(check.revision, head, created)


@contextmanager
def _schema_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction that, on PostgreSQL, holds the schema's advisory lock: two first
    runs at once do not both create the tables; the second waits, then finds them."""
    with write_transaction(engine) as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        yield conn


def _create_latest(conn: Connection) -> list[str]:
    """Create every table and stamp the latest revision, as Alembic's cookbook recommends for
    a new database ("Building an Up to Date Database from Scratch"): faster than replaying
    every revision, and the migrations test proves the two build the same schema."""
    Base.metadata.create_all(conn)
    MigrationContext.configure(conn).stamp(_scripts(), "head")
    return list(Base.metadata.tables)


def _require_current(check: SchemaCheck) -> None:
    """Raise unless ``check`` says the database is at the latest revision."""
    if check.state is SchemaState.CURRENT:
        return
    if check.state in (SchemaState.NEWER, SchemaState.FOREIGN):
        raise SchemaRefused(check.detail)
    made_by = f"revision {check.revision}" if check.revision else "a release before migrations"
    raise SchemaOutdated(
        f"the database was made by {made_by}; this code needs revision {head_revision()}: "
        "run `python models.py` (same --database-url) to upgrade it in place, data kept"
    )


# --- command line -----------------------------------------------------------------------------


def resolve_database_url(flag: str | None, environ: dict[str, str | None] | None = None) -> str:
    """Flag > environment > ``.env`` > the SQLite default."""
    if flag:
        return flag
    settings = {**dotenv_values(".env"), **os.environ} if environ is None else environ
    return settings.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def main(argv: Sequence[str] | None = None) -> int:
    """Bring the configured database to the latest revision and say what changed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--database-url", help=f"SQLAlchemy URL (env DATABASE_URL; default {DEFAULT_DATABASE_URL})"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log SQL statements")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Alembic logs its context at every look at the version table; the summary says what changed.
    logging.getLogger("alembic").setLevel(logging.INFO if args.verbose else logging.WARNING)

    url = resolve_database_url(args.database_url)
    try:
        engine = make_engine(url, echo=args.verbose)
    except (ArgumentError, ImportError, ValueError) as exc:
        print(f"error: --database-url / DATABASE_URL is not a usable URL: {exc}", file=sys.stderr)
        return 2
    try:
        upgrade = upgrade_schema(engine)
    except SchemaError as exc:
        print(f"error: {mask_url(url)}: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"error: cannot upgrade the schema in {mask_url(url)}: {reason}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"database: {mask_url(url)}")
    print(_describe(upgrade))
    return 0


def _describe(upgrade: SchemaUpgrade) -> str:
    """One line on what ``upgrade_schema`` did."""
    if upgrade.before is None and upgrade.created == list(Base.metadata.tables):
        return f"created {len(upgrade.created)} tables at revision {upgrade.after}: " + ", ".join(
            upgrade.created
        )
    if upgrade.before == upgrade.after:
        return f"schema already at the latest revision ({upgrade.after}): nothing to do"
    made_by = upgrade.before or "a release before migrations"
    line = f"upgraded from {made_by} to revision {upgrade.after}, data kept"
    return line + (f"; new tables: {', '.join(upgrade.created)}" if upgrade.created else "")


if __name__ == "__main__":
    raise SystemExit(main())
