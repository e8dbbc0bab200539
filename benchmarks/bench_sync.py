"""Benchmark the production sync against the raw COPY limit and a naive ORM upsert (issue 3).

In one run, side by side on the same database server, for N synthetic DummyJSON products:

1. the COPY limit: the same products, flattened and formatted before the clock starts, ``COPY``-ed
   into the four empty keyed catalog tables in one transaction (SQLite: ``executemany`` of rows
   already converted to what the driver binds); for the re-sync scenarios, ``TRUNCATE`` and
   ``COPY`` of that scenario's rows;
2. the production sync (``production_pipeline.sync_products``), initial load into an empty catalog;
3. the same sync re-run with no change, which must write no catalog row;
4. the same sync with 10% of the products changed (``variant=1``) and 1% removed;
5. the naive approach the exercise started from: ORM ``session.get`` and setattr per product,
   children replaced through the relationship collections, one commit per product.

Each timed section runs from the first product pulled to COMMIT, on a fresh schema, from an
in-process source: the products as the client decodes them (``decode_json``: exact decimals,
and the digest of each product's JSON text, which the sync compares), built before the clock
starts; decoding and digesting are extraction, benchmarked by ``bench_extract``. Repetitions
are interleaved, and figures are medians of ratios paired within a repetition. Peak memory is
read in child processes that generate the same source lazily. ``--end-to-end`` adds the same
sync through the local DummyJSON server (HTTP, page size 100), served from another process.

    python -m benchmarks.bench_sync [--sizes 10000,100000] [--million] [--repeats 3]
        [--database postgresql|sqlite|both] [--end-to-end] [--naive-size 10000]

PostgreSQL is ``BENCH_DATABASE_URL`` (in a schema of its own, dropped at the end) if set, else a
throwaway server from the ``pgserver`` wheel. The output also goes to
``benchmarks/results/bench_sync-<date>.txt``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime as dt
import gc
import io
import json
import logging
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from benchmarks.harness import (
    MILLION,
    ROOT,
    SEED,
    CatalogServer,
    Output,
    command_line,
    machine_lines,
    median_range,
    results_path,
    run_in_child,
    scenario_variant,
    verdict,
    vm_kib,
)
from data_pipeline import Extraction, transform_product
from etl.decoding import decode_json
from etl.runs import start_run
from etl.settings import Settings
from models import (
    CATALOG_TABLES,
    Product,
    ProductImage,
    ProductTag,
    Review,
    create_schema,
    make_engine,
    mask_url,
    write_transaction,
)
from production_pipeline import SyncOptions, run_sync, sync_products
from tools.local_api import make_product
from tools.throwaway_postgres import throwaway_postgres

log = logging.getLogger(__name__)

SCENARIOS = ("initial", "no-change", "changed")
SCENARIO_TITLES = {
    "initial": "initial load",
    "no-change": "no-change re-sync",
    "changed": "10% changed + 1% removed",
}
APPROACH_TITLES = {
    "copy": "COPY limit (four keyed tables)",
    "sync": "production sync, in-process source",
    "naive": "naive ORM upsert, commit per product",
    "e2e": "production sync end to end (HTTP, page size 100)",
    "extra": "production sync, an unknown field on every product (kept in extras)",
    "nohist": "production sync, history off (--no-history)",
}
UNKNOWN_FIELD = "color"  # the field ``--unknown-field`` adds to every product
SQLITE_COPY_TITLE = "bulk INSERT limit (executemany, four keyed tables)"
TABLE_MODELS: dict[str, Any] = {
    "products": Product,
    "product_tags": ProductTag,
    "product_images": ProductImage,
    "reviews": Review,
}
ROW_ATTRS = {
    "products": None,
    "product_tags": "tags",
    "product_images": "images",
    "reviews": "reviews",
}
SYNC_OPTIONS = SyncOptions(allow_mass_delete=False)  # 1% removed stays under the 10% guard
NO_HISTORY = dataclasses.replace(SYNC_OPTIONS, history=False)
VERSIONS = "product_versions"
# The targets, on PostgreSQL.
TARGET_COPY_FRACTION, AIM_COPY_FRACTION = 0.70, 0.80
TARGET_NO_CHANGE_SPEEDUP = 5.0
TARGET_CHANGED_SPEEDUP = 3.0
TARGET_NAIVE_SPEEDUP = 50.0
TARGET_PEAK_MB_AT_MILLION = 250.0
# Issue 14: product history on, against the same sync with it off.
TARGET_HISTORY_CHANGED, TARGET_HISTORY_INITIAL = 1.25, 1.30


# --- the synthetic source ---------------------------------------------------------------------


def source_size(n: int, scenario: str) -> int:
    """How many products a scenario's source has."""
    removed = (n - 1) // 100 + 1 if scenario == "changed" and n > 0 else 0
    return n - removed


def as_delivered(product: dict[str, Any]) -> dict[str, Any]:
    """A product as a client receives it: encoded like the API does, then decoded by the client's
    own page decoder (exact decimals, and the digest of the product's JSON text)."""
    body = json.dumps({"products": [product]}, ensure_ascii=False, separators=(",", ":"))
    delivered: dict[str, Any] = decode_json(body.encode())["products"][0]
    return delivered


def iter_source(
    n: int, scenario: str, seed: int = SEED, unknown_field: bool = False
) -> Iterator[dict[str, Any]]:
    """A scenario's products, generated one at a time (memory stays flat in N)."""
    for product_id in range(1, n + 1):
        variant = scenario_variant(product_id, scenario)
        if variant is not None:
            yield as_delivered(generate(product_id, variant, unknown_field))


def generate(product_id: int, variant: int, unknown_field: bool) -> dict[str, Any]:
    """A synthetic product, with a field the mapping does not know if asked."""
    product = make_product(product_id, SEED, variant)
    if unknown_field:
        product[UNKNOWN_FIELD] = f"{UNKNOWN_FIELD}-{product_id % 7}"
    return product


def complete_extraction(received: int) -> Extraction:
    """What ``iter_products`` would report after paging a whole, stable catalog."""
    return Extraction(total=received, pages=-(-received // 100), received=received, finished=True)


def columns(table: str) -> list[str]:
    """The columns a sync writes (``loaded_at`` is the database's own default)."""
    return [c.name for c in TABLE_MODELS[table].__table__.columns if c.name != "loaded_at"]


def copy_field(value: Any) -> str:
    r"""One value in PostgreSQL's COPY text format (NULL is \N; specials escaped)."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


@dataclass
class Prepared:
    """One scenario's source, decoded, and the same products flattened for the bulk-load limit."""

    products: list[dict[str, Any]]
    rows: dict[str, int]
    copy_text: dict[str, bytes] = field(default_factory=dict)  # PostgreSQL COPY text per table
    bound: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)  # SQLite, per table

    @property
    def total_rows(self) -> int:
        """Catalog rows these products become."""
        return sum(self.rows.values())


def prepare(products: list[dict[str, Any]], databases: Sequence[str]) -> Prepared:
    """Flatten products once, before any clock starts, into what the bulk-load limit writes."""
    prepared = Prepared(products, dict.fromkeys(CATALOG_TABLES, 0))
    names = {table: columns(table) for table in CATALOG_TABLES}
    buffers = {table: io.StringIO() for table in CATALOG_TABLES}
    sqlite_bind = _sqlite_binders(names) if "sqlite" in databases else None
    bound: dict[str, list[tuple[Any, ...]]] = {table: [] for table in CATALOG_TABLES}
    for raw in products:
        flat = transform_product(raw)
        for table in CATALOG_TABLES:
            attr = ROW_ATTRS[table]
            rows = [flat.product] if attr is None else getattr(flat, attr)
            prepared.rows[table] += len(rows)
            for row in rows:
                values = [row[name] for name in names[table]]
                if "postgresql" in databases:
                    buffers[table].write("\t".join(map(copy_field, values)))
                    buffers[table].write("\n")
                if sqlite_bind is not None:
                    bound[table].append(
                        tuple(f(v) for f, v in zip(sqlite_bind[table], values, strict=True))
                    )
    if "postgresql" in databases:
        prepared.copy_text = {t: buffers[t].getvalue().encode() for t in CATALOG_TABLES}
    if sqlite_bind is not None:
        prepared.bound = bound
    return prepared


def _sqlite_binders(names: dict[str, list[str]]) -> dict[str, list[Callable[[Any], Any]]]:
    """Per column, the conversion SQLAlchemy applies before handing a value to sqlite3."""
    dialect = make_engine("sqlite://").dialect
    binders: dict[str, list[Callable[[Any], Any]]] = {}
    for table, cols in names.items():
        binders[table] = []
        for name in cols:
            column_type = TABLE_MODELS[table].__table__.c[name].type
            process = column_type.dialect_impl(dialect).bind_processor(dialect)
            binders[table].append(process if process is not None else _identity)
    return binders


def _identity(value: Any) -> Any:
    return value


def build_sources(
    n: int, databases: Sequence[str], unknown_field: bool = False
) -> dict[str, Prepared]:
    """The three scenarios' sources for N products; unchanged products are shared, not copied."""
    started = time.perf_counter()
    base = list(iter_source(n, "initial", unknown_field=unknown_field))
    changed: list[dict[str, Any]] = []
    for product in base:
        variant = scenario_variant(product["id"], "changed")
        if variant == 0:
            changed.append(product)
        elif variant is not None:
            changed.append(as_delivered(generate(product["id"], variant, unknown_field)))
    base_prepared = prepare(base, databases)
    sources = {
        "initial": base_prepared,
        "no-change": base_prepared,
        "changed": prepare(changed, databases),
    }
    log.info("built the %d-product sources in %.1f s", n, time.perf_counter() - started)
    return sources


# --- measurements -----------------------------------------------------------------------------


@dataclass
class Run:
    """One timed section."""

    seconds: float
    written: int | None = None  # catalog rows inserted + updated + deleted, where measured
    detail: str = ""
    error: str = ""
    versions_written: int | None = None  # product_versions rows inserted + updated (PostgreSQL)
    versions_bytes: int | None = None  # product_versions' size after the run, indexes included
    versions_rows: int | None = None  # and its rows


class DatabaseTarget:
    """One database the benchmark writes to, with a fresh schema per approach and repetition."""

    name = ""
    engine: Engine | None = None

    def fresh(self) -> Engine:
        """An engine on an empty catalog schema (the previous one is thrown away)."""
        raise NotImplementedError

    def url(self) -> str:
        """The URL of the current fresh schema, password included (for child processes)."""
        assert self.engine is not None
        return self.engine.url.render_as_string(hide_password=False)

    def settle(self, engine: Engine) -> None:
        """Untimed housekeeping before each timed section."""

    def bulk_load(self, engine: Engine, source: Prepared, replace: bool) -> None:
        """The physical limit: write the pre-flattened rows into the four tables, one commit."""
        raise NotImplementedError

    def probe(self, conn: Connection) -> Any:
        """A counter read inside the sync's transaction, before and after it."""
        return None

    def written(self, engine: Engine, before: Any, after: Any) -> tuple[int | None, str]:
        """Catalog rows the transaction wrote, and how that was measured."""
        return None, ""

    def versions_written(self, before: Any, after: Any) -> int | None:
        """``product_versions`` rows the transaction inserted or updated, where measured."""
        return None

    def versions_size(self, engine: Engine) -> tuple[int, int]:
        """``product_versions``' size in bytes (indexes included, after a VACUUM on
        PostgreSQL, so that closed versions' dead tuples are not counted) and its rows."""
        raise NotImplementedError

    def counts(self, engine: Engine) -> dict[str, int]:
        """Rows per catalog table."""
        with engine.connect() as conn:
            return {
                table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
                for table in CATALOG_TABLES
            }

    def describe(self) -> str:
        """One line about the server, for the header."""
        raise NotImplementedError

    def dispose_engine(self) -> None:
        """Close the current schema's connections."""
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    def close(self) -> None:
        """Drop what the benchmark created."""
        self.dispose_engine()


class PostgresTarget(DatabaseTarget):
    """A PostgreSQL server; each fresh catalog is a new schema, reached through ``search_path``."""

    name = "postgresql"

    def __init__(self, server_url: str, origin: str) -> None:
        url = make_url(server_url)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg2")
        self.server_url = url
        self.origin = origin
        self.schema = f"bench_sync_{uuid.uuid4().hex[:8]}"
        self.admin = make_engine(url.render_as_string(hide_password=False))
        self.can_checkpoint = True

    def fresh(self) -> Engine:
        self.dispose_engine()
        with self.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        query = {**self.server_url.query, "options": f"-csearch_path={self.schema}"}
        self.engine = make_engine(self.server_url.set(query=query).render_as_string(False))
        create_schema(self.engine)
        return self.engine

    def settle(self, engine: Engine) -> None:
        with engine.connect() as plain:
            conn = plain.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text(f"VACUUM ANALYZE {', '.join((*CATALOG_TABLES, VERSIONS))}"))
            if self.can_checkpoint:
                try:
                    conn.execute(text("CHECKPOINT"))
                except DBAPIError:
                    self.can_checkpoint = False  # not a superuser: live with checkpoints

    def bulk_load(self, engine: Engine, source: Prepared, replace: bool) -> None:
        with write_transaction(engine) as conn:
            if replace:
                conn.execute(text(f"TRUNCATE {', '.join(CATALOG_TABLES)}"))
            cursor = conn.connection.cursor()
            try:
                for table in CATALOG_TABLES:
                    sql = f"COPY {table} ({', '.join(columns(table))}) FROM STDIN"
                    cursor.copy_expert(sql, io.BytesIO(source.copy_text[table]))
            finally:
                cursor.close()

    def probe(self, conn: Connection) -> Any:
        # The backend's pending counters: within one transaction they only grow, so the
        # difference of two reads is exactly what the transaction did.
        rows = conn.execute(
            text(
                "SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), "
                "coalesce(sum(n_tup_del), 0), txid_current_if_assigned() "
                "FROM pg_stat_xact_user_tables "
                "WHERE schemaname = current_schema() AND relname = ANY(:tables)"
            ),
            {"tables": list(CATALOG_TABLES)},
        ).one()
        versions = conn.execute(
            text(
                "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
                "FROM pg_stat_xact_user_tables "
                "WHERE schemaname = current_schema() AND relname = :table"
            ),
            {"table": VERSIONS},
        ).scalar_one()
        return (*tuple(rows), versions)

    def versions_written(self, before: Any, after: Any) -> int | None:
        return int(after[4]) - int(before[4])

    def versions_size(self, engine: Engine) -> tuple[int, int]:
        with engine.connect() as plain:
            conn = plain.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text(f"VACUUM {VERSIONS}"))
            size = conn.execute(text(f"SELECT pg_total_relation_size('{VERSIONS}')")).scalar_one()
            rows = conn.execute(text(f"SELECT count(*) FROM {VERSIONS}")).scalar_one()
        return int(size), int(rows)

    def written(self, engine: Engine, before: Any, after: Any) -> tuple[int | None, str]:
        inserted, updated, deleted = (int(after[i]) - int(before[i]) for i in range(3))
        versions = 0
        xid = after[3]
        if xid is not None:
            with engine.connect() as conn:
                for table in CATALOG_TABLES:
                    versions += int(
                        conn.execute(
                            text(f"SELECT count(*) FROM {table} WHERE xmin = CAST(:xid AS xid)"),
                            {"xid": str(int(xid) % 2**32)},
                        ).scalar_one()
                    )
        agree = "" if versions == inserted + updated else f" MISMATCH: {versions} xmin versions"
        detail = (
            f"ins {inserted} upd {updated} del {deleted}; row versions with its xmin {versions}"
        )
        return inserted + updated + deleted, detail + agree

    def describe(self) -> str:
        with self.admin.connect() as conn:
            settings = {
                name: conn.execute(text(f"SHOW {name}")).scalar_one()
                for name in (
                    "server_version",
                    "fsync",
                    "synchronous_commit",
                    "shared_buffers",
                    "max_wal_size",
                )
            }
        return (
            f"PostgreSQL {settings['server_version']} ({self.origin}; "
            f"{mask_url(str(self.server_url))}); fsync={settings['fsync']}, "
            f"synchronous_commit={settings['synchronous_commit']}, "
            f"shared_buffers={settings['shared_buffers']}, max_wal_size={settings['max_wal_size']}"
        )

    def close(self) -> None:
        self.dispose_engine()
        with self.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        self.admin.dispose()


class SqliteTarget(DatabaseTarget):
    """A SQLite file in a temporary directory; each fresh catalog is a new file."""

    name = "sqlite"

    def __init__(self) -> None:
        self.directory = tempfile.TemporaryDirectory(prefix="bench-sync-")
        self.files = 0

    def fresh(self) -> Engine:
        self.dispose_engine()
        for stale in Path(self.directory.name).iterdir():
            stale.unlink()
        self.files += 1
        self.engine = make_engine(f"sqlite:///{self.directory.name}/catalog-{self.files}.db")
        create_schema(self.engine)
        return self.engine

    def settle(self, engine: Engine) -> None:
        raw = engine.raw_connection()  # autocommit: a checkpoint cannot run inside a transaction
        try:
            cursor = raw.cursor()
            cursor.execute("ANALYZE")
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()

    def bulk_load(self, engine: Engine, source: Prepared, replace: bool) -> None:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            if replace:
                for table in reversed(CATALOG_TABLES):
                    cursor.execute(f"DELETE FROM {table}")
            for table in CATALOG_TABLES:
                names = columns(table)
                marks = ", ".join("?" * len(names))
                sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})"
                cursor.executemany(sql, source.bound[table])
            cursor.execute("COMMIT")
        finally:
            raw.close()

    def probe(self, conn: Connection) -> Any:
        return conn.connection.dbapi_connection.total_changes  # type: ignore[union-attr]

    def versions_size(self, engine: Engine) -> tuple[int, int]:
        # dbstat: the pages of the table and of its indexes (the key's automatic one included).
        with engine.connect() as conn:
            size = conn.execute(
                text(
                    "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN (SELECT name "
                    f"FROM sqlite_master WHERE tbl_name = '{VERSIONS}')"
                )
            ).scalar_one()
            rows = conn.execute(text(f"SELECT count(*) FROM {VERSIONS}")).scalar_one()
        return int(size), int(rows)

    def written(self, engine: Engine, before: Any, after: Any) -> tuple[int | None, str]:
        changes = int(after) - int(before)
        return changes, f"sqlite3 total_changes {changes} (staging tables included)"

    def describe(self) -> str:
        return f"SQLite {sqlite3.sqlite_version} (a file in a temporary directory, WAL)"

    def close(self) -> None:
        self.dispose_engine()
        self.directory.cleanup()


def time_bulk_load(target: DatabaseTarget, engine: Engine, source: Prepared, scenario: str) -> Run:
    """The physical limit; re-sync scenarios replace the loaded rows (TRUNCATE + COPY)."""
    target.settle(engine)
    gc.collect()
    started = time.perf_counter()
    target.bulk_load(engine, source, replace=scenario != "initial")
    seconds = time.perf_counter() - started
    verb = "copied" if scenario == "initial" else "truncated, then copied"
    return Run(seconds, source.total_rows, f"{verb} {source.total_rows} rows")


def time_sync(
    target: DatabaseTarget,
    engine: Engine,
    source: Prepared,
    scenario: str,
    options: SyncOptions = SYNC_OPTIONS,
) -> Run:
    """``sync_products`` in the caller's transaction, from first product pulled to COMMIT."""
    target.settle(engine)
    run_id = start_run(engine, "bench_sync")
    extraction = complete_extraction(len(source.products))
    gc.collect()
    started = time.perf_counter()
    with write_transaction(engine) as conn:
        before = target.probe(conn)
        report = sync_products(conn, source.products, extraction, run_id, options)
        after = target.probe(conn)
    seconds = time.perf_counter() - started
    written, how = target.written(engine, before, after)
    stats = report.stats
    detail = (
        f"inserted {stats.inserted} updated {stats.updated} unchanged {stats.unchanged} "
        f"deleted {stats.deleted} rejected {stats.rejected}; {how}"
    )
    run = Run(seconds, written, detail)
    if options.history:
        run.versions_written = target.versions_written(before, after)
        run.versions_bytes, run.versions_rows = target.versions_size(engine)
        run.detail += (
            f"; versions opened {report.versions_opened} closed {report.versions_closed}, "
            f"table {run.versions_rows} rows {run.versions_bytes:,} B"
        )
        if run.versions_written is not None:
            run.detail += f", version rows written {run.versions_written}"
    return run


def naive_upsert(engine: Engine, products: Iterable[dict[str, Any]]) -> None:
    """The starting point: per product, get it, set every field, replace children, commit.

    A baseline to compare with, not product code: it makes several round trips and one
    commit per product, then deletes the products it did not see, one by one.
    """
    seen: set[int] = set()
    with Session(engine) as session:
        for raw in products:
            rows = transform_product(raw)
            product = session.get(Product, rows.id)
            if product is None:
                product = Product()
                session.add(product)
            for name, value in rows.product.items():
                setattr(product, name, value)
            product.tags = [ProductTag(**row) for row in rows.tags]
            product.images = [ProductImage(**row) for row in rows.images]
            product.reviews = [Review(**row) for row in rows.reviews]
            session.commit()
            seen.add(rows.id)
        for product_id in session.scalars(select(Product.id)).all():
            if product_id not in seen:
                stale = session.get(Product, product_id)
                session.delete(stale)
                session.commit()


def time_naive(target: DatabaseTarget, engine: Engine, source: Prepared, scenario: str) -> Run:
    """The naive per-product ORM upsert over the same in-process source."""
    target.settle(engine)
    gc.collect()
    started = time.perf_counter()
    naive_upsert(engine, source.products)
    return Run(time.perf_counter() - started, None, "one commit per product")


# --- the local DummyJSON server in a process of its own -----------------------------------------


def local_settings(api_url: str, database_url: str) -> Settings:
    """Production settings against the local server: page size 100, no request pacing.

    The pacing that keeps a run within DummyJSON's rate limit is not a cost of the load; every
    other setting (concurrency included) is the production default.
    """
    wanted: dict[str, Any] = {
        "api_url": api_url,
        "database_url": database_url,
        "page_size": 100,
        "rate_limit": 0.0,
    }
    known = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{name: value for name, value in wanted.items() if name in known})


def time_end_to_end(
    target: DatabaseTarget, engine: Engine, server: CatalogServer, scenario: str
) -> Run:
    """``production_pipeline.run_sync`` against the local server: extraction and load."""
    server.command("catalog", "changed" if scenario == "changed" else "base")
    target.settle(engine)
    settings = local_settings(server.url, engine.url.render_as_string(hide_password=False))
    gc.collect()
    started = time.perf_counter()
    report = run_sync(settings, engine, SYNC_OPTIONS)
    seconds = time.perf_counter() - started
    stats = report.stats
    detail = (
        f"{stats.pages} pages; inserted {stats.inserted} updated {stats.updated} "
        f"unchanged {stats.unchanged} deleted {stats.deleted}"
    )
    return Run(seconds, None, detail)


# --- peak memory, in child processes ----------------------------------------------------------


def _memory_child(url: str, n: int, scenario: str, pipe: Pipe) -> None:
    """Child process: sync a lazily generated source, then report this process's peak RSS."""
    try:
        engine = make_engine(url)
        run_id = start_run(engine, "bench_sync_memory")
        baseline = vm_kib("VmHWM")
        started = time.perf_counter()
        with write_transaction(engine) as conn:
            report = sync_products(
                conn,
                iter_source(n, scenario),
                complete_extraction(source_size(n, scenario)),
                run_id,
                SYNC_OPTIONS,
            )
        seconds = time.perf_counter() - started
        engine.dispose()
        stats = report.stats
        pipe.send(
            {
                "peak_kib": vm_kib("VmHWM"),
                "baseline_kib": baseline,
                "seconds": seconds,
                "detail": f"inserted {stats.inserted} updated {stats.updated} "
                f"unchanged {stats.unchanged} deleted {stats.deleted}",
            }
        )
    except Exception as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        raise


def measure_memory(url: str, n: int, scenario: str) -> dict[str, Any]:
    """Run one sync in a spawned child and return its peak RSS (``VmHWM``) and timings.

    ``VmHWM`` rather than ``ru_maxrss``: Linux carries ``ru_maxrss`` across fork and exec, so a
    child of this large parent would report the parent's peak.
    """
    return run_in_child(_memory_child, url, n, scenario)


def profile_initial_load(target: DatabaseTarget, n: int, out: Output) -> None:
    """cProfile one initial load (untimed, after the measurements) and print the top 15 lines."""
    source = build_sources(n, ())["initial"]
    engine = target.fresh()
    target.settle(engine)
    run_id = start_run(engine, "bench_sync_profile")
    profiler = cProfile.Profile()
    gc.collect()
    with write_transaction(engine) as conn:
        profiler.enable()
        sync_products(conn, source.products, complete_extraction(n), run_id, SYNC_OPTIONS)
        profiler.disable()
    text_out = io.StringIO()
    pstats.Stats(profiler, stream=text_out).sort_stats("cumulative").print_stats(15)
    out()
    out(
        f"profile: {target.name}, initial load of {n:,} products "
        "(cProfile of the calling thread only, by cumulative time):"
    )
    for line in text_out.getvalue().strip().splitlines():
        if line.strip():
            out(f"    {line.rstrip()}")


# --- reporting --------------------------------------------------------------------------------


# --- the benchmark ----------------------------------------------------------------------------

Key = tuple[str, int, str, str]  # (database, N, approach, scenario)


@dataclass
class Results:
    """Every timed section, by (database, N, approach, scenario), one entry per repetition."""

    runs: dict[Key, list[Run]] = field(default_factory=dict)
    memory: dict[tuple[str, int, str], dict[str, Any]] = field(default_factory=dict)
    rows: dict[tuple[int, str], int] = field(default_factory=dict)  # (N, scenario) -> rows
    errors: list[str] = field(default_factory=list)

    def add(self, key: Key, run: Run) -> None:
        self.runs.setdefault(key, []).append(run)

    def seconds(self, key: Key) -> list[float]:
        return [run.seconds for run in self.runs.get(key, [])]

    def paired(self, numerator: Key, denominator: Key, scale: float = 1.0) -> list[float]:
        """Per repetition, numerator time x scale / denominator time."""
        top, bottom = self.seconds(numerator), self.seconds(denominator)
        return [a * scale / b for a, b in zip(top, bottom, strict=False) if b > 0]


@dataclass(frozen=True)
class Plan:
    """What to run."""

    sizes: tuple[int, ...]
    repeats: int
    databases: tuple[str, ...]
    end_to_end: bool
    naive_size: int
    memory: bool
    profile: bool = False
    unknown_field: bool = False
    history_off: bool = False


def plan_approaches(plan: Plan, n: int) -> list[str]:
    """The approaches timed at size N."""
    approaches = ["copy", "sync"]
    if plan.history_off:
        approaches.append("nohist")
    if n == plan.naive_size:
        approaches.append("naive")
    if plan.end_to_end:
        approaches.append("e2e")
    if plan.unknown_field:
        approaches.append("extra")
    return approaches


def run_repetitions(
    plan: Plan,
    targets: dict[str, DatabaseTarget],
    results: Results,
    out: Output,
    stack: ExitStack,
) -> None:
    """Every approach, every scenario, interleaved: repetition 1 runs all, then repetition 2..."""
    servers: dict[int, CatalogServer] = {}
    all_sources: dict[int, dict[str, Prepared]] = {}
    extra_sources: dict[int, dict[str, Prepared]] = {}
    for n in plan.sizes:
        if plan.unknown_field:
            extra_sources[n] = build_sources(n, plan.databases, unknown_field=True)
        sources = all_sources[n] = build_sources(n, plan.databases)
        for scenario, source in sources.items():
            results.rows[(n, scenario)] = source.total_rows
        counts = sources["initial"].rows
        out(
            f"N={n:,}: {sources['initial'].total_rows:,} rows "
            f"({', '.join(f'{t} {c:,}' for t, c in counts.items())}); changed source: "
            f"{len(sources['changed'].products):,} products, {sources['changed'].total_rows:,} rows"
        )
        if plan.end_to_end:
            servers[n] = stack.enter_context(CatalogServer(n, changed=True))
            out(
                f"N={n:,}: local server in its own process, cache pre-warmed in "
                f"{servers[n].warmup_seconds:.1f} s (untimed)"
            )
    gc.collect()
    gc.freeze()  # the sources live through every run: keep them out of the collector's way
    out()
    out("raw timings (seconds; each on a fresh schema):")
    for rep in range(plan.repeats):
        for database in plan.databases:
            target = targets[database]
            for n in plan.sizes:
                approaches = plan_approaches(plan, n)
                shift = rep % len(approaches)  # rotate who goes first, so no approach always does
                for approach in approaches[shift:] + approaches[:shift]:
                    engine = target.fresh()
                    for scenario in SCENARIOS:
                        by_size = extra_sources if approach == "extra" else all_sources
                        source = by_size[n][scenario]
                        key = (database, n, approach, scenario)
                        run = _time_one(target, engine, source, approach, scenario, servers.get(n))
                        actual = target.counts(engine)
                        if actual != source.rows:
                            run.error = f"catalog {actual} != expected {source.rows}"
                            results.errors.append(f"{key} rep {rep + 1}: {run.error}")
                        results.add(key, run)
                        out(
                            f"  rep {rep + 1} {database:<10} N={n:<9,} {approach:<5} "
                            f"{scenario:<9} {run.seconds:8.3f} s  {run.detail}"
                            + (f"  ERROR {run.error}" if run.error else "")
                        )
    for server in servers.values():
        server.close()
    all_sources.clear()
    extra_sources.clear()
    gc.unfreeze()
    gc.collect()


def _time_one(
    target: DatabaseTarget,
    engine: Engine,
    source: Prepared,
    approach: str,
    scenario: str,
    server: CatalogServer | None,
) -> Run:
    if approach == "copy":
        return time_bulk_load(target, engine, source, scenario)
    if approach in ("sync", "extra"):
        return time_sync(target, engine, source, scenario)
    if approach == "nohist":
        return time_sync(target, engine, source, scenario, NO_HISTORY)
    if approach == "naive":
        return time_naive(target, engine, source, scenario)
    assert server is not None
    return time_end_to_end(target, engine, server, scenario)


def run_memory(
    plan: Plan, targets: dict[str, DatabaseTarget], results: Results, out: Output
) -> None:
    """Peak RSS of each sync scenario in a child that generates its source lazily."""
    out()
    out("peak memory runs (child processes, lazy source):")
    for database in plan.databases:
        target = targets[database]
        for n in plan.sizes:
            target.fresh()
            url = target.url()
            for scenario in SCENARIOS:
                result = measure_memory(url, n, scenario)
                results.memory[(database, n, scenario)] = result
                if "error" in result:
                    results.errors.append(f"memory {database} {n} {scenario}: {result['error']}")
                    out(f"  {database:<10} N={n:<9,} {scenario:<9} ERROR {result['error']}")
                    continue
                out(
                    f"  {database:<10} N={n:<9,} {scenario:<9} "
                    f"peak {result['peak_kib'] / 1024:7.1f} MB "
                    f"(after imports and connect {result['baseline_kib'] / 1024:.1f} MB), "
                    f"{result['seconds']:.1f} s incl. generation; {result['detail']}"
                )


def summarize(plan: Plan, results: Results, titles: dict[str, str], out: Output) -> bool:
    """The PERFORMANCE.md-style tables and the target checks; True if every target passed."""
    all_passed = True
    for database in plan.databases:
        copy_title = SQLITE_COPY_TITLE if database == "sqlite" else APPROACH_TITLES["copy"]
        for n in plan.sizes:
            out()
            out(f"## {titles[database]}, {n:,} products")
            out()
            out(
                "Figure = wall time ÷ wall time of the COPY limit in the same repetition "
                "(median [min..max] of the paired ratios); lower is better."
            )
            out()
            out(f"| approach, {n:,} products | " + " | ".join(SCENARIO_TITLES.values()) + " |")
            out("|---|---|---|---|")
            for approach in ("copy", "sync", "nohist", "naive", "e2e", "extra"):
                if (database, n, approach, "initial") not in results.runs:
                    continue
                title = copy_title if approach == "copy" else APPROACH_TITLES[approach]
                cells = [
                    median_range(
                        results.paired((database, n, approach, s), (database, n, "copy", s))
                    )
                    for s in SCENARIOS
                ]
                out(f"| {title} | " + " | ".join(cells) + " |")
            out()
            out(
                "| approach | scenario | median s | min..max s | products/s | rows/s "
                "| rows written |"
            )
            out("|---|---|---|---|---|---|---|")
            for approach in ("copy", "sync", "nohist", "naive", "e2e", "extra"):
                for scenario in SCENARIOS:
                    key = (database, n, approach, scenario)
                    if key not in results.runs:
                        continue
                    seconds = results.seconds(key)
                    middle = statistics.median(seconds)
                    products = source_size(n, scenario)
                    rows = results.rows[(n, scenario)]
                    written = [float(r.written) for r in results.runs[key] if r.written is not None]
                    shown = median_range(written, "{:,.0f}") if written else "not measured"
                    title = copy_title if approach == "copy" else APPROACH_TITLES[approach]
                    out(
                        f"| {title} | {SCENARIO_TITLES[scenario]} | {middle:.3f} | "
                        f"{min(seconds):.3f}..{max(seconds):.3f} | {products / middle:,.0f} | "
                        f"{rows / middle:,.0f} | "
                        f"{shown} |"
                    )
            out()
            out(
                "products/s and rows/s: the scenario's source (the catalog after the run) per "
                "wall-clock second. rows written: PostgreSQL, catalog rows inserted + updated + "
                "deleted by the transaction (pg_stat_xact_user_tables, cross-checked against "
                "xmin); SQLite, sqlite3 total_changes (staging tables included); COPY limit, "
                "rows copied."
            )
            all_passed &= _check_targets(plan, results, database, n, out)
        _memory_table(plan, results, database, out)
        if database == "postgresql":
            all_passed &= _check_memory(plan, results, out)
    return all_passed


def _check_targets(plan: Plan, results: Results, database: str, n: int, out: Output) -> bool:
    """The issue's targets for one size; binding on PostgreSQL, for reference on SQLite."""
    binding = database == "postgresql"
    out()
    out(
        f"targets, {n:,} products ({'binding' if binding else 'for reference only'}; "
        "median [min..max] of per-repetition ratios):"
    )

    def key(approach: str, scenario: str) -> Key:
        return (database, n, approach, scenario)

    passed = True
    checks: list[tuple[str, list[float], float, str]] = [
        (
            "initial load throughput ÷ COPY limit throughput",
            results.paired(key("copy", "initial"), key("sync", "initial")),
            TARGET_COPY_FRACTION,
            f">= {TARGET_COPY_FRACTION:.2f} (aim {AIM_COPY_FRACTION:.2f})",
        ),
        (
            "no-change re-sync speed-up over the initial load",
            results.paired(key("sync", "initial"), key("sync", "no-change")),
            TARGET_NO_CHANGE_SPEEDUP,
            f">= {TARGET_NO_CHANGE_SPEEDUP:.0f}x",
        ),
        (
            "10%-changed sync speed-up over the initial load",
            results.paired(key("sync", "initial"), key("sync", "changed")),
            TARGET_CHANGED_SPEEDUP,
            f">= {TARGET_CHANGED_SPEEDUP:.0f}x",
        ),
    ]
    naive_n = plan.naive_size
    naive_key = (database, naive_n, "naive", "initial")
    if naive_key in results.runs:
        measured = n == naive_n
        ratios = results.paired(naive_key, key("sync", "initial"), scale=n / naive_n)
        label = "initial load speed-up over the naive ORM upsert"
        if not measured:
            label += f" (EXTRAPOLATED: naive measured at {naive_n:,}, scaled linearly to {n:,})"
        checks.append((label, ratios, TARGET_NAIVE_SPEEDUP, f">= {TARGET_NAIVE_SPEEDUP:.0f}x"))
    for label, ratios, threshold, wanted in checks:
        if not ratios:
            out(f"  {label}: not measured")
            continue
        ok = statistics.median(ratios) >= threshold
        mark = verdict(ok) if binding else "-"
        out(f"  {mark:<4} {label}: {median_range(ratios)}  (target {wanted})")
        passed &= ok or not binding
    written = [r.written for r in results.runs.get(key("sync", "no-change"), [])]
    if written:
        ok = all(w == 0 for w in written)
        mark = verdict(ok) if binding else "-"
        shown = ", ".join("not measured" if w is None else str(w) for w in written)
        out(f"  {mark:<4} catalog rows written by the no-change re-sync: {shown}  (target 0)")
        passed &= ok or not binding
    passed &= _check_history(results, database, n, binding, out)
    if n == naive_n:
        for scenario in ("no-change", "changed"):
            ratios = results.paired(key("naive", scenario), key("sync", scenario))
            if ratios:
                out(
                    f"  info {SCENARIO_TITLES[scenario]} speed-up over the naive ORM upsert: "
                    f"{median_range(ratios)}"
                )
    for scenario in SCENARIOS:
        ratios = results.paired(key("e2e", scenario), key("sync", scenario))
        if ratios:
            out(
                f"  info end to end ÷ in-process, {SCENARIO_TITLES[scenario]}: "
                f"{median_range(ratios)}"
            )
    for scenario in SCENARIOS:
        ratios = results.paired(key("extra", scenario), key("sync", scenario))
        if ratios:
            out(
                f"  info an unknown field on every product ÷ none, "
                f"{SCENARIO_TITLES[scenario]}: {median_range(ratios)}"
            )
    return passed


def _check_history(results: Results, database: str, n: int, binding: bool, out: Output) -> bool:
    """Issue 14's targets: history on against off, no version written by a no-change re-sync,
    and what the versions table holds per changed product."""

    def key(approach: str, scenario: str) -> Key:
        return (database, n, approach, scenario)

    if key("nohist", "initial") not in results.runs:
        return True
    passed = True
    for scenario, threshold in (
        ("initial", TARGET_HISTORY_INITIAL),
        ("changed", TARGET_HISTORY_CHANGED),
    ):
        ratios = results.paired(key("sync", scenario), key("nohist", scenario))
        ok = bool(ratios) and statistics.median(ratios) <= threshold
        mark = verdict(ok) if binding else "-"
        out(
            f"  {mark:<4} history on ÷ off, {SCENARIO_TITLES[scenario]}: "
            f"{median_range(ratios)}  (target <= {threshold:.2f}x)"
        )
        passed &= ok or not binding
    ratios = results.paired(key("sync", "no-change"), key("nohist", "no-change"))
    out(f"  info history on ÷ off, {SCENARIO_TITLES['no-change']}: {median_range(ratios)}")
    versions = [r.versions_written for r in results.runs.get(key("sync", "no-change"), [])]
    if any(v is not None for v in versions):
        ok = all(v == 0 for v in versions)
        mark = verdict(ok) if binding else "-"
        out(f"  {mark:<4} version rows written by the no-change re-sync: {versions}  (target 0)")
        passed &= ok or not binding
    initial = results.runs.get(key("sync", "initial"), [])
    changed = results.runs.get(key("sync", "changed"), [])
    updated = source_size(n, "changed") // 10  # every 10th product changed, none of them removed
    sizes = [
        (a.versions_bytes, a.versions_rows, b.versions_bytes)
        for a, b in zip(initial, changed, strict=False)
        if a.versions_bytes and a.versions_rows and b.versions_bytes
    ]
    if sizes:
        per_version = median_range([size / rows for size, rows, _ in sizes], "{:.0f}")
        growth = median_range([(after - size) / updated for size, _, after in sizes], "{:.0f}")
        out(
            f"  info product_versions after the initial load: {per_version} B a version "
            f"(indexes included); grown by the 10%-changed re-sync: {growth} B per changed "
            "product"
        )
    return passed


def _memory_table(plan: Plan, results: Results, database: str, out: Output) -> None:
    rows = [(k, v) for k, v in results.memory.items() if k[0] == database and "error" not in v]
    if not rows:
        return
    out()
    out(f"peak memory, {database} (child process per scenario, lazy source, VmHWM):")
    out()
    out("| products | " + " | ".join(SCENARIO_TITLES.values()) + " | after imports and connect |")
    out("|---|---|---|---|---|")
    for n in plan.sizes:
        cells = []
        baseline = "n/a"
        for scenario in SCENARIOS:
            result = results.memory.get((database, n, scenario), {})
            if "peak_kib" in result:
                cells.append(f"{result['peak_kib'] / 1024:.0f} MB")
                baseline = f"{result['baseline_kib'] / 1024:.0f} MB"
            else:
                cells.append("n/a")
        out(f"| {n:,} | " + " | ".join(cells) + f" | {baseline} |")


def _check_memory(plan: Plan, results: Results, out: Output) -> bool:
    peaks = {
        n: max(
            (results.memory.get(("postgresql", n, s), {}).get("peak_kib", 0) for s in SCENARIOS),
            default=0,
        )
        / 1024
        for n in plan.sizes
    }
    measured = {n: mb for n, mb in peaks.items() if mb > 0}
    out()
    if MILLION in measured:
        ok = measured[MILLION] <= TARGET_PEAK_MB_AT_MILLION
        out(
            f"  {verdict(ok):<4} peak memory at 1,000,000 products: {measured[MILLION]:.0f} MB "
            f"(target <= {TARGET_PEAK_MB_AT_MILLION:.0f} MB)"
        )
        return ok
    if not measured:
        out("  peak memory: not measured (--no-memory)")
        return True
    shown = ", ".join(f"{n:,}: {mb:.0f} MB" for n, mb in sorted(measured.items()))
    out(
        f"  n/a  peak memory at 1,000,000 products: not measured (pass --million); "
        f"measured peaks {shown}"
    )
    return True


# --- command line -----------------------------------------------------------------------------


def parse_sizes(text_value: str) -> tuple[int, ...]:
    """``10000,100000`` -> (10000, 100000)."""
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text_value.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected sizes like 10000,100000, got {text_value!r}"
        ) from None
    if not sizes or min(sizes) < 100:
        raise argparse.ArgumentTypeError(f"expected sizes of at least 100, got {text_value!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_sync",
        description="Benchmark the production sync against the COPY limit and a naive upsert.",
    )
    parser.add_argument("--sizes", type=parse_sizes, default=(10_000, 100_000))
    parser.add_argument("--million", action="store_true", help="add 1,000,000 products")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--database", choices=("postgresql", "sqlite", "both"), default="both")
    parser.add_argument(
        "--end-to-end", action="store_true", help="also sync through the local HTTP server"
    )
    parser.add_argument(
        "--naive-size", type=int, default=10_000, help="N for the naive ORM upsert (0 = skip)"
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the peak-memory child processes"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the timed runs, cProfile one initial load at the largest N (top 15 lines)",
    )
    parser.add_argument(
        "--unknown-field",
        action="store_true",
        help=f"also sync a source whose every product has a field the mapping does not know "
        f"({UNKNOWN_FIELD!r}), to measure what keeping it in products.extras costs",
    )
    parser.add_argument(
        "--history-off",
        action="store_true",
        help="also time the sync with product history off (--no-history), side by side",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a binding target fails")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran, 1 when a run failed (or --strict and a target failed)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(arguments)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if args.repeats < 1:
        print("error: --repeats: expected at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("production_pipeline").setLevel(logging.WARNING)
    logging.getLogger("data_pipeline").setLevel(logging.WARNING)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    sizes = set(args.sizes) | ({MILLION} if args.million else set())
    if args.naive_size:
        sizes.add(args.naive_size)
    databases = ("postgresql", "sqlite") if args.database == "both" else (args.database,)
    plan = Plan(
        tuple(sorted(sizes)),
        args.repeats,
        databases,
        args.end_to_end,
        args.naive_size,
        not args.no_memory,
        args.profile,
        args.unknown_field,
        args.history_off,
    )
    out = Output(results_path("bench_sync"))
    try:
        return _run(plan, arguments, out, args.strict)
    finally:
        out.close()
        log.info("results written to %s", out.path.relative_to(ROOT))


def open_targets(plan: Plan, stack: ExitStack) -> dict[str, DatabaseTarget]:
    """The databases to write to; PostgreSQL is BENCH_DATABASE_URL or a throwaway server."""
    targets: dict[str, DatabaseTarget] = {}
    if "postgresql" in plan.databases:
        configured = os.environ.get("BENCH_DATABASE_URL")
        if configured:
            server_url, origin = configured, "BENCH_DATABASE_URL"
        else:
            server_url = stack.enter_context(throwaway_postgres())
            origin = "throwaway pgserver, Unix socket"
        postgres = PostgresTarget(server_url, origin)
        stack.callback(postgres.close)
        targets["postgresql"] = postgres
    if "sqlite" in plan.databases:
        sqlite = SqliteTarget()
        stack.callback(sqlite.close)
        targets["sqlite"] = sqlite
    return targets


def print_header(
    plan: Plan, arguments: list[str], targets: dict[str, DatabaseTarget], out: Output
) -> dict[str, str]:
    """The command, the machine, the servers and the method; returns a title per database."""
    titles: dict[str, str] = {}
    out(f"# bench_sync, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    out()
    out(f"command: {command_line('benchmarks.bench_sync', arguments)}")
    for line in machine_lines():
        out(line)
    for database, target in targets.items():
        description = target.describe()
        titles[database] = description.split(" (")[0]
        out(f"{database}: {description}")
    out(
        "source: synthetic DummyJSON products (tools.local_api.make_product, seed 0), "
        "JSON-encoded, then decoded by the client's decode_json (exact decimals, each product's "
        "digest) before the clock starts"
    )
    out(
        "timed: from the first product pulled to COMMIT, on a fresh schema per approach and "
        "repetition; untimed before each section: VACUUM ANALYZE + CHECKPOINT (PostgreSQL), "
        "ANALYZE + wal_checkpoint (SQLite)"
    )
    out(
        "scenarios: initial load into an empty catalog; re-run with no change; "
        "every 10th product changed (variant 1) and ids ending in 01 removed (1%)"
    )
    out(
        f"repetitions: {plan.repeats}, interleaved (each repetition runs every approach, "
        "the first one rotating); figures are medians of per-repetition paired ratios"
    )
    if plan.naive_size:
        out(f"naive ORM upsert: at {plan.naive_size:,} products only")
    if plan.end_to_end:
        settings = local_settings("http://127.0.0.1", "")
        out(
            "end to end: production_pipeline.run_sync against tools.local_api.FakeDummyJson in "
            f"its own process; page size {settings.page_size}, concurrency "
            f"{getattr(settings, 'concurrency', 1)}, request pacing off"
        )
    out()
    return titles


def _run(plan: Plan, arguments: list[str], out: Output, strict: bool) -> int:
    with ExitStack() as stack:
        targets = open_targets(plan, stack)
        titles = print_header(plan, arguments, targets, out)
        results = Results()
        run_repetitions(plan, targets, results, out, stack)
        if plan.memory:
            run_memory(plan, targets, results, out)
        passed = summarize(plan, results, titles, out)
        if plan.profile:
            for target in targets.values():
                profile_initial_load(target, max(plan.sizes), out)
        out()
        if results.errors:
            out("ERRORS (an approach left the catalog in the wrong state):")
            for error in results.errors:
                out(f"  {error}")
            return 1
        out(f"all binding targets passed: {'yes' if passed else 'no'}")
        return 1 if strict and not passed else 0


if __name__ == "__main__":
    raise SystemExit(main())
