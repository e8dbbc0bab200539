"""What one product costs: bytes as served, bytes on disk and in WAL, and the sync's memory.

The scale design (``data_at_scale_design.md``, §1.2 and §2.2) plans storage, WAL and memory from
these figures, so they come from one script whose output is committed:

1. **As served**: the page bodies of ``GET /products?limit=100`` from the local server, per
   product, plain and gzip level 6; ``GET /products/{id}`` for the first ids; the synthetic
   catalog's shape (tags, images and reviews per product, reviews' share of the JSON, distinct
   titles, barcodes that pass the GS1 check digit).
2. **PostgreSQL**: the production sync's three scenarios in order on one catalog (initial load,
   no-change re-sync, 10% changed + 1% removed), each from a source built before the clock and
   after ``VACUUM ANALYZE``, ``CHECKPOINT`` and a reset of ``pg_stat_wal``: the WAL it wrote
   (``pg_wal_lsn_diff``) and how much of it was full-page images, the time of its stale delete
   and of its merge, HOT updates, and the catalog's size on disk after each step and after
   ``VACUUM``. Once with ``wal_compression = off``, once with ``pglz``.
3. **Peak memory** (``VmHWM``) of the sync in a child process that generates its source lazily
   (``bench_sync.measure_memory``), for each scenario at each of ``--memory-sizes``.

    python -m benchmarks.bench_footprint [--products 100000] [--served 10000]
        [--memory-sizes 100000,1000000] [--no-compression]

PostgreSQL is ``BENCH_DATABASE_URL`` if set (a superuser, to reset ``pg_stat_wal`` and switch
``wal_compression``), else a throwaway server from the ``pgserver`` wheel. The last block of the
output, ``figures:``, lists every figure as ``key = value``; the design document quotes those
keys and ``tests/test_published_figures.py`` checks the quotes against the committed output.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests
from sqlalchemy import Engine, text

import production_pipeline
from benchmarks.bench_sync import (
    SCENARIOS,
    SYNC_OPTIONS,
    PostgresTarget,
    complete_extraction,
    iter_source,
    measure_memory,
    parse_sizes,
)
from benchmarks.harness import ROOT, Output, command_line, machine_lines, results_path
from etl.runs import start_run
from models import CATALOG_TABLES, write_transaction
from production_pipeline import sync_products
from tools.local_api import FakeDummyJson, make_product
from tools.throwaway_postgres import throwaway_postgres

log = logging.getLogger(__name__)

MIB = 2**20
PAGE_SIZE = 100
SINGLE_IDS = 1000  # GET /products/{id} for ids 1..1000
SCENARIO_KEYS = {"initial": "initial", "no-change": "nochange", "changed": "changed"}
PRODUCTS_INDEXES = {
    "products_pkey": "pkey",
    "products_sku_key": "sku",
    "ix_products_category": "category",
    "ix_products_brand": "brand",
}


class Figures:
    """The figures of one run, printed as they come and listed again at the end."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.values: dict[str, str] = {}

    def add(self, key: str, value: float | int, fmt: str = "{:.1f}") -> None:
        self.values[key] = fmt.format(value)

    def print_all(self) -> None:
        self.out()
        self.out("figures:")
        for key, value in self.values.items():
            self.out(f"  {key} = {value}")


# --- 1. as served -----------------------------------------------------------------------------


def gs1_check_digit_ok(code: str) -> bool:
    """The GS1 check digit: weights 3, 1, 3, ... from the rightmost digit of the body."""
    if not code.isdigit() or len(code) < 2:
        return False
    body, check = code[:-1], int(code[-1])
    total = sum(int(digit) * (3 if i % 2 == 0 else 1) for i, digit in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def encoded(value: Any) -> bytes:
    """JSON as the local server sends it: compact, UTF-8, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def measure_served(served: int, shape_n: int, figures: Figures) -> None:
    """Bytes per product as served, and the synthetic catalog's shape."""
    out = figures.out
    with FakeDummyJson(products=served) as api, requests.Session() as session:
        bodies = [
            session.get(
                f"{api.url}/products", params={"limit": PAGE_SIZE, "skip": skip}, timeout=30
            ).content
            for skip in range(0, served, PAGE_SIZE)
        ]
        singles = [
            len(session.get(f"{api.url}/products/{product_id}", timeout=30).content)
            for product_id in range(1, min(SINGLE_IDS, served) + 1)
        ]
    plain = sum(map(len, bodies))
    packed = sum(len(gzip.compress(body, 6)) for body in bodies)
    out(f"as served: {served:,} products in {len(bodies)} pages of {PAGE_SIZE}")
    out(f"  page bodies {plain:,} B = {plain / served:,.0f} B per product")
    out(f"  gzip level 6 {packed:,} B = {packed / served:,.0f} B per product")
    out(
        f"  GET /products/{{id}} for ids 1..{len(singles)}: mean {sum(singles) / len(singles):,.0f}"
        f" B, min {min(singles):,}, max {max(singles):,}"
    )
    figures.add("served.page_bytes_per_product", plain / served, "{:.0f}")
    figures.add("served.gzip_bytes_per_product", packed / served, "{:.0f}")
    figures.add("served.gzip_ratio", plain / packed)
    figures.add("served.single_mean_bytes", sum(singles) / len(singles), "{:.0f}")
    figures.add("served.single_min_bytes", min(singles), "{:d}")
    figures.add("served.single_max_bytes", max(singles), "{:d}")

    tags = images = reviews = review_bytes = product_bytes = valid = 0
    titles: set[str] = set()
    for product_id in range(1, shape_n + 1):
        product = make_product(product_id)
        tags += len(product["tags"])
        images += len(product["images"])
        reviews += len(product["reviews"])
        review_bytes += len(encoded(product["reviews"]))
        product_bytes += len(encoded(product))
        titles.add(product["title"])
        valid += gs1_check_digit_ok(product["meta"]["barcode"])
    out(f"shape of the synthetic catalog, {shape_n:,} products (tools.local_api.make_product):")
    out(
        f"  per product: {tags / shape_n:.2f} tags, {images / shape_n:.2f} images, "
        f"{reviews / shape_n:.2f} reviews; reviews are {100 * review_bytes / product_bytes:.1f}%"
        " of the JSON"
    )
    out(f"  {len(titles)} distinct titles; {valid:,} barcodes pass the GS1 check digit")
    figures.add("shape.products", shape_n, "{:d}")
    figures.add("shape.tags_per_product", tags / shape_n, "{:.2f}")
    figures.add("shape.images_per_product", images / shape_n, "{:.2f}")
    figures.add("shape.reviews_per_product", reviews / shape_n, "{:.2f}")
    figures.add("shape.reviews_share_pct", 100 * review_bytes / product_bytes)
    figures.add("shape.distinct_titles", len(titles), "{:d}")
    figures.add("shape.gs1_valid_pct", 100 * valid / shape_n, "{:.2f}")


# --- 2. PostgreSQL: disk, WAL, merge ----------------------------------------------------------


@dataclass
class StepTimes:
    """Seconds spent in the sync's stale delete and in its merge."""

    seconds: dict[str, float] = field(default_factory=dict)


@contextmanager
def timed_steps(names: Sequence[str]) -> Iterator[StepTimes]:
    """Time the named functions of ``production_pipeline`` while the block runs.

    A measurement hook, not product code: the module's own references are swapped for timing
    wrappers and put back afterwards, so the sync runs exactly as it does in production.
    """
    times = StepTimes()
    originals = {name: getattr(production_pipeline, name) for name in names}

    def timing(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                times.seconds[name] = times.seconds.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    for name, function in originals.items():
        setattr(production_pipeline, name, timing(name, function))
    try:
        yield times
    finally:
        for name, function in originals.items():
            setattr(production_pipeline, name, function)


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    """One value, in a connection of its own."""
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def autocommit(engine: Engine, *statements: str) -> None:
    """Statements that cannot run in a transaction block (VACUUM, CHECKPOINT, ALTER SYSTEM)."""
    with engine.connect() as plain:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        for statement in statements:
            conn.execute(text(statement))


def catalog_size(engine: Engine, label: str, figures: Figures, prefix: str) -> None:
    """Size of the four catalog tables on disk: heap, indexes, total, per live product."""
    with engine.connect() as conn:
        heap, indexes, total = conn.execute(
            text(
                "SELECT sum(pg_relation_size(t)), sum(pg_indexes_size(t)), "
                "sum(pg_total_relation_size(t)) FROM unnest(CAST(:tables AS regclass[])) AS t"
            ),
            {"tables": list(CATALOG_TABLES)},
        ).one()
        live = conn.execute(text("SELECT count(*) FROM products")).scalar_one()
        rows = sum(
            conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in CATALOG_TABLES
        )
        product_indexes: dict[str, int] = dict(
            conn.execute(
                text(
                    "SELECT c.relname, pg_relation_size(i.indexrelid) FROM pg_index i "
                    "JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE i.indrelid = CAST('products' AS regclass)"
                )
            ).all()
        )
    figures.out(
        f"  size {label}: {total / MIB:.1f} MiB = {total / live:,.0f} B per live product "
        f"({live:,}, {rows:,} rows); heap {heap / MIB:.1f} MiB, indexes "
        f"{indexes / MIB:.1f} MiB; products' "
        + ", ".join(f"{name} {size / MIB:.2f} MiB" for name, size in product_indexes.items())
    )
    figures.add(f"{prefix}.total_mib", total / MIB)
    figures.add(f"{prefix}.rows_per_product", rows / live, "{:.3f}")
    figures.add(f"{prefix}.bytes_per_product", total / live, "{:.0f}")
    figures.add(f"{prefix}.heap_mib", heap / MIB)
    figures.add(f"{prefix}.heap_bytes_per_product", heap / live, "{:.0f}")
    figures.add(f"{prefix}.indexes_mib", indexes / MIB)
    figures.add(f"{prefix}.indexes_bytes_per_product", indexes / live, "{:.0f}")
    for name, short in PRODUCTS_INDEXES.items():
        if name in product_indexes:
            figures.add(
                f"{prefix}.index_{short}_bytes_per_product", product_indexes[name] / live, "{:.0f}"
            )


def sync_scenario(
    target: PostgresTarget, engine: Engine, n: int, scenario: str, figures: Figures, prefix: str
) -> None:
    """One sync on the current catalog, with its WAL, step times and updates."""
    products = list(iter_source(n, scenario))
    run_id = start_run(engine, "bench_footprint")
    target.settle(engine)
    autocommit(engine, "SELECT pg_stat_reset_shared('wal')")
    before = scalar(engine, "SELECT CAST(pg_current_wal_lsn() AS text)")
    with timed_steps(("delete_products", "merge_staged_products")) as steps:
        started = time.perf_counter()
        with write_transaction(engine) as conn:
            report = sync_products(
                conn, products, complete_extraction(len(products)), run_id, SYNC_OPTIONS
            )
        seconds = time.perf_counter() - started
    after = scalar(engine, "SELECT CAST(pg_current_wal_lsn() AS text)")
    wal = float(scalar(engine, "SELECT pg_wal_lsn_diff(:a, :b)", a=after, b=before))
    with engine.connect() as conn:
        fpi, wal_records = conn.execute(text("SELECT wal_fpi, wal_records FROM pg_stat_wal")).one()
        updates, hot = conn.execute(
            text(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE schemaname = current_schema() AND relname = 'products'"
            )
        ).one()
    stats = report.stats
    written = stats.inserted + stats.updated + stats.deleted
    delete_s = steps.seconds.get("delete_products", 0.0)
    merge_s = steps.seconds.get("merge_staged_products", 0.0)
    figures.out(
        f"  {scenario:<9} inserted {stats.inserted:,} updated {stats.updated:,} unchanged "
        f"{stats.unchanged:,} deleted {stats.deleted:,}: transaction {seconds:.3f} s (the "
        f"writer's lock is held all of it), delete {delete_s:.3f} s, merge {merge_s:.3f} s; "
        f"WAL {wal / MIB:.1f} MiB, {wal_records:,} records, {fpi:,} full-page images"
        + (f", {wal / written:,.0f} B per product written" if written else "")
        + f"; products updates {updates:,}, HOT {hot:,} (cumulative)"
    )
    key = f"{prefix}.{SCENARIO_KEYS[scenario]}"
    figures.add(f"{key}.transaction_s", seconds, "{:.3f}")
    figures.add(f"{key}.delete_s", delete_s, "{:.3f}")
    figures.add(f"{key}.merge_s", merge_s, "{:.3f}")
    figures.add(f"{key}.wal_mib", wal / MIB)
    figures.add(f"{key}.wal_fpi", fpi, "{:d}")
    figures.add(f"{key}.written", written, "{:d}")
    figures.add(f"{key}.updated", stats.updated, "{:d}")
    figures.add(f"{key}.deleted", stats.deleted, "{:d}")
    if written:
        figures.add(f"{key}.wal_bytes_per_written", wal / written, "{:.0f}")
    figures.add(f"{key}.hot_updates", hot, "{:d}")


@contextmanager
def wal_compression(target: PostgresTarget, value: str) -> Iterator[None]:
    """``wal_compression`` set server-wide while the block runs, then back to its default."""
    autocommit(
        target.admin, f"ALTER SYSTEM SET wal_compression = '{value}'", "SELECT pg_reload_conf()"
    )
    try:
        yield
    finally:
        autocommit(target.admin, "ALTER SYSTEM RESET wal_compression", "SELECT pg_reload_conf()")


def measure_postgres(target: PostgresTarget, n: int, figures: Figures) -> None:
    """The three scenarios in order on one fresh catalog, at the server's ``wal_compression``."""
    engine = target.fresh()
    shown = scalar(engine, "SHOW wal_compression")
    figures.out()
    figures.out(f"PostgreSQL, {n:,} products, wal_compression = {shown}:")
    prefix = f"pg.{shown}"
    for scenario in SCENARIOS:
        sync_scenario(target, engine, n, scenario, figures, prefix)
        if scenario == "initial":
            catalog_size(engine, "after the initial load", figures, f"{prefix}.size.initial")
    catalog_size(engine, "after the changed run", figures, f"{prefix}.size.changed")
    autocommit(engine, f"VACUUM {', '.join(CATALOG_TABLES)}")
    catalog_size(engine, "after VACUUM", figures, f"{prefix}.size.vacuumed")


# --- 3. peak memory ---------------------------------------------------------------------------


def measure_peak_memory(target: PostgresTarget, sizes: Sequence[int], figures: Figures) -> None:
    """Peak RSS of each scenario's sync, in a child process, at each size."""
    figures.out()
    figures.out("peak memory (VmHWM of a child process syncing a lazily generated source):")
    for n in sizes:
        target.fresh()
        for scenario in SCENARIOS:
            result = measure_memory(target.url(), n, scenario)
            if "error" in result:
                raise RuntimeError(f"memory at {n:,} {scenario}: {result['error']}")
            figures.out(
                f"  N={n:<9,} {scenario:<9} peak {result['peak_kib'] / 1024:6.1f} MB (after "
                f"imports and connect {result['baseline_kib'] / 1024:.1f} MB), "
                f"{result['seconds']:.1f} s incl. generation; {result['detail']}"
            )
            key = f"memory.{n}.{SCENARIO_KEYS[scenario]}"
            figures.add(f"{key}.peak_mb", result["peak_kib"] / 1024)
            figures.add(f"{key}.baseline_mb", result["baseline_kib"] / 1024)


# --- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_footprint",
        description="Bytes per product as served, on disk and in WAL, and the sync's memory.",
    )
    parser.add_argument("--products", type=int, default=100_000, help="catalog size on PostgreSQL")
    parser.add_argument("--served", type=int, default=10_000, help="catalog size served over HTTP")
    parser.add_argument(
        "--shape", type=int, default=100_000, help="products read for the catalog's shape"
    )
    parser.add_argument(
        "--memory-sizes",
        type=lambda value: () if value == "0" else parse_sizes(value),
        default=(100_000,),
        help="sizes for the peak-memory children, e.g. 100000,1000000 (0 = skip)",
    )
    parser.add_argument(
        "--no-compression",
        action="store_true",
        help="skip the second series with wal_compression = pglz (which needs a superuser)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurements; 0 when they ran, 1 when one failed, 2 for bad arguments."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(arguments)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if min(args.products, args.served, args.shape) < PAGE_SIZE:
        print(f"error: sizes must be at least {PAGE_SIZE}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for name in ("production_pipeline", "data_pipeline", "pgserver"):
        logging.getLogger(name).setLevel(logging.WARNING)
    out = Output(results_path("bench_footprint"))
    try:
        return _run(args, arguments, out)
    finally:
        out.close()
        log.info("results written to %s", out.path.relative_to(ROOT))


def _run(args: argparse.Namespace, arguments: list[str], out: Output) -> int:
    figures = Figures(out)
    out(f"# bench_footprint, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC")
    out()
    out(f"command: {command_line('benchmarks.bench_footprint', arguments)}")
    for line in machine_lines():
        out(line)
    with ExitStack() as stack:
        configured = os.environ.get("BENCH_DATABASE_URL")
        if configured:
            server_url, origin = configured, "BENCH_DATABASE_URL"
        else:
            server_url, origin = stack.enter_context(throwaway_postgres()), "throwaway pgserver"
        target = PostgresTarget(server_url, origin)
        stack.callback(target.close)
        out(f"postgresql: {target.describe()}")
        out()
        measure_served(args.served, args.shape, figures)
        measure_postgres(target, args.products, figures)
        if not args.no_compression:
            # pglz: this PostgreSQL build refuses lz4 and zstd ("invalid value for parameter").
            with wal_compression(target, "pglz"):
                measure_postgres(target, args.products, figures)
        if args.memory_sizes:
            measure_peak_memory(target, args.memory_sizes, figures)
    figures.print_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
