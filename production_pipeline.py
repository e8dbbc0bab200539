"""Exercise 2-1: the production sync, which keeps the database equal to the API's catalog.

One run, one transaction:

1. take the writer's lock (PostgreSQL: an advisory lock; SQLite: ``BEGIN IMMEDIATE``), so a
   second sync waits instead of interleaving;
2. read each product's content hash from the catalog, then stream the API's pages: a product
   whose hash is unchanged is counted and skipped before any row is built; a new product's rows
   are written straight into the catalog tables, a changed product's into staging tables
   (PostgreSQL: ``COPY``; SQLite: batched inserts);
3. when extraction is complete, delete the products the API no longer has (children by
   cascade), unless the extraction is incomplete or the deletion is larger than the allowed
   fraction: then the run is refused and nothing changes;
4. merge staging into the catalog with set-based SQL (``INSERT ... ON CONFLICT DO UPDATE``, then
   the changed products' children replaced), and commit.

Killing the process at any moment leaves the database as it was before the run or as after it.

Run ``python production_pipeline.py --help``. The offline demo serves a local catalog first:
``python -m tests.fake_api --port 8000 & python production_pipeline.py --api-url http://127.0.0.1:8000``.
"""

from __future__ import annotations

import argparse
import io
import logging
import queue
import sys
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import Column, Connection, Engine, MetaData, Table, delete, insert, select, text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from tqdm import tqdm

from data_pipeline import (
    ConfigError,
    DummyJsonClient,
    Extraction,
    InvalidProduct,
    PipelineError,
    ProductRows,
    RunStats,
    Settings,
    add_settings_arguments,
    configure_logging,
    content_hash,
    finish_run,
    is_int,
    iter_products,
    one_line,
    open_database,
    parse_args,
    rejection_row,
    resolve_settings,
    start_run,
    transform_product,
)
from models import (
    CATALOG_TABLES,
    Base,
    PipelineRun,
    Product,
    ProductImage,
    ProductTag,
    RejectedRecord,
    Review,
    UtcDateTime,
    mask_url,
    write_transaction,
)

log = logging.getLogger(__name__)

PIPELINE = "production_pipeline"
ADVISORY_LOCK_KEY = 7_301_2025  # any constant shared by every sync of this catalog
SAMPLE_IDS = 5
# Read big results in chunks (a server-side cursor on PostgreSQL): a million rows never sit in
# memory at once.
STREAMED = {"stream_results": True, "yield_per": 10_000}
COPY_SWITCH_INTERVAL = 0.0005  # seconds; see RowWriter


class SyncAborted(PipelineError):
    """A guard refused the run (incomplete extraction, mass deletion); nothing was changed."""


class SyncLocked(PipelineError):
    """Another sync holds the writer's lock on this database."""


@dataclass(frozen=True)
class SyncOptions:
    """How a sync treats stale products, and how it runs."""

    delete_stale: bool = True
    allow_mass_delete: bool = False
    max_delete_fraction: float = 0.10
    dry_run: bool = False
    batch_size: int = 1000
    lock_timeout: float = 30.0
    progress: bool = False


@dataclass
class SyncReport:
    """What a sync did (or, in a dry run, would do)."""

    stats: RunStats
    deletion: str = ""
    extraction: str = ""
    samples: dict[str, list[int]] = field(
        default_factory=lambda: {"inserted": [], "updated": [], "deleted": []}
    )

    def sample(self, action: str, product_id: int) -> None:
        """Keep the first few ids of each action, for the dry-run report."""
        ids = self.samples[action]
        if len(ids) < SAMPLE_IDS:
            ids.append(product_id)


# --- the catalog as it was before the run -----------------------------------------------------


class CatalogIndex:
    """The ids and content hashes already in the catalog, in two sorted arrays.

    Sixteen bytes a product plus one byte to mark it seen: a million products take about 17 MB,
    where a dict of ints would take ten times that.
    """

    def __init__(self, ids: array[int], hashes: array[int]) -> None:
        self.ids = ids
        self.hashes = hashes
        self.seen = bytearray(len(ids))

    def __len__(self) -> int:
        return len(self.ids)

    def classify(self, product_id: int, digest: int) -> str:
        """'new', 'changed' or 'unchanged', and mark the product as seen by this run."""
        position = bisect_left(self.ids, product_id)
        if position == len(self.ids) or self.ids[position] != product_id:
            return "new"
        self.seen[position] = 1
        return "unchanged" if self.hashes[position] == digest else "changed"

    def unseen_ids(self) -> list[int]:
        """Ids in the catalog that this run did not see: the stale products."""
        return [pid for pid, seen in zip(self.ids, self.seen, strict=True) if not seen]


# --- dialect differences, in one place --------------------------------------------------------

_STAGED_MODELS = (Product, ProductTag, ProductImage, Review)
_CHILDREN = ((ProductTag, "tags"), (ProductImage, "images"), (Review, "reviews"))


def _columns(model: type[Any]) -> list[str]:
    """The columns a sync writes (``loaded_at`` is the database's own default)."""
    return [c.name for c in model.__table__.columns if c.name != "loaded_at"]


def _staging_tables(dialect: str) -> dict[str, Table]:
    """Temporary tables shaped like the catalog's, without keys (cheap to fill)."""
    metadata = MetaData()
    options: dict[str, Any] = {"postgresql_on_commit": "DROP"} if dialect == "postgresql" else {}
    return {
        model.__tablename__: Table(
            f"stage_{model.__tablename__}",
            metadata,
            *(Column(name, model.__table__.c[name].type) for name in _columns(model)),
            prefixes=["TEMPORARY"],
            **options,
        )
        for model in _STAGED_MODELS
    }


def _escape(text: str) -> str:
    """Backslash, tab, newline and carriage return escaped for COPY's text format.

    Four ``str.replace`` calls: about ten times faster than ``str.translate`` with a table.
    """
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_text(rows: Sequence[dict[str, Any]], columns: Sequence[Column[Any]]) -> str:
    r"""Rows in PostgreSQL's COPY text format: tab-separated, ``\N`` for NULL, text escaped.

    This runs for every value written, so it works a column at a time, which in CPython costs
    half of a value-at-a-time loop: a text column is escaped value by value only when one of
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
            # wait 5 ms each time while the server idles; measured on two cores, a shorter
            # interval takes the initial load from about half the COPY limit to three quarters.
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


# --- the sync ---------------------------------------------------------------------------------


@dataclass
class _Batch:
    """Rows waiting to be written: new products go to the catalog, changed ones to staging."""

    new: list[ProductRows] = field(default_factory=list)
    changed: list[ProductRows] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.new) + len(self.changed) + len(self.rejected)


def _write_products(writer: RowWriter, tables: dict[str, Table], batch: list[ProductRows]) -> None:
    """Products first, then their children, so foreign keys hold at every moment."""
    writer.write(tables["products"], [rows.product for rows in batch])
    for model, attr in _CHILDREN:
        children = [child for rows in batch for child in getattr(rows, attr)]
        writer.write(tables[model.__tablename__], children)


def _flush(writer: RowWriter, staging: dict[str, Table], batch: _Batch) -> None:
    """Write a batch: new products into the catalog, changed into staging, rejections aside."""
    catalog = {name: Base.metadata.tables[name] for name in CATALOG_TABLES}
    _write_products(writer, catalog, batch.new)
    _write_products(writer, staging, batch.changed)
    if batch.rejected:
        rejected = batch.rejected

        def record_rejections() -> None:
            writer.conn.execute(insert(RejectedRecord), rejected)

        writer.submit(record_rejections)
    batch.new, batch.changed, batch.rejected = [], [], []


class SkuRegistry:
    """Which product holds each sku, so a second product with the same sku is set aside.

    The catalog's skus are kept as 64-bit keys in two arrays sorted by key (16 bytes a product);
    only the skus this run writes go into a dict. The keys are Python's own string hash: it is
    fast and cached on the string, and a registry lives for one run, in one process. Two skus
    with the same key (about one chance in 30 million a run at a million products) would set
    the second product aside as a duplicate: recorded with its reason, nothing lost.
    """

    def __init__(self, keys: array[int], owners: array[int]) -> None:
        order = sorted(range(len(keys)), key=keys.__getitem__)
        self.keys = array("q", [keys[i] for i in order])
        self.owners = array("q", [owners[i] for i in order])
        self.claimed: dict[int, int] = {}

    def claim(self, rows: ProductRows) -> None:
        """Record the product's sku, or raise ``InvalidProduct`` if another product has it."""
        sku = rows.product["sku"]
        if sku is None:
            return
        key = hash(sku)
        owner = self.claimed.get(key)
        if owner is None:
            position = bisect_left(self.keys, key)
            if position < len(self.keys) and self.keys[position] == key:
                owner = self.owners[position]
        if owner is None or owner == rows.id:
            self.claimed[key] = rows.id
            return
        raise InvalidProduct(f"sku: {sku!r} is already used by product {owner}", source_id=rows.id)


def read_catalog(conn: Connection) -> tuple[CatalogIndex, SkuRegistry]:
    """The catalog as it was before the run, in one streamed read in id order."""
    ids, hashes = array("q"), array("q")
    sku_keys, sku_owners = array("q"), array("q")
    query = select(Product.id, Product.content_hash, Product.sku).order_by(Product.id)
    for product_id, digest, sku in conn.execute(query, execution_options=STREAMED):
        ids.append(product_id)
        hashes.append(digest)
        if sku is not None:
            sku_keys.append(hash(sku))
            sku_owners.append(product_id)
    return CatalogIndex(ids, hashes), SkuRegistry(sku_keys, sku_owners)


def sync_products(
    conn: Connection,
    products: Iterable[Any],
    extraction: Extraction,
    run_id: int,
    options: SyncOptions,
) -> SyncReport:
    """Make the catalog equal to ``products`` inside the caller's transaction.

    ``extraction`` must describe ``products`` once they are consumed (``iter_products`` keeps
    it up to date); stale products are deleted only if it says the extraction was complete.
    The caller commits, or rolls back for a dry run or on any error.
    """
    report = SyncReport(RunStats())
    stats = report.stats
    take_writer_lock(conn, options.lock_timeout)
    index, skus = read_catalog(conn)
    staging = _staging_tables(conn.dialect.name)
    for table in staging.values():
        table.drop(conn, checkfirst=True)
        table.create(conn)
    writer = RowWriter(conn)
    try:
        _stream(products, index, skus, writer, staging, run_id, options, report)
    except BaseException:
        writer.close(raise_errors=False)  # the error being raised is the one to report
        raise
    writer.close()
    stats.pages = extraction.pages

    stale = _stale_products(index, extraction, options, report)
    for product_id in stale[:SAMPLE_IDS]:
        report.sample("deleted", product_id)
    stats.deleted = len(stale)
    report.extraction = extraction.describe()
    if options.dry_run:
        return report
    log.info("deleting %d stale products", len(stale))
    _delete_products(conn, stale)
    log.info("merging %d changed products", stats.updated)
    merge_staging(conn, staging, options.progress)
    return report


def _stream(
    products: Iterable[Any],
    index: CatalogIndex,
    skus: SkuRegistry,
    writer: RowWriter,
    staging: dict[str, Table],
    run_id: int,
    options: SyncOptions,
    report: SyncReport,
) -> None:
    """Classify each product by its hash; write new and changed ones in batches."""
    stats = report.stats
    batch = _Batch()
    for raw in products:
        stats.extracted += 1
        product_id = raw.get("id") if isinstance(raw, dict) else None
        digest, state = None, "new"
        if is_int(product_id):
            digest = content_hash(raw)
            state = index.classify(product_id, digest)
        if state == "unchanged":
            stats.unchanged += 1
            continue
        try:
            rows = transform_product(raw, digest)
            skus.claim(rows)
        except InvalidProduct as exc:
            stats.rejected += 1
            batch.rejected.append(rejection_row(run_id, raw, exc))
            continue
        if state == "new":
            stats.inserted += 1
            batch.new.append(rows)
            report.sample("inserted", rows.id)
        else:
            stats.updated += 1
            batch.changed.append(rows)
            report.sample("updated", rows.id)
        if len(batch) >= options.batch_size:
            _flush(writer, staging, batch)
    _flush(writer, staging, batch)


def _stale_products(
    index: CatalogIndex, extraction: Extraction, options: SyncOptions, report: SyncReport
) -> list[int]:
    """The ids to delete, after the guards; raise ``SyncAborted`` when a guard refuses."""
    if not options.delete_stale:
        report.deletion = "stale products: kept (--no-delete)"
        return []
    reason = extraction.incomplete_reason()
    if reason:
        raise SyncAborted(f"extraction incomplete, nothing deleted or changed: {reason}")
    stale = index.unseen_ids()
    limit = options.max_delete_fraction * len(index)
    if stale and len(stale) > limit and not options.allow_mass_delete:
        raise SyncAborted(
            f"refusing to delete {len(stale)} of {len(index)} products "
            f"({len(stale) / len(index):.0%} > {options.max_delete_fraction:.0%}); "
            "nothing changed. Rerun with --allow-mass-delete if the source really shrank."
        )
    verb = "would be removed" if options.dry_run else "removed"
    report.deletion = f"stale products {verb}: {len(stale)}"
    return stale


def _delete_products(conn: Connection, ids: list[int], chunk: int = 500) -> None:
    """Delete products by id; the database cascades to their children."""
    for start in range(0, len(ids), chunk):
        conn.execute(delete(Product).where(Product.id.in_(ids[start : start + chunk])))


def merge_statements(staging: dict[str, Table]) -> list[tuple[str, str]]:
    """The set-based SQL that applies staged changed products: the same on both databases."""
    columns = _columns(Product)
    updates = ", ".join(f"{name} = excluded.{name}" for name in columns if name != "id")
    names = ", ".join(columns)
    statements = [
        (
            "products",
            # "WHERE true" lets SQLite tell the upsert's ON CONFLICT from a join's ON.
            f"INSERT INTO products ({names}) SELECT {names} FROM {staging['products'].name} "
            f"WHERE true ON CONFLICT (id) DO UPDATE SET {updates}, loaded_at = CURRENT_TIMESTAMP",
        )
    ]
    changed = f"SELECT id FROM {staging['products'].name}"
    for model, _ in _CHILDREN:
        table = model.__tablename__
        child_columns = ", ".join(_columns(model))
        staged = staging[table].name
        statements.append((table, f"DELETE FROM {table} WHERE product_id IN ({changed})"))
        statements.append(
            (table, f"INSERT INTO {table} ({child_columns}) SELECT {child_columns} FROM {staged}")
        )
    return statements


def merge_staging(conn: Connection, staging: dict[str, Table], progress: bool = False) -> None:
    """Run the merge statements, with a progress bar on a terminal."""
    steps = merge_statements(staging)
    with tqdm(steps, desc="merge", unit=" steps", disable=not progress, file=sys.stderr) as bar:
        for table, statement in bar:
            bar.set_postfix_str(table)
            conn.execute(text(statement))


# --- a whole run ------------------------------------------------------------------------------


def with_progress(products: Iterator[Any], extraction: Extraction, enabled: bool) -> Iterator[Any]:
    """Products unchanged, with a progress bar on a terminal (total known after page one)."""
    if not enabled:
        yield from products
        return
    with tqdm(unit=" products", desc="extract", file=sys.stderr) as bar:
        for product in products:
            if bar.total is None and extraction.total is not None:
                bar.total = extraction.total
            bar.update()
            yield product


def run_sync(settings: Settings, engine: Engine, options: SyncOptions) -> SyncReport:
    """Extract and sync in one transaction, recording the run; raise on failure or refusal."""
    extraction = Extraction()
    run_id = start_run(engine, PIPELINE)
    started = time.perf_counter()
    report = SyncReport(RunStats())
    try:
        with DummyJsonClient.from_settings(settings) as client, write_transaction(engine) as conn:
            products = with_progress(
                iter_products(
                    client, settings.page_size, extraction, concurrency=settings.concurrency
                ),
                extraction,
                options.progress,
            )
            report = sync_products(conn, products, extraction, run_id, options)
            if options.dry_run:
                conn.rollback()
    except (PipelineError, SQLAlchemyError) as exc:
        report.stats.pages = extraction.pages
        report.stats.seconds = time.perf_counter() - started
        status = "refused" if isinstance(exc, SyncAborted) else "failed"
        finish_run(engine, run_id, report.stats, status, one_line(exc))
        raise
    report.stats.seconds = time.perf_counter() - started
    finish_run(engine, run_id, report.stats, "dry-run" if options.dry_run else "succeeded")
    return report


def format_summary(report: SyncReport, dry_run: bool) -> str:
    """The final human summary: a small table, and what happened to stale products."""
    stats = report.stats
    verb = "would be " if dry_run else ""
    lines = [f"{'dry run' if dry_run else 'sync'} finished in {stats.seconds:.1f} s"]
    for label, value in (
        ("pages", stats.pages),
        ("extracted", stats.extracted),
        (f"{verb}inserted", stats.inserted),
        (f"{verb}updated", stats.updated),
        ("unchanged", stats.unchanged),
        (f"{verb}deleted", stats.deleted),
        ("rejected", stats.rejected),
    ):
        lines.append(f"  {label:<20}{value:>10}")
    lines.append(f"  extraction: {report.extraction}")
    lines.append(f"  {report.deletion}")
    if dry_run:
        for action, ids in report.samples.items():
            if ids:
                lines.append(f"  {action} ids, first {len(ids)}: {', '.join(map(str, ids))}")
        lines.append("  nothing was written (dry run)")
    return "\n".join(lines)


def format_history(engine: Engine, limit: int) -> str:
    """The last runs recorded in ``pipeline_runs``, newest first."""
    query = select(PipelineRun).order_by(PipelineRun.id.desc()).limit(limit)
    header = (
        f"{'id':>5} {'pipeline':<20} {'started (UTC)':<20} {'status':<10} {'secs':>7} "
        f"{'ins':>7} {'upd':>7} {'same':>7} {'del':>6} {'rej':>5}  error"
    )
    lines = [header]
    with Session(engine) as session:
        for run in session.scalars(query):
            lines.append(
                f"{run.id:>5} {run.pipeline:<20} {run.started_at:%Y-%m-%d %H:%M:%S} "
                f"{run.status:<10} {run.seconds or 0:>7.1f} {run.inserted:>7} {run.updated:>7} "
                f"{run.unchanged:>7} {run.deleted:>6} {run.rejected:>5}  {run.error or ''}"
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line: the shared settings plus the sync's own switches."""
    parser = argparse.ArgumentParser(
        description="Sync DummyJSON's products into the database: upsert, skip unchanged, "
        "remove stale products behind safety guards, all in one transaction."
    )
    add_settings_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="report, then roll back")
    parser.add_argument("--no-delete", action="store_true", help="never remove stale products")
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="allow removing more than --max-delete-fraction of the catalog",
    )
    parser.add_argument(
        "--max-delete-fraction",
        type=float,
        default=0.10,
        help="largest share of the catalog one run may delete (default 0.10)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for another sync to finish (PostgreSQL; default 30)",
    )
    parser.add_argument(
        "--history",
        nargs="?",
        const=10,
        type=int,
        metavar="N",
        help="print the last N runs (default 10) and exit",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sync; 0 on success, 1 if it failed or was refused, 2 on bad usage."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        settings = resolve_settings(args)
        if not 0 <= args.max_delete_fraction <= 1:
            raise ConfigError(
                f"--max-delete-fraction: expected 0..1, got {args.max_delete_fraction}"
            )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.verbose)
    options = SyncOptions(
        delete_stale=not args.no_delete,
        allow_mass_delete=args.allow_mass_delete,
        max_delete_fraction=args.max_delete_fraction,
        dry_run=args.dry_run,
        lock_timeout=args.lock_timeout,
        progress=sys.stderr.isatty(),
    )
    try:
        engine = open_database(settings)
        if args.history is not None:
            print(format_history(engine, args.history))
            return 0
        log.info("sync %s -> %s", settings.api_url, mask_url(settings.database_url))
        report = run_sync(settings, engine, options)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (PipelineError, SQLAlchemyError) as exc:
        print(f"error: run failed, database unchanged: {_explain(exc)}", file=sys.stderr)
        return 1
    engine.dispose()
    print(format_summary(report, options.dry_run))
    return 0


def _explain(exc: BaseException) -> str:
    """One line for the user; SQLite's lock timeout gets the same words as PostgreSQL's."""
    if isinstance(exc, OperationalError) and "database is locked" in str(exc):
        return "another sync is running against this database (SQLite write lock still held)"
    return one_line(exc)


if __name__ == "__main__":
    raise SystemExit(main())
