"""Exercise 1-2: extract DummyJSON's products, validate and normalise them, load them.

Read top to bottom, this is the whole basic pipeline:

1. **Paging** (``iter_products``): the first page announces the total; the next pages are asked
   for in order, each overlapping the previous one by one product, so a catalog that shifts
   while we page is noticed, and the products a shift made paging skip are re-read. Paging
   stops at the end of the catalog, and an ``Extraction`` records whether the picture is
   complete (no gap left).
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
import contextlib
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
    DEFAULT_MAX_REREADS,
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
    shifts: int = 0  # page boundaries where the overlap showed the catalog had moved
    rereads: int = 0  # requests spent re-reading what a shift made paging skip
    unhealed: list[str] = field(default_factory=list)  # what no re-read could cover, and why
    finished: bool = False

    @property
    def complete(self) -> bool:
        """True only if every product that stayed in the source while paging was seen."""
        return self.incomplete_reason() is None

    @property
    def moved(self) -> bool:
        """Whether the catalog was seen to change while paging (so counts cannot add up)."""
        return bool(self.shifts or self.total_changes)

    def describe(self) -> str:
        """One line for a run summary: complete or not, and what paging met on the way."""
        reason = self.incomplete_reason()
        seen = f"{self.received} of {self.total} products in {self.pages} pages"
        if self.moved:
            seen = f"{self.received} products in {self.pages} pages ({self.total} announced last)"
        repeats = f", {self.duplicates} repeats dropped" if self.duplicates else ""
        unread = f", {self.unidentified} without a readable id" if self.unidentified else ""
        if reason is not None:
            return f"INCOMPLETE ({reason}), {seen}{unread}"
        moved = ""
        if self.moved:
            moved = (
                f", the catalog moved while paging ({self.shifts} shift(s), "
                f"{self.rereads} re-read(s))"
            )
        return f"complete, {seen}{repeats}{unread}{moved}"

    def incomplete_reason(self) -> str | None:
        """Why the extraction cannot be trusted to hold every product of the catalog, or None.

        On a catalog that moved, counts cannot add up (a product deleted after it was read is
        seen and no longer counted); what proves the picture whole is that the pages and the
        re-reads left no gap between them. On a still catalog, the count must match too.
        """
        if not self.finished:
            return "paging did not reach the end"
        if self.unhealed:
            return (
                f"{len(self.unhealed)} gap(s) in the pages stayed unread after {self.rereads} "
                f"re-read(s), first {self.unhealed[0]}"
            )
        if not self.moved and self.received != self.total:
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


def page_step(first: Page, page_size: int) -> int:
    """How many products each page after ``first`` moves on by. Fewer products than asked
    for, short of the total, means the server caps its pages (many APIs do): later pages then
    ask for no more than that cap, overlap included, instead of misreading every short page as
    a shifted catalog."""
    returned = len(first.products)
    if page_size <= returned or first.total <= returned or returned < 2:
        return page_size
    return returned - 1


def plan_after(first: Page, page_size: int, max_pages: int) -> Iterator[tuple[int, int]]:
    """The pages after ``first``, planned from the total it announced."""
    step = page_step(first, page_size)
    if step == page_size:
        return page_plan(first.total, page_size, max_pages)
    log.info("the API returns at most %d products a page; paging with that", step + 1)
    return page_plan(first.total, step, max_pages, start=len(first.products))


def iter_products(
    client: DummyJsonClient,
    page_size: int = 100,
    extraction: Extraction | None = None,
    *,
    concurrency: int = 1,
    max_pages: int = DEFAULT_MAX_PAGES,
    max_rereads: int = DEFAULT_MAX_REREADS,
) -> Iterator[dict[str, Any]]:
    """Yield every product of ``/products`` in id order, a few pages in memory at a time.

    The first page announces the total; the other pages are fetched ``concurrency`` at a time
    and yielded in order, and more are asked for if the catalog grew past the plan. A product
    whose id is not above the last one yielded is a repeat (the catalog shifted forward) and is
    dropped. A page that starts above the last product seen means the catalog shifted back and
    products may have been skipped: that range is re-read (at most ``max_rereads`` requests a
    run) and its products yielded before the page's. ``extraction`` records whether the picture
    is complete: paging reached the end and left no gap. Only then, and if every product had a
    readable id, may a sync delete what it did not see.
    """
    state = extraction if extraction is not None else Extraction()
    first = client.fetch_page(0, page_size)
    state.total = first.total
    step = page_step(first, page_size)
    rereads = _Rereads(client, state, step, max_rereads)
    last_id = 0
    for page in _pages(client, first, page_size, concurrency, max_pages):
        state.pages += 1
        gap = _check_page(state, page, last_id) if page is not first else None
        log.debug("page at skip=%d: %d products of %d", page.skip, len(page.products), page.total)
        if state.pages % LOG_EVERY_PAGES == 0:
            log.info("%d pages, %d of %d products", state.pages, state.received, state.total)
        if gap is not None:
            for product in rereads.fill(gap):
                last_id = product["id"]
                state.received += 1
                yield product
        for index, product in enumerate(page.products):
            product_id = product.get("id") if isinstance(product, dict) else None
            if not is_product_id(product_id):
                state.unidentified += 1  # yielded all the same: the run sets it aside, with why
            else:
                if product_id <= last_id:
                    expected_overlap = page is not first and index == 0 and product_id == last_id
                    state.duplicates += 0 if expected_overlap else 1
                    continue
                last_id = product_id
            state.received += 1
            yield product
    if page.products and not reaches_end(page):
        state.unhealed.append(f"the catalog grew past --max-pages {max_pages} while paging")
    state.finished = True


def _pages(
    client: DummyJsonClient, first: Page, page_size: int, concurrency: int, max_pages: int
) -> Iterator[Page]:
    """The first page, then the planned ones, up to the first that reaches the catalog's end
    (or comes back empty); then, if the catalog grew past the plan, more until one does."""
    yield first
    last, count = first, 1
    planned = fetch_pages_in_order(client, plan_after(first, page_size, max_pages), concurrency)
    with contextlib.closing(planned):
        for last in planned:
            count += 1
            yield last
            if reaches_end(last) or not last.products:
                return
    if reaches_end(last) or not last.products:
        return
    log.info("the catalog grew past the %d products announced first; reading on", first.total)
    step = page_step(first, page_size)
    while not reaches_end(last) and last.products and count < max_pages:
        last = client.fetch_page(last.skip + len(last.products) - 1, step + 1)
        count += 1
        yield last


def reaches_end(page: Page) -> bool:
    """Whether a page holds the last product of the catalog as it stood when it was served."""
    return page.skip + len(page.products) >= page.total


def _check_page(state: Extraction, page: Page, last_id: int) -> Gap | None:
    """Record a changed total, or a shift seen through the overlapping first product; return
    the ids the shift may have made paging skip, if any."""
    if page.total != state.total:
        state.total_changes += 1
        log.info("the total changed from %s to %d at skip=%d", state.total, page.total, page.skip)
        state.total = page.total
    head = _first_id(page)
    if head is not None and head[1] == last_id:
        return None  # the overlap holds: no shift
    if head is None and page.products:
        return None  # no readable id to compare: the run already defers every deletion
    if head is None and page.skip < page.total:
        state.unhealed.append(
            f"the page at skip={page.skip} came back empty, the API announced {page.total}"
        )
        return None
    # The catalog moved between two requests: a page that starts below the last product seen
    # repeats products (dropped), one that starts above it may have skipped some.
    state.shifts += 1
    if head is None:  # the catalog ended before this page: read back from its new end
        gap = Gap(last_id, None, page.total)
    else:
        gap = Gap(last_id, head[1], page.skip + head[0])
    if gap.is_empty():
        log.debug("the catalog shifted at skip=%d; no product was skipped", page.skip)
        return None
    log.info("the catalog shifted at skip=%d: re-reading %s", page.skip, gap)
    return gap


def _first_id(page: Page) -> tuple[int, int] | None:
    """The position within the page and the id of its first product with a readable id."""
    for index, product in enumerate(page.products):
        product_id = product.get("id") if isinstance(product, dict) else None
        if is_product_id(product_id):
            return index, product_id
    return None


@dataclass(frozen=True)
class Gap:
    """Ids that paging may have skipped: above ``after`` and below ``before`` (None: up to the
    end of the catalog). ``skip`` is the offset where ``before`` was last seen (the end of the
    catalog for None), where the page that re-reads the gap ends; or, ``forwards``, the offset
    of ``after``, where that page starts."""

    after: int
    before: int | None
    skip: int
    forwards: bool = False

    def __str__(self) -> str:
        upper = "the end" if self.before is None else f"product {self.before}"
        return f"the products after {self.after} and before {upper}"

    def holds(self, product_id: int) -> bool:
        """Whether ``product_id`` falls inside the gap."""
        return self.after < product_id and (self.before is None or product_id < self.before)

    def is_empty(self) -> bool:
        """Whether no id fits between the two ends (consecutive ids)."""
        return self.before is not None and self.before <= self.after + 1


class _Rereads:
    """Re-reads a shift's gap, a page at a time, within the run's budget of requests.

    A page served at one instant holds every product between its first and its last: the gap
    is read backwards from where its upper end stood, overlapping as paging does, until a page
    reaches down to the last product seen before the shift; a part still open above a re-read
    page (the catalog moved again) is read forwards from that page's last product.
    """

    def __init__(self, client: DummyJsonClient, state: Extraction, step: int, budget: int) -> None:
        self.client = client
        self.state = state
        self.step = step
        self.budget = budget

    def fill(self, gap: Gap) -> list[dict[str, Any]]:
        """The products found in ``gap``, in id order; what stays open is noted as unhealed."""
        found: dict[int, dict[str, Any]] = {}
        open_gaps = [gap]
        while open_gaps:
            piece = open_gaps.pop()
            if self.state.rereads >= self.budget:
                self.state.unhealed.append(
                    f"{piece} (the catalog shifted; --max-rereads {self.budget} used up)"
                )
                continue
            open_gaps.extend(self._reread(piece, found))
        return [found[product_id] for product_id in sorted(found)]

    def _reread(self, gap: Gap, found: dict[int, dict[str, Any]]) -> list[Gap]:
        """Read one page for ``gap``, keep the products inside it; return what is still open."""
        skip = gap.skip if gap.forwards else max(gap.skip - self.step, 0)
        limit = self.step + 1 if gap.forwards else gap.skip - skip + 1
        page = self.client.fetch_page(skip, limit)
        self.state.rereads += 1
        ids: list[int] = []
        for product in page.products:
            product_id = product.get("id") if isinstance(product, dict) else None
            if not is_product_id(product_id):
                self.state.unhealed.append(
                    f"{gap}: the re-read at skip={skip} met a product without a readable id"
                )
                return []
            ids.append(product_id)
            if gap.holds(product_id):
                found.setdefault(product_id, product)
        if not ids:  # the catalog ended before ``skip``: read back from its new end
            return [] if skip == 0 else [Gap(gap.after, gap.before, page.total)]
        still_open = []
        if skip > 0 and ids[0] > gap.after + 1:
            still_open.append(Gap(gap.after, ids[0], skip))
        above = Gap(ids[-1], gap.before, skip + len(ids) - 1, forwards=True)
        if not reaches_end(page) and not above.is_empty():
            still_open.append(above)
        return still_open


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
            max_rereads=settings.max_rereads,
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
