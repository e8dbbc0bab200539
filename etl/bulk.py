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
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    MetaData,
    Table,
    delete,
    func,
    insert,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql import Executable
from tqdm import tqdm

from etl.errors import SyncLocked
from models import Base, Product, ProductImage, ProductTag, ProductVersion, Review, UtcDateTime

ADVISORY_LOCK_KEY = 7_301_2025  # any constant shared by every sync of this catalog
COPY_SWITCH_INTERVAL = 0.0005  # seconds; see RowWriter
CHILD_MODELS = (ProductTag, ProductImage, Review)
_STAGED_MODELS = (Product, *CHILD_MODELS)


def written_columns(model: type[Any]) -> list[str]:
    """The columns a sync writes (``loaded_at`` is the database's own default)."""
    return [c.name for c in model.__table__.columns if c.name != "loaded_at"]


def create_staging_tables(conn: Connection, history: bool = False) -> dict[str, Table]:
    """Empty temporary tables shaped like the catalog's, without keys (cheap to fill); with
    ``history``, one shaped like ``product_versions`` too."""
    postgres = conn.dialect.name == "postgresql"
    options: dict[str, Any] = {"postgresql_on_commit": "DROP"} if postgres else {}
    metadata = MetaData()
    models = (*_STAGED_MODELS, ProductVersion) if history else _STAGED_MODELS
    staging = {
        model.__tablename__: Table(
            f"stage_{model.__tablename__}",
            metadata,
            *(Column(name, model.__table__.c[name].type) for name in written_columns(model)),
            prefixes=["TEMPORARY"],
            **options,
        )
        for model in models
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


def _json_text(value: Any) -> str:
    """A JSON column's value as the text PostgreSQL parses (the transform made it JSON-safe)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


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
    if "product_versions" in staging:
        versions = staging["product_versions"]
        conn.execute(delete(versions).where(versions.c.product_id.in_(ids)))


def clear_skus(conn: Connection, ids: Sequence[int], chunk: int = 500) -> None:
    """Let go of the stored skus of products whose new version has another one, so that the
    merge can hand a sku from one product to another (a unique index is checked row by row)."""
    for start in range(0, len(ids), chunk):
        batch = ids[start : start + chunk]
        conn.execute(update(Product).where(Product.id.in_(batch)).values(sku=None))


def write_versions(
    conn: Connection,
    staging: dict[str, Table],
    deleted: Sequence[int],
    instant: dt.datetime,
    chunk: int = 500,
) -> tuple[int, int]:
    """Close the current version of every product staged or deleted at ``instant``, then open
    the staged versions: set-based, so a run's history costs a few statements, not a round trip
    per product. Closing first keeps at most one version of a product current. Return how many
    versions were opened and closed."""
    versions, staged = Base.metadata.tables["product_versions"], staging["product_versions"]
    current = versions.c.valid_to.is_(None)
    close = update(versions).values(valid_to=instant)
    closed = conn.execute(
        close.where(current, versions.c.product_id.in_(select(staged.c.product_id)))
    ).rowcount
    for start in range(0, len(deleted), chunk):
        batch = deleted[start : start + chunk]
        closed += conn.execute(close.where(current, versions.c.product_id.in_(batch))).rowcount
    columns = written_columns(ProductVersion)
    opened = conn.execute(
        insert(versions).from_select(columns, select(*(staged.c[name] for name in columns)))
    ).rowcount
    return opened, closed


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
