"""Issue 7: bad input. Property-based tests of the transform and of whole runs.

Products are generated with missing, wrong-typed, out-of-range, huge and hostile values (SQL
fragments, quotes, NUL bytes, emoji, 1 MB strings, negative prices, repeated ids, nested
garbage). The transform raises nothing but ``InvalidProduct``; a valid product becomes exactly
its rows; a run stores every valid product verbatim, sets every invalid one aside with a reason,
and never crashes. Payloads the local server cannot encode (lone surrogates, nesting deeper than
Python's recursion limit, repeated ids) come from a small raw server defined here.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

import data_pipeline
import production_pipeline
from data_pipeline import transform_product
from etl.errors import InvalidProduct
from models import (
    PipelineRun,
    Product,
    ProductImage,
    ProductTag,
    RejectedRecord,
    Review,
)
from tools import catalog_state
from tools.catalog_state import database_catalog, served_catalog
from tools.local_api import Catalog, FakeDummyJson, make_product

FAST = ["--max-retries", "1", "--connect-timeout", "2", "--read-timeout", "5"]
FAST += ["--rate-limit", "0", "--page-size", "4"]
DB_SETTINGS = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # tables are cleared at the start of each example
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
MEGABYTE = "x" * 1_000_000
HOSTILE = (
    "'; DROP TABLE products; --",
    "Robert'); DELETE FROM reviews WHERE ('1'='1",
    '" OR "1"="1',
    "' OR 1=1 --",
    "$$; DROP SCHEMA public CASCADE; $$",
    "%s %(id)s :id ? {0}",
    "\\",
    "\\N",
    "\\.",
    "a\tb\nc\rd",
    "😀🚀👍🏽 ünïcödé Ω",
    "\u202eevil\u202c",
    "\ufeffBOM",
    "<script>alert(1)</script>",
    "NULL",
    "null",
    "🚀" * 1000,
    MEGABYTE,
)

# --- strategies -------------------------------------------------------------------------------

# Text a database can hold: anything but NUL and lone surrogates (both tested separately).
plain_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30
)
text_value = plain_text | st.sampled_from(HOSTILE)
non_blank = text_value.filter(lambda value: bool(value.strip()))


def bounded(limit: int) -> st.SearchStrategy[str]:
    return text_value.filter(lambda value: len(value) <= limit)


def money(high: str) -> st.SearchStrategy[Decimal]:
    return st.decimals(min_value=0, max_value=Decimal(high), places=2)


def number(high: str) -> st.SearchStrategy[Any]:
    """A JSON number with at most two decimals: a Decimal as the client parses it, or an int."""
    return money(high) | st.integers(0, int(Decimal(high)))


ZONES = (
    dt.UTC,
    dt.timezone(dt.timedelta(hours=5, minutes=30)),
    dt.timezone(-dt.timedelta(hours=8)),
)
timestamps = st.builds(
    lambda moment, zone, millis: (
        moment.replace(tzinfo=zone).isoformat(timespec="milliseconds" if millis else "auto")
    ).replace("+00:00", "Z"),
    st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2099, 12, 31)),
    st.sampled_from(ZONES),
    st.booleans(),
)
int32 = st.integers(-(2**31), 2**31 - 1)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Present, or null; absent keys come from ``fixed_dictionaries(optional=...)``."""
    return strategy | st.none()


reviews = st.fixed_dictionaries(
    {},
    optional={
        "rating": optional(number("5")),
        "comment": optional(text_value),
        "date": optional(timestamps),
        "reviewerName": optional(text_value),
        "reviewerEmail": optional(st.emails() | text_value),
    },
)
valid_products = st.fixed_dictionaries(
    {"title": non_blank, "price": number("9999999999.99")},
    optional={
        "description": optional(text_value),
        "category": optional(bounded(100)),
        "discountPercentage": optional(number("100")),
        "rating": optional(number("5")),
        "stock": optional(int32),
        "tags": optional(st.lists(non_blank, max_size=4)),
        "brand": optional(bounded(200)),
        "weight": optional(number("99999999.99")),
        "dimensions": optional(
            st.fixed_dictionaries(
                {},
                optional={
                    "width": optional(number("99999999.99")),
                    "height": optional(number("99999999.99")),
                    "depth": optional(number("99999999.99")),
                },
            )
        ),
        "warrantyInformation": optional(text_value),
        "shippingInformation": optional(text_value),
        "availabilityStatus": optional(bounded(50)),
        "reviews": optional(st.lists(reviews, max_size=3)),
        "returnPolicy": optional(text_value),
        "minimumOrderQuantity": optional(int32),
        "meta": optional(
            st.fixed_dictionaries(
                {},
                optional={
                    "createdAt": optional(timestamps),
                    "updatedAt": optional(timestamps),
                    "barcode": optional(bounded(64)),
                    "qrCode": optional(text_value),
                },
            )
        ),
        "images": optional(st.lists(non_blank, max_size=3)),
        "thumbnail": optional(text_value),
    },
)

# Values that make a product invalid, by the field they go in. Each must be rejected.
BREAKERS: dict[str, tuple[Any, ...]] = {
    "title": ("", "   ", None, 42, ["x"], "a\x00b", {"$ne": None}),
    "price": (Decimal("-0.01"), Decimal("1.234"), None, "12", 10**10, Decimal("NaN"), True),
    "rating": (Decimal("5.01"), -1, "high"),
    "discountPercentage": (Decimal("100.5"), [10]),
    "stock": (2**31, -(2**31) - 1, Decimal("1.5"), "7", True),
    "minimumOrderQuantity": (Decimal("1E+2"), 2**40),
    "description": ("a\x00b", 3.5),
    "category": ("c" * 101,),
    "brand": ("b" * 201,),
    "sku": ("s" * 101, 12345),
    "availabilityStatus": ("a" * 51,),
    "weight": (Decimal("-1"), Decimal("100000000")),
    "dimensions": ("big", [1, 2, 3], {"width": Decimal("-1")}, {"depth": "deep"}),
    "meta": ("x", {"createdAt": "yesterday"}, {"updatedAt": "2024-01-01T00:00:00"}),
    "tags": ("tag", [None], [""], [1], [{"x": [1]}]),
    "images": ({"a": 1}, [["nested"]]),
    "reviews": ("great", [1], [{"rating": 7}], [{"date": "soon"}], [{"comment": {"a": "b"}}]),
    "thumbnail": (["a", "b"],),
}
breakers = st.sampled_from(
    [(field, value) for field, values in BREAKERS.items() for value in values]
)

leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.decimals()
    | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
    | st.sampled_from(HOSTILE[:-1])
    | timestamps
)
garbage = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
PRODUCT_KEYS = (
    "id", "title", "description", "category", "price", "discountPercentage", "rating", "stock",
    "tags", "brand", "sku", "weight", "dimensions", "warrantyInformation", "shippingInformation",
    "availabilityStatus", "reviews", "returnPolicy", "minimumOrderQuantity", "meta", "images",
    "thumbnail",
)  # fmt: skip
anything = (
    garbage
    | st.fixed_dictionaries({}, optional=dict.fromkeys(PRODUCT_KEYS, garbage))
    | st.builds(
        lambda product, spoiled: {"id": 1, **product, **spoiled},
        valid_products,
        st.dictionaries(st.sampled_from(PRODUCT_KEYS), garbage, max_size=3),
    )
)


# --- the transform ----------------------------------------------------------------------------


def _dig(product: dict[str, Any], *path: str) -> Any:
    value: Any = product
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _timestamp(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value).astimezone(dt.UTC)


# The scalar columns compared verbatim (timestamps are compared as instants elsewhere).
SCALARS = {
    column: path
    for column, path in catalog_state.SCALARS.items()
    if column not in catalog_state.TIMESTAMPS
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(product=valid_products, product_id=st.integers(1, 2**31 - 1))
def test_a_valid_product_becomes_exactly_its_rows(product: dict[str, Any], product_id: int) -> None:
    raw = {"id": product_id, **product}

    rows = transform_product(raw)

    assert rows.id == product_id
    for column, path in SCALARS.items():
        expected, got = _dig(raw, *path), rows.product[column]
        assert got == expected and type(got) in (type(expected), Decimal), column
    assert rows.product["created_at"] == _timestamp(_dig(raw, "meta", "createdAt"))
    assert rows.product["updated_at"] == _timestamp(_dig(raw, "meta", "updatedAt"))
    assert [tag["tag"] for tag in rows.tags] == (raw.get("tags") or [])
    assert [image["url"] for image in rows.images] == (raw.get("images") or [])
    assert [review["position"] for review in rows.reviews] == list(range(len(rows.reviews)))
    for row, review in zip(rows.reviews, raw.get("reviews") or [], strict=True):
        assert row["rating"] == review.get("rating")
        assert row["comment"] == review.get("comment")
        assert row["date"] == _timestamp(review.get("date"))
        assert row["reviewer_name"] == review.get("reviewerName")
        assert row["reviewer_email"] == review.get("reviewerEmail")
    assert -(2**63) <= rows.product["content_hash"] < 2**63


@settings(max_examples=300, deadline=None)
@given(product=valid_products, breaker=breakers)
def test_a_bad_value_is_rejected_with_a_reason_naming_its_field(
    product: dict[str, Any], breaker: tuple[str, Any]
) -> None:
    field, value = breaker
    raw = {"id": 7, **product, field: value}

    with pytest.raises(InvalidProduct) as rejected:
        transform_product(raw)

    assert rejected.value.reason.startswith(field)
    assert rejected.value.source_id == 7


@settings(max_examples=500, deadline=None)
@given(raw=anything)
def test_the_transform_raises_nothing_but_invalid_product_whatever_arrives(raw: Any) -> None:
    try:
        transform_product(raw)
    except InvalidProduct as exc:
        assert exc.reason


def test_a_lone_surrogate_is_rejected_as_invalid_not_raised() -> None:
    raw = {**make_product(1), "title": "half an emoji \ud83d"}

    with pytest.raises(InvalidProduct) as rejected:
        transform_product(raw)

    assert rejected.value.reason.startswith("title")


@pytest.mark.parametrize("value", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_timestamp_out_of_range_in_utc_is_rejected_as_invalid(value: str) -> None:
    raw = make_product(1)
    raw["meta"]["createdAt"] = value

    with pytest.raises(InvalidProduct) as rejected:
        transform_product(raw)

    assert rejected.value.reason.startswith("meta.createdAt")


# --- whole runs through the local server ------------------------------------------------------


def jsonable(value: Any) -> Any:
    """What the server encodes: Decimals as floats (exact below 15 digits), the rest as is."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    return value


@st.composite
def mixed_catalogs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], set[int]]:
    """Products 1..n, each valid (with hostile text) or broken by one bad value; the bad ids."""
    products, invalid = [], set()
    for product_id in range(1, draw(st.integers(1, 8)) + 1):
        product = {"id": product_id, **draw(valid_products), "sku": f"SKU-{product_id:04d}"}
        if draw(st.booleans()):
            field, value = draw(breakers)
            product[field] = value
            invalid.add(product_id)
        products.append(jsonable(product))
    return products, invalid


def clear_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        for model in (Review, ProductImage, ProductTag, Product, RejectedRecord, PipelineRun):
            conn.execute(delete(model))


def rejections(engine: Engine) -> dict[str | None, str]:
    with Session(engine) as session:
        return {r.source_id: r.reason for r in session.scalars(select(RejectedRecord))}


PIPELINES: dict[str, Callable[[list[str]], int]] = {
    "production_pipeline": production_pipeline.main,
    "data_pipeline": data_pipeline.main,
}


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@DB_SETTINGS
@given(catalog=mixed_catalogs())
def test_a_run_stores_valid_products_verbatim_and_sets_invalid_ones_aside(
    api: FakeDummyJson,
    database_url: str,
    engine: Engine,
    pipeline: str,
    catalog: tuple[list[dict[str, Any]], set[int]],
) -> None:
    products, invalid = catalog
    clear_tables(engine)
    api.catalog = Catalog(0)
    for product in products:
        api.catalog.put(product)

    code = PIPELINES[pipeline](["--api-url", api.url, "--database-url", database_url, *FAST])

    assert code == 0
    assert database_catalog(engine) == served_catalog(api.url, exclude=invalid)
    reasons = rejections(engine)
    assert set(reasons) == {str(product_id) for product_id in invalid}
    assert all(reasons.values())


def test_hostile_strings_are_stored_verbatim_and_inject_nothing(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    api.catalog = Catalog(0)
    for product_id, hostile in enumerate(HOSTILE, start=1):
        product = make_product(product_id)
        product.update(title=hostile, description=hostile, tags=[hostile])
        product["reviews"] = [{"comment": hostile, "reviewerName": hostile}]
        api.catalog.put(product)

    assert (
        production_pipeline.main(["--api-url", api.url, "--database-url", database_url, *FAST]) == 0
    )

    catalog = database_catalog(engine)
    assert catalog == served_catalog(api.url)
    assert [catalog[i]["title"] for i in range(1, len(HOSTILE) + 1)] == list(HOSTILE)
    assert catalog[len(HOSTILE)]["description"] == MEGABYTE
    assert rejections(engine) == {}


# --- payloads only a raw server can send ------------------------------------------------------


class RawServer:
    """``GET /products?limit=&skip=`` over products given as JSON text, with a chosen total."""

    def __init__(self, products: list[str], total: int | None = None) -> None:
        self.products = products
        self.total = len(products) if total is None else total
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raw = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = dict(parse_qsl(urlsplit(self.path).query))
                skip, limit = int(query.get("skip", 0)), int(query.get("limit", 30))
                page = raw.products[skip:] if limit == 0 else raw.products[skip : skip + limit]
                body = (
                    '{"products":[' + ",".join(page) + f'],"total":{raw.total},'
                    f'"skip":{skip},"limit":{len(page)}}}'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def __enter__(self) -> RawServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(products: list[str], total: int | None = None) -> RawServer:
        server = RawServer(products, total).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


def encoded(product: dict[str, Any]) -> str:
    return json.dumps(product)  # ASCII: a lone surrogate travels as its \ud83d escape


def sync(url: str, database_url: str) -> int:
    return production_pipeline.main(["--api-url", url, "--database-url", database_url, *FAST])


@DB_SETTINGS
@given(
    repeats=st.lists(st.integers(1, 12), min_size=1, max_size=14).map(sorted),
    count_repeats=st.booleans(),
)
def test_a_repeated_id_is_dropped_and_nothing_valid_is_lost(
    raw_server: Callable[..., RawServer],
    database_url: str,
    engine: Engine,
    repeats: list[int],
    count_repeats: bool,
) -> None:
    clear_tables(engine)
    ids = sorted(set(repeats))
    previous = raw_server([encoded(make_product(pid, variant=99)) for pid in ids])
    assert sync(previous.url, database_url) == 0
    before = database_catalog(engine)
    # The first time an id is served it has one content, each repeat another.
    served = [
        encoded(make_product(pid, variant=0 if index == repeats.index(pid) else index + 1))
        for index, pid in enumerate(repeats)
    ]
    total = len(repeats) if count_repeats else len(ids)

    code = sync(raw_server(served, total).url, database_url)

    after = database_catalog(engine)
    seen = served_catalog(raw_server([encoded(make_product(pid)) for pid in ids]).url)
    assert code == 0
    assert set(after) == set(ids)
    if last_status(engine) == "succeeded":
        assert after == seen
    else:  # repeats hid products from the pages: what was read is applied, the rest waits
        assert last_status(engine) == "partial"
        assert all(after[pid] in (seen[pid], before[pid]) for pid in ids)


def last_status(engine: Engine) -> str:
    with Session(engine) as session:
        run = session.scalars(select(PipelineRun).order_by(PipelineRun.id.desc())).first()
    assert run is not None
    return run.status


def test_a_total_that_counts_the_repeats_defers_deletions_and_strict_refuses_it(
    raw_server: Callable[..., RawServer], database_url: str, engine: Engine
) -> None:
    clean = raw_server([encoded(make_product(pid)) for pid in (1, 2, 3, 4)])
    assert sync(clean.url, database_url) == 0
    before = database_catalog(engine)
    repeated = raw_server([encoded(make_product(pid, variant=1)) for pid in (1, 2, 2, 3)])
    strict = ["--api-url", repeated.url, "--database-url", database_url, *FAST, "--strict"]

    assert production_pipeline.main(strict) == 1

    assert database_catalog(engine) == before
    assert last_status(engine) == "refused"

    assert sync(repeated.url, database_url) == 0  # the count cannot be trusted: partial

    after = database_catalog(engine)
    assert after[4] == before[4]  # unseen, so its deletion waits
    assert all(after[pid] != before[pid] for pid in (1, 2, 3))  # read: updated
    assert last_status(engine) == "partial"


@pytest.mark.parametrize(
    "field, value",
    [
        pytest.param(
            "title",
            "half \ud83d",
            id="lone surrogate",
        ),
        pytest.param(
            "meta",
            {"createdAt": "0001-01-01T00:30:00+01:00"},
            id="year 0 in UTC",
        ),
        pytest.param("description", "nul \x00 byte", id="NUL byte"),
    ],
)
def test_a_product_the_database_cannot_hold_is_rejected_and_the_others_load(
    raw_server: Callable[..., RawServer], database_url: str, engine: Engine, field: str, value: Any
) -> None:
    products = [make_product(1), {**make_product(2), field: value}, make_product(3)]
    server = raw_server([encoded(product) for product in products])

    assert sync(server.url, database_url) == 0

    assert set(database_catalog(engine)) == {1, 3}
    assert rejections(engine)["2"].startswith(field)


def test_nesting_deeper_than_the_recursion_limit_fails_the_run_cleanly(
    raw_server: Callable[..., RawServer], database_url: str, engine: Engine
) -> None:
    nested = '{"id": 2, "title": "deep", "price": 1, "tags": ' + "[" * 5000 + "]" * 5000 + "}"
    server = raw_server([encoded(make_product(1)), nested])

    assert sync(server.url, database_url) == 1

    assert database_catalog(engine) == {}
    with Session(engine) as session:
        run = session.scalars(select(PipelineRun).order_by(PipelineRun.id.desc())).first()
    assert run is not None and run.status == "failed" and run.error
