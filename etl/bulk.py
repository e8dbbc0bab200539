"""Bulk writing: staging tables, COPY, the writer's lock and the set-based merge.

Every difference between PostgreSQL and SQLite that the sync meets lives here, chosen by
``conn.dialect.name``: COPY on a background thread (PostgreSQL) or batched inserts (SQLite), an
advisory lock (PostgreSQL) or the write lock ``BEGIN IMMEDIATE`` already holds (SQLite).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import queue
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    any_,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    true,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql import ColumnElement, Executable
from tqdm import tqdm

from etl.errors import SyncLocked
from models import CATALOG_TABLES, Base, Product, ProductImage, ProductTag, Review, UtcDateTime

ADVISORY_LOCK_KEY = 7_301_2025  # any constant shared by every sync of this catalog
COPY_SWITCH_INTERVAL = 0.0005  # seconds; see RowWriter
CHILD_MODELS = (ProductTag, ProductImage, Review)
_STAGED_MODELS = (Product, *CHILD_MODELS)


def written_columns(model: type[Any]) -> list[str]:
    """The columns a sync writes (``loaded_at`` is the database's own default)."""
    return [c.name for c in model.__table__.columns if c.name != "loaded_at"]


def create_staging_tables(conn: Connection) -> dict[str, Table]:
    """Empty temporary tables shaped like the catalog's, without keys (cheap to fill)."""
    postgres = conn.dialect.name == "postgresql"
    options: dict[str, Any] = {"postgresql_on_commit": "DROP"} if postgres else {}
    metadata = MetaData()
    staging = {
        model.__tablename__: Table(
            f"stage_{model.__tablename__}",
            metadata,
            *(Column(name, model.__table__.c[name].type) for name in written_columns(model)),
            prefixes=["TEMPORARY"],
            **options,
        )
        for model in _STAGED_MODELS
    }
    for table in staging.values():
        table.drop(conn, checkfirst=True)
        table.create(conn)
    return staging


def _escape(text: str) -> str:
    """Backslash, tab, newline and carriage return escaped for COPY's text format.

    Four ``str.replace`` calls: far faster than ``str.translate`` with a table in CPython.
    """
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_text(rows: Sequence[dict[str, Any]], columns: Sequence[Column[Any]]) -> str:
    r"""Rows in PostgreSQL's COPY text format: tab-separated, ``\N`` for NULL, text escaped.

    This runs for every value written, so it works a column at a time, which in CPython is
    cheaper than a value-at-a-time loop: a text column is escaped value by value only when one of
    its values holds a character COPY treats specially, and each distinct timestamp (a
    catalog's products share a few) is formatted once.
    """
    if not rows:
        return ""
    # One pass over the rows (each dict read once, while it is in the CPU's cache), then columns.
    names = [column.name for column in columns]
    tuples = map(itemgetter(*names), rows) if len(names) > 1 else ((row[names[0]],) for row in rows)
    by_column = zip(columns, zip(*tuples, strict=True), strict=True)
    formatted = [_copy_column(values, column) for column, values in by_column]
    return "\n".join(map("\t".join, zip(*formatted, strict=True))) + "\n"


def _copy_column(values: Sequence[Any], column: Column[Any]) -> list[str]:
    """One column's values as COPY text."""
    if isinstance(column.type, JSON):
        return ["\\N" if value is None else _escape(_json_text(value)) for value in values]
    if column.type.python_type is str:
        present = "".join([value for value in values if value is not None])
        if "\\" in present or "\t" in present or "\n" in present or "\r" in present:
            return ["\\N" if value is None else _escape(value) for value in values]
        return ["\\N" if value is None else value for value in values]
    if isinstance(column.type, UtcDateTime):
        texts = {value: str(value) for value in set(values)}
        texts[None] = "\\N"
        return [texts[value] for value in values]
    return ["\\N" if value is None else str(value) for value in values]


# One encoder for every JSON value: json.dumps with arguments would build a new one per call.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _json_text(value: Any) -> str:
    """A JSON column's value as the text PostgreSQL parses (the transform made it JSON-safe)."""
    return _JSON_ENCODER.encode(value)


class RowWriter:
    """Writes rows into tables: ``COPY`` on PostgreSQL, batched inserts on SQLite.

    On PostgreSQL the statements run on a background thread, one at a time, while the caller
    formats the next batch: the database server and the Python transform then work on two
    cores at once. At most ``depth`` batches wait in the queue, so memory stays bounded. The
    caller must not use the connection until ``close()`` has returned.
    """

    def __init__(self, conn: Connection, depth: int = 2) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._switch_interval = sys.getswitchinterval()
        if self.postgres:
            # The COPY thread takes the GIL back after each wait on the server (the data sent,
            # the end of the COPY, its result). With Python's default switch interval it can
            # wait a whole switch interval each time while the server idles. A shorter interval
            # lets the two cores overlap (README, "What moved the numbers"; bench_sync measures it).
            sys.setswitchinterval(COPY_SWITCH_INTERVAL)
            self._thread = threading.Thread(target=self._drain, name="copy", daemon=True)
            self._thread.start()

    def write(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """Append ``rows`` (dicts keyed by column name) to ``table``."""
        if not rows:
            return
        if not self.postgres:
            self.conn.execute(insert(table), list(rows))
            return
        columns = [column for column in table.columns if column.name != "loaded_at"]
        statement = f"COPY {table.name} ({', '.join(c.name for c in columns)}) FROM STDIN"
        body = copy_text(rows, columns)
        self.submit(lambda: self._copy(statement, body))

    def submit(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the connection, after everything submitted before it."""
        if self._thread is None:
            work()
            return
        self._raise_if_failed()
        self._queue.put(work)

    def close(self, *, raise_errors: bool = True) -> None:
        """Wait until everything submitted has run; raise the first error it met."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
            sys.setswitchinterval(self._switch_interval)
        if raise_errors:
            self._raise_if_failed()

    def _copy(self, statement: str, body: str) -> None:
        cursor = self.conn.connection.cursor()
        try:
            # One read of the whole body: psycopg2 holds the GIL for each read (8 KiB by
            # default), and every re-acquisition can wait on the transforming thread.
            cursor.copy_expert(statement, io.StringIO(body), size=len(body) + 1)
        except self.conn.dialect.loaded_dbapi.Error as exc:
            # The raw cursor bypasses SQLAlchemy, so translate here as SQLAlchemy would.
            dbapi_error = self.conn.dialect.loaded_dbapi.Error
            raise DBAPIError.instance(statement, None, exc, dbapi_error) from exc
        finally:
            cursor.close()

    def _drain(self) -> None:
        """The background thread: run submitted work in order; after an error, skip the rest."""
        while (work := self._queue.get()) is not None:
            if self._error is None:
                try:
                    work()
                except Exception as exc:  # noqa: BLE001 (handed to the caller by close)
                    self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def take_writer_lock(conn: Connection, timeout: float) -> None:
    """Make sure this is the only sync writing; raise ``SyncLocked`` after ``timeout`` seconds.

    SQLite already holds its write lock: ``write_transaction`` began with ``BEGIN IMMEDIATE``.
    """
    if conn.dialect.name != "postgresql":
        return
    conn.execute(text(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'"))
    try:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    except OperationalError as exc:
        raise SyncLocked(
            f"another sync is running against this database (still locked after {timeout:g} s); "
            "try again when it has finished"
        ) from exc
    conn.execute(text("SET LOCAL lock_timeout = 0"))


def delete_products(conn: Connection, ids: Sequence[int], chunk: int = 500) -> None:
    """Delete products by id; the database cascades to their children."""
    for start in range(0, len(ids), chunk):
        conn.execute(delete(Product).where(Product.id.in_(ids[start : start + chunk])))


def unstage_products(conn: Connection, staging: dict[str, Table], ids: Sequence[int]) -> None:
    """Take products out of staging (a claim the run refused after staging them)."""
    staged = staging["products"]
    conn.execute(delete(staged).where(staged.c.id.in_(ids)))
    for model in CHILD_MODELS:
        children = staging[model.__tablename__]
        conn.execute(delete(children).where(children.c.product_id.in_(ids)))


def clear_skus(conn: Connection, ids: Sequence[int], chunk: int = 500) -> None:
    """Let go of the stored skus of products whose new version has another one, so that the
    merge can hand a sku from one product to another (a unique index is checked row by row)."""
    for start in range(0, len(ids), chunk):
        batch = ids[start : start + chunk]
        conn.execute(update(Product).where(Product.id.in_(batch)).values(sku=None))


# --- product history -----------------------------------------------------------------------
#
# A version is built from the catalog rows the sync has just written, by the database itself:
# its children aggregated into JSON in position order (PostgreSQL: ``json_agg ... ORDER BY
# position``; SQLite: ``json_group_array`` over the primary key's index, which yields the rows
# in position order). New products' versions are opened batch by batch on the writer's thread
# (PostgreSQL), while Python transforms the next batch; changed products' after the merge.

VERSIONED_COLUMNS = tuple(name for name in written_columns(Product) if name != "id")


@dataclass(frozen=True)
class HistoryGaps:
    """How the current versions differ from the catalog. Every run with history keeps both
    zero; a run without it can leave a deleted product's version current (an orphan) or
    insert a product without a version."""

    orphaned: int  # current versions of products the catalog no longer holds
    unversioned: int  # catalog products without a current version


def history_gaps(conn: Connection, catalog_size: int) -> HistoryGaps:
    """Count the gaps: two counts over the current versions' index, one joined to products."""
    versions, products = _history_tables()[:2]
    current = versions.c.valid_to.is_(None)
    total = conn.execute(select(func.count()).where(current)).scalar_one()
    joined = versions.join(products, products.c.id == versions.c.product_id)
    held = conn.execute(select(func.count()).select_from(joined).where(current)).scalar_one()
    return HistoryGaps(orphaned=total - held, unversioned=catalog_size - held)


def close_orphaned_versions(conn: Connection, instant: dt.datetime) -> int:
    """Close at ``instant`` the current versions of products the catalog no longer holds, so
    that such a product, back in the source, can be versioned anew."""
    versions, products = _history_tables()[:2]
    held = select(products.c.id).where(products.c.id == versions.c.product_id).exists()
    orphaned = update(versions).where(versions.c.valid_to.is_(None), ~held)
    return conn.execute(orphaned.values(valid_to=instant)).rowcount


def write_versions(
    conn: Connection,
    staging: Mapping[str, Table],
    deleted: Sequence[int],
    run_id: int,
    instant: dt.datetime,
    chunk: int = 500,
) -> tuple[int, int]:
    """After the merge: close at ``instant`` the current version of every product deleted, and
    of every staged product whose content differs from it; then open the staged products'
    versions where none is current. A product rewritten unchanged (``--rebuild``) keeps its
    version. Set-based, so a run's history costs a few statements. Return how many versions
    were opened and closed."""
    versions, staged = _history_tables()[0], staging["products"]
    current = versions.c.valid_to.is_(None)
    close = update(versions).values(valid_to=instant)
    changed = (
        versions.c.product_id == staged.c.id,
        versions.c.content_hash != staged.c.content_hash,
    )
    closed = conn.execute(close.where(current, *changed)).rowcount  # UPDATE ... FROM
    for start in range(0, len(deleted), chunk):
        batch = deleted[start : start + chunk]
        closed += conn.execute(close.where(current, versions.c.product_id.in_(batch))).rowcount
    # Built from staging, which holds exactly what was merged: the catalog's children tables,
    # just rewritten, are full of dead rows that every lookup would step over.
    for model in CHILD_MODELS:
        children = staging[model.__tablename__]
        Index(f"{children.name}_key", children.c.product_id, children.c.position).create(conn)
    return open_versions(conn, run_id, instant, tables=staging), closed


def open_versions(
    conn: Connection,
    run_id: int,
    instant: dt.datetime,
    among: Sequence[int] | None = None,
    tables: Mapping[str, Table] = Base.metadata.tables,
) -> int:
    """Open a version, from ``instant`` on, of each product in ``tables`` (the catalog, or
    staging shaped like it; ``among`` these ids only, if given) that has no current version:
    its row and children as they are there. Return how many were opened."""
    versions, products = _history_tables()[0], tables["products"]
    current = select(versions.c.product_id).where(
        versions.c.product_id == products.c.id, versions.c.valid_to.is_(None)
    )
    rows = select(
        products.c.id,
        literal(instant, UtcDateTime()),
        literal(None, UtcDateTime()),
        literal(run_id),
        *(products.c[name] for name in VERSIONED_COLUMNS),
        *_children_json(tables, conn.dialect.name),
    ).where(~current.exists())
    if among is not None:
        rows = rows.where(_one_of(products.c.id, among, conn.dialect.name))
    names = ["product_id", "valid_from", "valid_to", "run_id", *VERSIONED_COLUMNS]
    statement = insert(versions).from_select([*names, "tags", "images", "reviews"], rows)
    if conn.dialect.name == "postgresql":  # JSON renders an instant in the session's zone
        conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
    return conn.execute(statement).rowcount


def _one_of(column: Column[int], ids: Sequence[int], dialect: str) -> ColumnElement[bool]:
    """``column`` is one of ``ids``: on PostgreSQL one array parameter (``= ANY``), as a
    thousand-item ``IN`` list is a thousand parameters to bind and plan; an ``IN`` on SQLite."""
    if dialect == "postgresql":
        return column == any_(literal(list(ids), postgresql.ARRAY(Integer)))
    return column.in_(ids)


def _history_tables() -> tuple[Table, ...]:
    """``product_versions``, then the four catalog tables."""
    tables = Base.metadata.tables
    return tuple(tables[name] for name in ("product_versions", *CATALOG_TABLES))


def _children_json(tables: Mapping[str, Table], dialect: str) -> list[Any]:
    """Per product row, its tags, images and reviews as JSON arrays in position order, read
    through their ``(product_id, position)`` index. A review's rating is a JSON number, its
    date ISO-8601 in UTC on both databases."""
    products = tables["products"]
    tags, images, reviews = (tables[name] for name in CATALOG_TABLES[1:])
    postgres = dialect == "postgresql"
    if postgres:  # an instant in the session's zone, UTC (open_versions): ISO-8601
        rating: Any = cast(reviews.c.rating, Float())
        date: Any = reviews.c.date
    else:  # SQLite stores an instant as naive UTC text, to the microsecond
        rating = reviews.c.rating
        date = func.replace(type_coerce(reviews.c.date, Text()), " ", "T").concat("+00:00")
    review = (func.json_build_object if postgres else func.json_object)(
        "rating",
        rating,
        "comment",
        reviews.c.comment,
        "date",
        date,
        "reviewer_name",
        reviews.c.reviewer_name,
        "reviewer_email",
        reviews.c.reviewer_email,
    )
    columns = []
    for table, value in ((tags, tags.c.tag), (images, images.c.url), (reviews, review)):
        if postgres:
            aggregate = func.json_agg(postgresql.aggregate_order_by(value, table.c.position))
            empty: Any = literal_column("'[]'::json")
        else:  # json_group_array takes the rows in the order the index yields them
            aggregate, empty = func.json_group_array(value), literal("[]")
        found = select(aggregate).where(table.c.product_id == products.c.id).scalar_subquery()
        columns.append(func.coalesce(found, empty))
    return columns


def merge_staged_products(
    conn: Connection, staging: dict[str, Table], progress: bool = False
) -> None:
    """Apply the staged changed products: upsert the products, then replace their children."""
    steps = _merge_statements(conn, staging)
    with tqdm(steps, desc="merge", unit=" steps", disable=not progress, file=sys.stderr) as bar:
        for table, statement in bar:
            bar.set_postfix_str(table)
            conn.execute(statement)


def _merge_statements(conn: Connection, staging: dict[str, Table]) -> list[tuple[str, Executable]]:
    """The set-based statements of the merge, in order, each with the table it writes."""
    upsert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    staged = staging["products"]
    columns = written_columns(Product)
    # "WHERE true" lets SQLite tell the upsert's ON CONFLICT from a join's ON.
    products = upsert(Product).from_select(
        columns, select(*(staged.c[name] for name in columns)).where(true())
    )
    products = products.on_conflict_do_update(
        index_elements=[Product.id],
        set_={
            **{name: products.excluded[name] for name in columns if name != "id"},
            "loaded_at": func.current_timestamp(),
        },
    )
    steps: list[tuple[str, Executable]] = [("products", products)]
    changed_ids = select(staged.c.id)
    for model in CHILD_MODELS:
        table_name = model.__tablename__
        table, staged_children = Base.metadata.tables[table_name], staging[table_name]
        child_columns = written_columns(model)
        steps.append((table.name, delete(table).where(table.c.product_id.in_(changed_ids))))
        steps.append(
            (
                table.name,
                insert(table).from_select(
                    child_columns, select(*(staged_children.c[name] for name in child_columns))
                ),
            )
        )
    return steps
