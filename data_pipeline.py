"""Exercise 1-2: extract DummyJSON's products, validate and normalise them, load them.

Read top to bottom, this is the whole basic pipeline:

1. **Paging** (``iter_products``): the first page announces the total; the next pages are asked
   for in order, each overlapping the previous one by one product, so a catalog that shifts
   while we page is noticed. Paging stops at the announced total or at an empty page, and an
   ``Extraction`` records whether the picture is complete.
2. **Field mapping** (``transform_product``): one raw product becomes typed rows for the four
   catalog tables, or an ``InvalidProduct`` that names the field and what arrived. Decimals are
   never rounded, text is never trimmed, list order becomes ``position``.
3. **Full refresh** (``load_products``): in one transaction, everything is deleted and the
   products are inserted as they arrive; a bad product is set aside in ``rejected_records``.
   An incomplete extraction rolls it all back: the catalog stays as it was.

The machinery it stands on (settings, the HTTP client with its retries and pacing, the field
validators, run bookkeeping) lives in the ``etl`` package. Exit codes: 0 loaded, 1 the run
failed (nothing changed), 2 bad configuration.

Run ``python data_pipeline.py --help``; ``python data_pipeline.py --api-url http://127.0.0.1:8000``
loads from the repository's local server (``python -m tools.local_api --port 8000``).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert
from sqlalchemy.exc import SQLAlchemyError

from etl import decoding
from etl.catalog import SkuRegistry
from etl.client import DummyJsonClient, Page, fetch_pages_in_order
from etl.drift import (
    Drift,
    DriftPolicy,
    DriftProfile,
    SourceShape,
    format_drifts,
    refuse_drift,
    unknown_fields,
)
from etl.errors import (
    ExtractionIncomplete,
    InvalidProduct,
    PipelineError,
    UnexpectedPayload,
    excerpt,
    exit_code,
    failure_message,
)
from etl.fields import (
    FIVE,
    ZERO,
    is_product_id,
    valid_decimal,
    valid_integer,
    valid_json,
    valid_list,
    valid_object,
    valid_text,
    valid_timestamp,
)
from etl.runs import (
    RunStats,
    exit_process,
    ignore_signals,
    recorded_run,
    rejection_row,
    stop_on_signals,
)
from etl.settings import (
    DEFAULT_MAX_PAGES,
    Settings,
    add_settings_arguments,
    configure_logging,
    open_database,
    resolve_settings,
)
from models import (
    Product,
    ProductImage,
    ProductTag,
    RejectedRecord,
    Review,
    mask_url,
    write_transaction,
)

log = logging.getLogger(__name__)

PIPELINE = "data_pipeline"
LOG_EVERY_PAGES = 10


# --- 1. paging --------------------------------------------------------------------------------


@dataclass
class Extraction:
    """What paging saw: the facts the sync needs before it may delete anything."""

    total: int | None = None
    pages: int = 0
    received: int = 0  # products yielded, after dropping repeats
    unidentified: int = 0  # products without a readable id: no stored product may be deleted
    duplicates: int = 0
    total_changes: int = 0
    shifts: int = 0
    finished: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True only if paging reached the end and saw exactly the announced total."""
        return self.incomplete_reason() is None

    def describe(self) -> str:
        """One line for a run summary: complete or not, and what paging met on the way."""
        reason = self.incomplete_reason()
        seen = f"{self.received} of {self.total} products in {self.pages} pages"
        repeats = f", {self.duplicates} repeats dropped" if self.duplicates else ""
        unread = f", {self.unidentified} without a readable id" if self.unidentified else ""
        if reason is None:
            return f"complete, {seen}{repeats}{unread}"
        return f"INCOMPLETE ({reason}), {seen}{unread}"

    def incomplete_reason(self) -> str | None:
        """Why the extraction cannot be trusted to be the whole catalog, or None."""
        if not self.finished:
            return "paging did not reach the end"
        if self.total_changes:
            return f"the announced total changed {self.total_changes} time(s) while paging"
        if self.shifts:
            return f"the catalog shifted under the pages {self.shifts} time(s): {self.notes[0]}"
        if self.received != self.total:
            return f"saw {self.received} distinct products, the API announced {self.total}"
        return None

    def deletion_blocker(self) -> str | None:
        """Why no stored product may be deleted: an incomplete picture, or a product that
        came without a readable id (it may be a stored product, which must not look stale)."""
        reason = self.incomplete_reason()
        if reason is None and self.unidentified:
            reason = (
                f"{self.unidentified} product(s) came without a readable id (see "
                "rejected_records), so a stored product may only look missing"
            )
        return reason


def page_plan(
    total: int, page_size: int, max_pages: int = DEFAULT_MAX_PAGES, start: int | None = None
) -> Iterator[tuple[int, int]]:
    """The ``(skip, limit)`` of every page after the first, each overlapping the one before.

    Each page starts one product early, so its first product should be the previous page's
    last. If it is not, the catalog shifted between the two requests and a product may have
    been skipped: the overlap makes that visible, where counting alone could not see a deletion
    and an insertion that cancel out. ``start`` is how many products the first page held
    (``page_size`` unless the server caps its pages). The plan is lazy, and a total that would
    take more than ``max_pages`` pages is refused before any is asked for: it is the API's word.
    """
    pages = -(-total // page_size) if total > 0 else 1
    if total < 0 or pages > max_pages:
        raise UnexpectedPayload(
            f"the API announced a total of {total} products, {pages} pages of {page_size}: "
            f"not a catalog this run will page through (--max-pages {max_pages})",
            url="",
        )
    first = page_size if start is None else start
    return ((skip - 1, page_size + 1) for skip in range(first, total, page_size))


def plan_after(first: Page, page_size: int, max_pages: int) -> Iterator[tuple[int, int]]:
    """The pages after ``first``. Fewer products than asked for, short of the total, means the
    server caps its pages (many APIs do): later pages then ask for no more than that cap,
    overlap included, instead of misreading every short page as a shifted catalog."""
    returned = len(first.products)
    if page_size <= returned or first.total <= returned or returned < 2:
        return page_plan(first.total, page_size, max_pages)
    log.info("the API returns at most %d products a page; paging with that", returned)
    return page_plan(first.total, returned - 1, max_pages, start=returned)


def iter_products(
    client: DummyJsonClient,
    page_size: int = 100,
    extraction: Extraction | None = None,
    *,
    concurrency: int = 1,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> Iterator[dict[str, Any]]:
    """Yield every product of ``/products`` in id order, a few pages in memory at a time.

    The first page announces the total; the other pages are fetched ``concurrency`` at a time
    and yielded in order. A product whose id is not above the last one yielded is a repeat
    (the catalog shifted forward) and is dropped. ``extraction`` records whether the picture
    is complete: every page fetched, no shift seen between pages, the total never changed and
    the products seen equal to it. Only then, and if every product had a readable id, may a
    sync delete what it did not see.
    """
    state = extraction if extraction is not None else Extraction()
    first = client.fetch_page(0, page_size)
    state.total = first.total
    rest = fetch_pages_in_order(client, plan_after(first, page_size, max_pages), concurrency)
    last_id = 0
    for page in itertools.chain([first], rest):
        state.pages += 1
        overlapping = page is not first
        _check_page(state, page, last_id, overlapping)
        log.debug("page at skip=%d: %d products of %d", page.skip, len(page.products), page.total)
        if state.pages % LOG_EVERY_PAGES == 0:
            log.info("%d pages, %d of %d products", state.pages, state.received, state.total)
        if not page.products:
            break  # an empty page ends paging; _check_page noted it if it came too early
        for index, product in enumerate(page.products):
            product_id = product.get("id") if isinstance(product, dict) else None
            if not is_product_id(product_id):
                state.unidentified += 1  # yielded all the same: the run sets it aside, with why
            else:
                if product_id <= last_id:
                    expected_overlap = overlapping and index == 0 and product_id == last_id
                    state.duplicates += 0 if expected_overlap else 1
                    continue
                last_id = product_id
            state.received += 1
            yield product
    state.finished = True


def _check_page(state: Extraction, page: Page, last_id: int, overlapping: bool) -> None:
    """Record a changed total, or a shift seen through the overlapping first product."""
    if page.total != state.total:
        state.total_changes += 1
        state.notes.append(f"total changed from {state.total} to {page.total} at skip={page.skip}")
        state.total = page.total
    if not overlapping:
        return
    head = page.products[0] if page.products else None
    overlap = head.get("id") if isinstance(head, dict) else None
    if overlap != last_id:
        state.shifts += 1
        state.notes.append(
            f"catalog shifted while paging: at skip={page.skip} expected product {last_id} "
            f"first, got {overlap}"
        )


# --- 2. field mapping -------------------------------------------------------------------------


@dataclass
class ProductRows:
    """One product as rows for the four catalog tables."""

    product: dict[str, Any]
    tags: list[dict[str, Any]]
    images: list[dict[str, Any]]
    reviews: list[dict[str, Any]]
    normalised: list[str] = field(default_factory=list)  # fields whose float noise was rounded

    @property
    def id(self) -> int:
        """The product's source id."""
        return int(self.product["id"])

    def row_count(self) -> int:
        """How many database rows this product becomes."""
        return 1 + len(self.tags) + len(self.images) + len(self.reviews)


# Source key -> (column, max length or None) for optional text fields.
_TEXT_FIELDS: tuple[tuple[str, str, int | None], ...] = (
    ("description", "description", None),
    ("category", "category", 100),
    ("brand", "brand", 200),
    ("sku", "sku", 100),
    ("warrantyInformation", "warranty_information", None),
    ("shippingInformation", "shipping_information", None),
    ("availabilityStatus", "availability_status", 50),
    ("returnPolicy", "return_policy", None),
    ("thumbnail", "thumbnail", None),
)
# Source key -> (column, precision, scale, minimum, maximum) for optional decimal fields.
_DECIMAL_FIELDS: tuple[tuple[str, str, int, int, Decimal | None, Decimal | None], ...] = (
    ("discountPercentage", "discount_percentage", 5, 2, ZERO, Decimal(100)),
    ("rating", "rating", 3, 2, ZERO, FIVE),
    ("weight", "weight", 10, 2, ZERO, None),
)


# Every field the mapping reads, with the JSON type DummyJSON sends (https://dummyjson.com/docs/
# products). Any other field is kept in ``products.extras``; a run reports fields that appear,
# vanish or change type (``etl/drift.py``). ``brand`` is absent from some real products.
SOURCE_SHAPE = SourceShape(
    fields={
        **dict.fromkeys(("id", "price", "discountPercentage", "rating", "stock"), "number"),
        **dict.fromkeys(("weight", "minimumOrderQuantity"), "number"),
        **dict.fromkeys(("title", "description", "category", "brand", "sku"), "string"),
        **dict.fromkeys(("warrantyInformation", "shippingInformation"), "string"),
        **dict.fromkeys(("availabilityStatus", "returnPolicy", "thumbnail"), "string"),
        **dict.fromkeys(("tags", "images", "reviews"), "array"),
        **dict.fromkeys(("dimensions", "meta"), "object"),
        **dict.fromkeys(("dimensions.width", "dimensions.height", "dimensions.depth"), "number"),
        **dict.fromkeys(("meta.createdAt", "meta.updatedAt", "meta.barcode"), "string"),
        "meta.qrCode": "string",
        "reviews[].rating": "number",
        **dict.fromkeys(("reviews[].comment", "reviews[].date"), "string"),
        **dict.fromkeys(("reviews[].reviewerName", "reviews[].reviewerEmail"), "string"),
    },
    objects=frozenset({"dimensions", "meta"}),
    lists=frozenset({"reviews"}),
    optional=frozenset({"brand"}),
)
# Part of every stored content hash: a release that maps any field differently raises it, and
# its first sync rewrites each product once (the source text alone did not change). 2: extras.
MAPPING_VERSION = 2


def mapping_salt(keep_extras: bool = True) -> int:
    """What a stored content hash folds in besides the product's text: the mapping version and
    whether unknown fields are kept (switching the drift policy rewrites each product once)."""
    return decoding.hash_bytes(f"mapping {MAPPING_VERSION} extras {keep_extras}".encode())


def transform_product(
    raw: Any, content_hash: int | None = None, *, keep_extras: bool = True
) -> ProductRows:
    """Validate one raw product and flatten it into rows; raise ``InvalidProduct`` if it is bad.

    Optional fields that are absent or null become NULL; present values are kept exactly
    (decimals are never rounded, text is never trimmed), and list order becomes ``position``.
    Fields the mapping does not know go to ``extras`` unless ``keep_extras`` is false.
    ``content_hash`` is given when the caller has already computed it.
    """
    if not isinstance(raw, dict):
        raise InvalidProduct(f"expected a product object, got {type(raw).__name__}")
    product_id = raw.get("id")
    if not is_product_id(product_id):
        raise InvalidProduct(
            f"id: expected a positive integer, got {excerpt(repr(product_id), 60)}"
        )
    try:
        if content_hash is None:
            content_hash = decoding.content_hash(raw, mapping_salt(keep_extras))
        rows = _flatten(raw, product_id, content_hash)
        extras = unknown_fields(raw, SOURCE_SHAPE) if keep_extras else None
        rows.product["extras"] = None if extras is None else valid_json(extras, "extras")
        return rows
    except InvalidProduct as exc:
        exc.source_id = product_id
        raise


def _flatten(raw: Mapping[str, Any], product_id: int, content_hash: int) -> ProductRows:
    """The rows of a product whose id is already known to be valid."""
    dimensions = valid_object(raw.get("dimensions"), "dimensions")
    meta = valid_object(raw.get("meta"), "meta")
    noise: list[str] = []
    product: dict[str, Any] = {
        "id": product_id,
        "title": valid_text(raw.get("title"), "title", required=True),
        "price": valid_decimal(
            raw.get("price"), "price", 12, 2, ZERO, required=True, normalised=noise
        ),
        "stock": valid_integer(raw.get("stock"), "stock"),
        "minimum_order_quantity": valid_integer(
            raw.get("minimumOrderQuantity"), "minimumOrderQuantity"
        ),
        "width": valid_decimal(
            dimensions.get("width"), "dimensions.width", 10, 2, ZERO, normalised=noise
        ),
        "height": valid_decimal(
            dimensions.get("height"), "dimensions.height", 10, 2, ZERO, normalised=noise
        ),
        "depth": valid_decimal(
            dimensions.get("depth"), "dimensions.depth", 10, 2, ZERO, normalised=noise
        ),
        "created_at": valid_timestamp(meta.get("createdAt"), "meta.createdAt"),
        "updated_at": valid_timestamp(meta.get("updatedAt"), "meta.updatedAt"),
        "barcode": valid_text(meta.get("barcode"), "meta.barcode", 64),
        "qr_code": valid_text(meta.get("qrCode"), "meta.qrCode"),
        "content_hash": content_hash,
    }
    for key, column, max_length in _TEXT_FIELDS:
        product[column] = valid_text(raw.get(key), key, max_length)
    for key, column, precision, scale, low, high in _DECIMAL_FIELDS:
        product[column] = valid_decimal(
            raw.get(key), key, precision, scale, low, high, normalised=noise
        )
    tags = [
        {
            "product_id": product_id,
            "position": i,
            "tag": valid_text(tag, f"tags[{i}]", required=True),
        }
        for i, tag in enumerate(valid_list(raw.get("tags"), "tags"))
    ]
    images = [
        {
            "product_id": product_id,
            "position": i,
            "url": valid_text(url, f"images[{i}]", required=True),
        }
        for i, url in enumerate(valid_list(raw.get("images"), "images"))
    ]
    reviews = [
        _review_row(review, product_id, i, noise)
        for i, review in enumerate(valid_list(raw.get("reviews"), "reviews"))
    ]
    return ProductRows(product, tags, images, reviews, normalised=noise)


def _review_row(review: Any, product_id: int, position: int, noise: list[str]) -> dict[str, Any]:
    """One review as a row; reviews have no natural key, so position identifies them."""
    try:
        # Field names relative to the review; the path is added only if one fails (building
        # "reviews[2].rating" for every field of every review costs more than validating it).
        fields = valid_object(review, "")
        return {
            "product_id": product_id,
            "position": position,
            "rating": valid_decimal(
                fields.get("rating"), ".rating", 3, 2, ZERO, FIVE, normalised=noise
            ),
            "comment": valid_text(fields.get("comment"), ".comment"),
            "date": valid_timestamp(fields.get("date"), ".date"),
            "reviewer_name": valid_text(fields.get("reviewerName"), ".reviewerName"),
            "reviewer_email": valid_text(fields.get("reviewerEmail"), ".reviewerEmail"),
        }
    except InvalidProduct as exc:
        raise InvalidProduct(f"reviews[{position}]{exc.reason}") from None


# --- 3. the full refresh ----------------------------------------------------------------------


def load_products(
    conn: Connection,
    products: Iterable[Any],
    run_id: int,
    stats: RunStats,
    batch_size: int = 500,
    drift: DriftProfile | None = None,
) -> None:
    """Replace the catalog with ``products`` inside the caller's transaction.

    Everything is deleted, then the products are inserted in batches as they arrive; the caller
    commits only if all went well, so a rerun never duplicates and a failure changes nothing.
    A product that fails validation, or repeats an id or sku already loaded, is set aside.
    ``drift`` profiles the products' fields (None: ``--on-drift ignore``, extras dropped).
    """
    for model in (Review, ProductImage, ProductTag, Product):
        conn.execute(delete(model))
    skus = SkuRegistry()
    batch: list[ProductRows] = []
    for raw in products:
        stats.extracted += 1
        if drift is not None and isinstance(raw, dict):
            product_id = raw.get("id")
            drift.observe(raw, product_id if is_product_id(product_id) else None)
        try:
            rows = transform_product(raw, keep_extras=drift is not None)
            skus.claim(rows.id, rows.product["sku"])
        except InvalidProduct as exc:
            stats.rejected += 1
            conn.execute(insert(RejectedRecord), [rejection_row(run_id, raw, exc)])
            continue
        stats.normalised += bool(rows.normalised)
        batch.append(rows)
        if len(batch) >= batch_size:
            stats.inserted += insert_rows(conn, batch)
            batch = []
    stats.inserted += insert_rows(conn, batch)


def insert_rows(conn: Connection, batch: Sequence[ProductRows]) -> int:
    """Insert products and then their children with one executemany per table."""
    if not batch:
        return 0
    conn.execute(insert(Product), [rows.product for rows in batch])
    for model, attr in ((ProductTag, "tags"), (ProductImage, "images"), (Review, "reviews")):
        children = [child for rows in batch for child in getattr(rows, attr)]
        if children:
            conn.execute(insert(model), children)
    return len(batch)


def run_full_refresh(settings: Settings, engine: Engine) -> tuple[RunStats, list[Drift]]:
    """Extract everything and replace the catalog in one transaction; record the run.

    Returns what the run did and how the source's fields differed from the mapping's."""
    extraction = Extraction()
    with (
        recorded_run(engine, PIPELINE, extraction) as run,
        DummyJsonClient.from_settings(settings) as client,
        write_transaction(engine) as conn,
    ):
        products = iter_products(
            client,
            settings.page_size,
            extraction,
            concurrency=settings.concurrency,
            max_pages=settings.max_pages,
        )
        if settings.on_drift is not DriftPolicy.IGNORE:
            run.drift = DriftProfile(SOURCE_SHAPE)
        load_products(conn, products, run.id, run.stats, drift=run.drift)
        drifts = run.drift.drifts() if run.drift is not None else []
        refuse_drift(drifts, settings.on_drift)
        reason = extraction.deletion_blocker()
        if reason:
            raise ExtractionIncomplete(f"extraction incomplete, catalog left as it was: {reason}")
        ignore_signals()  # the commit is next: from here on, the run ends as it is recorded
    return run.stats, drifts


# --- command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the basic pipeline; 0 on success, 1 if the run failed, 2 on bad usage,
    130 / 143 when Ctrl-C or SIGTERM stopped it."""
    parser = argparse.ArgumentParser(
        description="Load DummyJSON's products into the database: a full refresh, one transaction."
    )
    add_settings_arguments(parser)
    args = parser.parse_args(argv)
    with stop_on_signals():
        try:
            settings = resolve_settings(args)
            configure_logging(settings.verbose)
            shown = (mask_url(settings.api_url), mask_url(settings.database_url))
            log.info("api %s -> database %s", *shown)
            engine = open_database(settings)
            stats, drifts = run_full_refresh(settings, engine)
        except (PipelineError, SQLAlchemyError, KeyboardInterrupt) as exc:
            print(f"error: {failure_message(exc)}", file=sys.stderr)
            return exit_code(exc)
        engine.dispose()
        print(
            f"loaded {stats.inserted} products, rejected {stats.rejected}, "
            f"{stats.pages} pages in {stats.seconds:.1f} s"
        )
        if stats.normalised:
            print(f"float noise rounded to cents in {stats.normalised} product(s)")
        for line in format_drifts(drifts):
            print(line)
    return 0


if __name__ == "__main__":
    exit_process(main())
