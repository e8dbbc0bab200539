"""Exercise 2-1: the production sync, which keeps the database equal to the API's catalog.

One run, one transaction, in five steps (``sync_products`` below follows them in order):

1. take the writer's lock (PostgreSQL: an advisory lock; SQLite: ``BEGIN IMMEDIATE``), so a
   second sync waits instead of interleaving;
2. read each product's content hash from the catalog, then stream the API's pages: a product
   whose hash is unchanged is counted and skipped before any row is built (the hash covers the
   mapping's version, so a new mapping rewrites each product once; ``--rebuild`` rewrites all);
   the fields of the others are profiled for source drift (``--on-drift``); a new product's
   rows are written straight into the catalog tables, a changed product's into staging tables
   (PostgreSQL: ``COPY``; SQLite: batched inserts);
3. under ``--on-drift refuse``, refuse a run that saw drift, changing nothing;
   delete the products the API no longer has (children by cascade); a deletion larger than the
   allowed fraction refuses the run and nothing changes. An extraction that stays incomplete
   (the catalog moved under the pages and re-reading did not close the gap), or a product that
   came without a readable id, defers every deletion: the run applies what it read and ends
   ``partial`` (``--strict`` refuses an incomplete one instead). Then settle the skus that
   changed hands (a claim stands if its owner let the sku go);
4. merge staging into the catalog with set-based SQL (``INSERT ... ON CONFLICT DO UPDATE``, then
   the changed products' children replaced);
5. product history (unless ``--no-history``): close the current version of each product changed
   or deleted at the run's instant and open the new versions, built by the database from the
   rows just written (a new product's as soon as its rows are); then commit. ``--product ID
   --as-of T`` and ``--versions ID`` read the history back.

A bad product is set aside in ``rejected_records`` with its reason and never costs a stored
product. Killing the process at any moment leaves the database as it was before the run or as
after it; Ctrl-C or SIGTERM rolls back and records the run as ``interrupted``. Paging and the
field mapping are Exercise 1-2's (``data_pipeline.py``); the mechanism (the catalog index, COPY
and staging, the lock, run bookkeeping) lives in the ``etl`` package. Exit codes: 0 synced (or
partial), 1 the run failed or a guard refused it (nothing changed), 2 bad usage, 130 / 143
stopped by Ctrl-C / SIGTERM.

Run ``python production_pipeline.py --help``. The offline demo serves a local catalog first:
``python -m tools.local_api --port 8000 & python production_pipeline.py --api-url http://127.0.0.1:8000``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from data_pipeline import (
    SOURCE_SHAPE,
    Extraction,
    ProductRows,
    iter_products,
    mapping_salt,
    transform_product,
)
from etl.bulk import (
    HistoryGaps,
    RowWriter,
    clear_skus,
    close_orphaned_versions,
    create_staging_tables,
    delete_products,
    history_gaps,
    merge_staged_products,
    open_versions,
    take_writer_lock,
    unstage_products,
    write_versions,
)
from etl.catalog import CatalogIndex, Change, SkuRegistry, read_catalog
from etl.client import DummyJsonClient
from etl.decoding import content_hash
from etl.drift import Drift, DriftPolicy, DriftProfile, format_drifts, refuse_drift
from etl.errors import (
    ConfigError,
    InvalidProduct,
    PipelineError,
    SyncAborted,
    exit_code,
    failure_message,
)
from etl.fields import is_int
from etl.history import (
    format_product,
    format_versions,
    parse_instant,
    version_as_of,
    versions_of,
)
from etl.runs import (
    RunStats,
    RunStatus,
    exit_process,
    format_history,
    ignore_signals,
    recorded_run,
    rejection_row,
    stop_on_signals,
)
from etl.settings import (
    MAX_SECONDS,
    Settings,
    add_settings_arguments,
    check_range,
    configure_logging,
    open_database,
    resolve_settings,
)
from models import Base, RejectedRecord, mask_url, write_transaction

log = logging.getLogger(__name__)

PIPELINE = "production_pipeline"
SAMPLE_IDS = 5


@dataclass(frozen=True)
class SyncOptions:
    """How a sync treats stale products, and how it runs."""

    delete_stale: bool = True
    allow_mass_delete: bool = False
    max_delete_fraction: float = 0.10
    dry_run: bool = False
    strict: bool = False  # refuse an incomplete extraction instead of applying it as partial
    batch_size: int = 1000
    lock_timeout: float = 30.0
    progress: bool = False
    rebuild: bool = False  # rewrite every product, changed or not
    on_drift: DriftPolicy = DriftPolicy.KEEP
    history: bool = True  # write product versions (product_versions)


@dataclass
class SyncReport:
    """What a sync did (or, in a dry run, would do)."""

    stats: RunStats
    deletion: str = ""
    extraction: str = ""
    deferred: str | None = None  # why deletions wait for a later run (the run is partial)
    staged_new: set[int] = field(default_factory=set)  # new products staged for a sku move
    stale_kept: int = 0  # stored products that keep their previous version: the new one was bad
    drifts: list[Drift] = field(default_factory=list)  # how the source's fields differ
    versions_opened: int = 0
    versions_closed: int = 0
    samples: dict[str, list[int]] = field(
        default_factory=lambda: {"inserted": [], "updated": [], "deleted": []}
    )

    def sample(self, action: str, product_id: int) -> None:
        """Keep the first few ids of each action, for the dry-run report."""
        ids = self.samples[action]
        if len(ids) < SAMPLE_IDS:
            ids.append(product_id)


# --- the sync, step by step -------------------------------------------------------------------


def sync_products(
    conn: Connection,
    products: Iterable[Any],
    extraction: Extraction,
    run_id: int,
    options: SyncOptions,
    stats: RunStats | None = None,
    drift: DriftProfile | None = None,
) -> SyncReport:
    """Make the catalog equal to ``products`` inside the caller's transaction.

    ``extraction`` must describe ``products`` once they are consumed (``iter_products`` keeps
    it up to date); stale products are deleted only if it says the extraction was complete.
    ``drift`` profiles the fields of the products transformed (made here unless the caller
    keeps its own; none under ``--on-drift ignore``).
    The caller commits, or rolls back for a dry run or on any error.
    """
    report = SyncReport(stats if stats is not None else RunStats())
    if drift is None and options.on_drift is not DriftPolicy.IGNORE:
        drift = DriftProfile(SOURCE_SHAPE)
    # 1. One writer at a time; its instant (taken under the lock, so runs' instants follow the
    # order they wrote in) is when the versions it writes begin and end.
    take_writer_lock(conn, options.lock_timeout)
    instant = dt.datetime.now(dt.UTC) if options.history else None
    # 2. The catalog as it was, then the API's products: new ones written (with their first
    # versions when the run keeps history), changed ones staged.
    index, skus = read_catalog(conn)
    gaps = _history_ready(conn, len(index), instant, report)
    staging = create_staging_tables(conn)
    writer = RowWriter(conn)
    batch = _Batch(run_id, instant)
    try:
        _stream(products, index, skus, writer, staging, batch, options, report, drift)
    except BaseException:
        writer.close(raise_errors=False)  # the error being raised is the one to report
        raise
    writer.close()
    report.stats.pages = extraction.pages
    report.extraction = extraction.describe()
    _check_drift(drift, options, report)
    # 3. Stale products, behind the guards; then the skus that moved, now that all is known.
    stale = _stale_products(index, extraction, options, report)
    for product_id in stale[:SAMPLE_IDS]:
        report.sample("deleted", product_id)
    report.stats.deleted = len(stale)
    refused = _settle_moved_skus(conn, skus, staging, set(stale), run_id, report)
    if options.dry_run:
        return report
    log.info("deleting %d stale products", len(stale))
    delete_products(conn, stale)
    # 4. The staged changes, merged set-based (skus handed on are let go first).
    log.info("merging %d changed products", report.stats.updated)
    clear_skus(conn, skus.releasing(refused))
    merge_staged_products(conn, staging, options.progress)
    # 5. History: the current versions of the products changed or deleted closed, and the
    # changed products' new versions opened (new products' were opened as they were written);
    # then the products a run without history left unversioned get their first version.
    if instant is not None:
        opened, closed = write_versions(conn, staging, stale, run_id, instant)
        if gaps.unversioned:
            opened += open_versions(conn, run_id, instant)
        report.versions_opened += opened + batch.versions_opened
        report.versions_closed += closed
    return report


def _history_ready(
    conn: Connection, catalog_size: int, instant: dt.datetime | None, report: SyncReport
) -> HistoryGaps:
    """Before a run with history: find where a run without it left the history out of step
    with the catalog, and close the versions of the products it deleted (so that one back in
    the source is versioned anew). The products it left without a version get theirs at the
    end of the run."""
    if instant is None:
        return HistoryGaps(orphaned=0, unversioned=0)
    gaps = history_gaps(conn, catalog_size)
    if gaps.orphaned:
        report.versions_closed += close_orphaned_versions(conn, instant)
    return gaps


def _stream(
    products: Iterable[Any],
    index: CatalogIndex,
    skus: SkuRegistry,
    writer: RowWriter,
    staging: dict[str, Table],
    batch: _Batch,
    options: SyncOptions,
    report: SyncReport,
    drift: DriftProfile | None,
) -> None:
    """Classify each product by its content hash; write new and changed ones in batches."""
    stats = report.stats
    run_id = batch.run_id
    keep_extras = drift is not None
    salt = mapping_salt(keep_extras)
    for raw in products:
        stats.extracted += 1
        product_id = raw.get("id") if isinstance(raw, dict) else None
        known_hash, change = None, Change.NEW
        if is_int(product_id):
            known_hash = content_hash(raw, salt)
            change = index.classify(product_id, known_hash)
            if change is Change.UNCHANGED and options.rebuild:
                change = Change.CHANGED
        if change is Change.UNCHANGED:
            stats.unchanged += 1
            continue
        if drift is not None and isinstance(raw, dict):
            drift.observe(raw, product_id if is_int(product_id) else None)
        try:
            rows = transform_product(raw, known_hash, keep_extras=keep_extras)
            moved_sku = skus.claim(rows.id, rows.product["sku"], raw)
        except InvalidProduct as exc:
            stats.rejected += 1
            report.stale_kept += change is Change.CHANGED
            batch.rejected.append(rejection_row(run_id, raw, exc))
            continue
        stats.normalised += bool(rows.normalised)
        if change is Change.NEW:
            stats.inserted += 1
            # A sku another product may hand on this run: staged, merged once that is settled.
            if moved_sku:
                report.staged_new.add(rows.id)
            (batch.changed if moved_sku else batch.new).append(rows)
            report.sample("inserted", rows.id)
        else:
            stats.updated += 1
            batch.changed.append(rows)
            report.sample("updated", rows.id)
        if len(batch) >= options.batch_size:
            _flush(writer, staging, batch)
    _flush(writer, staging, batch)


def _check_drift(drift: DriftProfile | None, options: SyncOptions, report: SyncReport) -> None:
    """Note how the source's fields differ; under ``--on-drift refuse``, refuse the run."""
    if drift is None:
        return
    report.drifts = drift.drifts()
    refuse_drift(report.drifts, options.on_drift)


def _stale_products(
    index: CatalogIndex, extraction: Extraction, options: SyncOptions, report: SyncReport
) -> list[int]:
    """The ids to delete, after the guards; raise ``SyncAborted`` when a guard refuses."""
    if not options.delete_stale:
        report.deletion = "stale products: kept (--no-delete)"
        return []
    reason = extraction.incomplete_reason()
    if reason and options.strict:
        raise SyncAborted(f"extraction incomplete, nothing deleted or changed (--strict): {reason}")
    blocker = extraction.deletion_blocker()
    if blocker:
        waiting = len(index.unseen_ids())
        report.deferred = (
            f"deletions deferred, {waiting} unseen stored product(s) wait for a complete run: "
            f"{blocker}"
        )
        report.deletion = f"stale products: none removed, {report.deferred}"
        return []
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


def _settle_moved_skus(
    conn: Connection,
    skus: SkuRegistry,
    staging: dict[str, Table],
    deleted: set[int],
    run_id: int,
    report: SyncReport,
) -> list[int]:
    """Refuse the sku claims whose owner keeps the sku: set those products aside, as rejected."""
    refused = skus.settle(deleted)
    ids = [claim.product_id for claim, _ in refused]
    if not refused:
        return ids
    unstage_products(conn, staging, ids)
    conn.execute(
        insert(RejectedRecord), [rejection_row(run_id, claim.raw, exc) for claim, exc in refused]
    )
    for product_id in ids:
        stats = report.stats
        stats.rejected += 1
        if product_id in report.staged_new:
            stats.inserted -= 1
        else:
            stats.updated -= 1
            report.stale_kept += 1
    return ids


# --- writing a batch --------------------------------------------------------------------------


@dataclass
class _Batch:
    """Rows waiting to be written: new products go to the catalog, changed ones to staging.
    With history on, new products' first versions are opened once their rows are written."""

    run_id: int
    instant: dt.datetime | None  # the run's, for the versions; None: history off
    new: list[ProductRows] = field(default_factory=list)
    changed: list[ProductRows] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    versions_opened: int = 0  # new products' versions opened so far

    def __len__(self) -> int:
        return len(self.new) + len(self.changed) + len(self.rejected)


def _flush(writer: RowWriter, staging: dict[str, Table], batch: _Batch) -> None:
    """Write a batch: new products into the catalog, changed into staging, rejections aside."""
    _write_products(writer, Base.metadata.tables, batch.new)
    _write_products(writer, staging, batch.changed)
    if batch.instant is not None and batch.new:
        ids, run_id, instant = [rows.id for rows in batch.new], batch.run_id, batch.instant

        def version_new_products() -> None:
            batch.versions_opened += open_versions(writer.conn, run_id, instant, among=ids)

        writer.submit(version_new_products)
    if batch.rejected:
        rejected = batch.rejected

        def record_rejections() -> None:
            writer.conn.execute(insert(RejectedRecord), rejected)

        writer.submit(record_rejections)
    batch.new, batch.changed, batch.rejected = [], [], []


def _write_products(
    writer: RowWriter, tables: Mapping[str, Table], batch: list[ProductRows]
) -> None:
    """Products first, then their children, so foreign keys hold at every moment."""
    writer.write(tables["products"], [rows.product for rows in batch])
    writer.write(tables["product_tags"], [tag for rows in batch for tag in rows.tags])
    writer.write(tables["product_images"], [image for rows in batch for image in rows.images])
    writer.write(tables["reviews"], [review for rows in batch for review in rows.reviews])


# --- a whole run ------------------------------------------------------------------------------


def run_sync(settings: Settings, engine: Engine, options: SyncOptions) -> SyncReport:
    """Extract and sync in one transaction, recording the run; raise on failure or refusal."""
    extraction = Extraction()
    with (
        recorded_run(engine, PIPELINE, extraction) as run,
        DummyJsonClient.from_settings(settings) as client,
        write_transaction(engine) as conn,
    ):
        products = with_progress(
            iter_products(
                client,
                settings.page_size,
                extraction,
                concurrency=settings.concurrency,
                max_pages=settings.max_pages,
                max_rereads=settings.max_rereads,
            ),
            extraction,
            options.progress,
        )
        if options.on_drift is not DriftPolicy.IGNORE:
            run.drift = DriftProfile(SOURCE_SHAPE)
        report = sync_products(
            conn, products, extraction, run.id, options, run.stats, run.drift
        )
        if report.deferred:
            run.status, run.note = RunStatus.PARTIAL, report.deferred
        if options.dry_run:
            run.status = RunStatus.DRY_RUN
            conn.rollback()
        ignore_signals()  # the commit is next: from here on, the run ends as it is recorded
    return report


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
    if stats.normalised:
        lines.append(f"  float noise rounded to cents in {stats.normalised} product(s)")
    lines.extend(f"  {line}" for line in format_drifts(report.drifts))
    if report.versions_opened or report.versions_closed:
        lines.append(
            f"  history: {report.versions_opened} product version(s) opened, "
            f"{report.versions_closed} closed"
        )
    if report.stale_kept:
        lines.append(
            f"  {report.stale_kept} stored product(s) keep their previous version: "
            "the API's new one was rejected (see rejected_records)"
        )
    if dry_run:
        for action, ids in report.samples.items():
            if ids:
                lines.append(f"  {action} ids, first {len(ids)}: {', '.join(map(str, ids))}")
        lines.append("  nothing was written (dry run)")
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------


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
        "--strict",
        action="store_true",
        help="refuse a run whose extraction is incomplete (exit 1, nothing changed) instead of "
        "applying what it read and deferring deletions (status partial)",
    )
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
        "--rebuild",
        action="store_true",
        help="rewrite every product, changed or not (after fixing a product by hand, say)",
    )
    parser.add_argument(
        "--history",
        nargs="?",
        const=10,
        type=int,
        metavar="N",
        help="print the last N runs (default 10) and exit",
    )
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="write no product versions this run (product history is on by default)",
    )
    parser.add_argument(
        "--product",
        type=int,
        metavar="ID",
        help="print product ID as it was at --as-of (default: now), from its history, and exit",
    )
    parser.add_argument(
        "--as-of",
        metavar="TIMESTAMP",
        help="the instant --product shows, ISO-8601 (2026-12-01T09:30:00Z; UTC unless given)",
    )
    parser.add_argument(
        "--versions",
        type=int,
        metavar="ID",
        help="list product ID's versions (when each held, its run, price and stock) and exit",
    )
    return parser


def show_history(engine: Engine, args: argparse.Namespace) -> int:
    """``--product ID [--as-of T]`` or ``--versions ID``: print from the history; 1 when
    the product had no version at that instant."""
    with engine.connect() as conn:
        if args.versions is not None:
            print(format_versions(args.versions, versions_of(conn, args.versions)))
            return 0
        instant = parse_instant(args.as_of) if args.as_of else dt.datetime.now(dt.UTC)
        version = version_as_of(conn, args.product, instant)
    if version is None:
        print(
            f"error: product {args.product} has no version at {instant.isoformat()} "
            f"(--versions {args.product} lists them)",
            file=sys.stderr,
        )
        return 1
    print(format_product(version))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sync; 0 on success, 1 if it failed or was refused, 2 on bad usage,
    130 / 143 when Ctrl-C or SIGTERM stopped it."""
    args = build_parser().parse_args(argv)
    with stop_on_signals():
        try:
            settings = resolve_settings(args)
            check_range("--max-delete-fraction", args.max_delete_fraction, 0, 1, low_open=False)
            check_range("--lock-timeout", args.lock_timeout, 0, MAX_SECONDS)
            if args.history is not None:
                check_range("--history", args.history, 1, 10_000)
            if args.as_of is not None and args.product is None:
                raise ConfigError("--as-of: needs --product ID (the product to show)")
            configure_logging(settings.verbose)
            options = SyncOptions(
                delete_stale=not args.no_delete,
                allow_mass_delete=args.allow_mass_delete,
                max_delete_fraction=args.max_delete_fraction,
                dry_run=args.dry_run,
                strict=args.strict,
                lock_timeout=args.lock_timeout,
                progress=sys.stderr.isatty(),
                rebuild=args.rebuild,
                on_drift=settings.on_drift,
                history=not args.no_history,
            )
            engine = open_database(settings)
            if args.history is not None:
                print(format_history(engine, args.history))
                return 0
            if args.product is not None or args.versions is not None:
                return show_history(engine, args)
            shown = (mask_url(settings.api_url), mask_url(settings.database_url))
            log.info("sync %s -> %s", *shown)
            report = run_sync(settings, engine, options)
        except (PipelineError, SQLAlchemyError, KeyboardInterrupt) as exc:
            print(f"error: {failure_message(exc)}", file=sys.stderr)
            return exit_code(exc)
        engine.dispose()
        print(format_summary(report, options.dry_run))
    return 0


if __name__ == "__main__":
    exit_process(main())
