"""Exercise 1-2: paging, validation, and the basic full-refresh pipeline end to end."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import data_pipeline
from data_pipeline import Extraction, iter_products, page_plan, transform_product
from etl import decoding
from etl.client import DummyJsonClient
from etl.decoding import content_hash
from etl.errors import InvalidProduct
from models import PipelineRun, RejectedRecord
from tests.cli import exit_status
from tools.catalog_state import database_catalog, row_counts, served_catalog
from tools.local_api import Catalog, FakeDummyJson, Fault, make_product

FAST = ["--max-retries", "2", "--connect-timeout", "2", "--read-timeout", "5", "--rate-limit", "0"]


def run_pipeline(api: FakeDummyJson, database_url: str, *extra: str) -> int:
    return data_pipeline.main(
        ["--api-url", api.url, "--database-url", database_url, "--page-size", "50", *FAST, *extra]
    )


def runs(engine: Engine) -> list[PipelineRun]:
    with Session(engine) as session:
        return list(session.scalars(select(PipelineRun).order_by(PipelineRun.id)))


def deleting(*product_ids: int) -> Callable[[Catalog], None]:
    """A catalog change: these products go."""

    def delete(catalog: Catalog) -> None:
        for product_id in product_ids:
            catalog.delete(product_id)

    return delete


def adding(count: int) -> Callable[[Catalog], None]:
    """A catalog change: ``count`` new products at the end."""

    def add(catalog: Catalog) -> None:
        for _ in range(count):
            catalog.add()

    return add


# --- paging rule ------------------------------------------------------------------------------


def test_page_plan_overlaps_each_page_with_the_last_product_of_the_one_before() -> None:
    assert list(page_plan(total=194, page_size=50)) == [(49, 51), (99, 51), (149, 51)]


def test_page_plan_is_empty_when_the_first_page_holds_everything() -> None:
    assert list(page_plan(total=30, page_size=30)) == []
    assert list(page_plan(total=0, page_size=30)) == []


def test_page_plan_ends_at_the_total_even_when_it_is_a_multiple_of_the_page() -> None:
    assert list(page_plan(total=100, page_size=50)) == [(49, 51)]


def test_iter_products_yields_the_whole_catalog_in_order_and_records_completeness(
    api: FakeDummyJson,
) -> None:
    extraction = Extraction()
    with DummyJsonClient(api.url) as client:
        ids = [p["id"] for p in iter_products(client, page_size=50, extraction=extraction)]
    assert ids == api.catalog.ids()
    assert extraction.pages == 3
    assert extraction.complete
    assert extraction.incomplete_reason() is None


def test_iter_products_fetches_overlapping_pages_and_yields_each_product_once(
    api: FakeDummyJson,
) -> None:
    with DummyJsonClient(api.url) as client:
        ids = [p["id"] for p in iter_products(client, page_size=50)]
    assert ids == api.catalog.ids()
    pages = [(r.query["skip"], r.query["limit"]) for r in api.list_requests()]
    assert pages == [("0", "50"), ("49", "51"), ("99", "51")]


def test_iter_products_fetches_pages_in_parallel_and_yields_them_in_order(
    fake_api: Any,
) -> None:
    api = fake_api(products=1000, latency=0.2)
    extraction = Extraction()
    with DummyJsonClient(api.url, pool_size=8) as client:
        products = iter_products(client, page_size=50, extraction=extraction, concurrency=8)
        ids = [p["id"] for p in products]
    assert ids == api.catalog.ids()
    assert extraction.complete
    # Each request waits 200 ms at the server; count how many arrived while another waited.
    arrivals = sorted(r.arrived for r in api.list_requests())
    in_flight = max(sum(1 for b in arrivals if a <= b < a + 0.2) for a in arrivals)
    assert in_flight >= 6  # eight workers; a few may already have been answered


def test_a_deletion_before_the_next_page_is_seen_through_the_overlap_and_loses_nothing(
    api: FakeDummyJson,
) -> None:
    # Deleting product 10 shifts every later product one offset back: product 51 moves to
    # offset 49, where the second page (which overlaps the first by one) still finds it.
    api.on_list_request(49, lambda catalog: catalog.delete(10))
    extraction = Extraction()
    with DummyJsonClient(api.url) as client:
        ids = [p["id"] for p in iter_products(client, page_size=50, extraction=extraction)]
    assert ids == list(range(1, 121))
    assert extraction.shifts == 1
    assert extraction.rereads == 0  # no id fits between 50 and 51: nothing to re-read
    assert extraction.complete


def test_a_deletion_and_an_insertion_that_cancel_out_are_still_caught(api: FakeDummyJson) -> None:
    def delete_one_add_one(catalog: Catalog) -> None:
        catalog.delete(10)
        catalog.add()

    api.on_list_request(49, delete_one_add_one)
    extraction = Extraction()
    with DummyJsonClient(api.url) as client:
        ids = [p["id"] for p in iter_products(client, page_size=50, extraction=extraction)]
    # The total never changes. Without the overlap, product 51 would be skipped and the count
    # (50 + 70 seen, 120 announced) would match: counting alone cannot see this shift.
    assert extraction.total == 120
    assert extraction.total_changes == 0
    assert extraction.shifts == 1
    assert ids == list(range(1, 122))
    assert extraction.complete


def test_two_deletions_before_the_next_page_are_healed_by_re_reading_the_gap(
    api: FakeDummyJson,
) -> None:
    # Products 50, 51 and 52 move back to offsets 47, 48 and 49: the second page starts at 52,
    # and 51 (between the last product seen and the page's first) would be skipped.
    api.on_list_request(49, deleting(10, 11))
    extraction = Extraction()
    with DummyJsonClient(api.url) as client:
        ids = [p["id"] for p in iter_products(client, page_size=50, extraction=extraction)]
    assert ids == list(range(1, 121))  # every product, in id order, once
    assert extraction.shifts == 1
    assert extraction.rereads == 1
    assert [(r.query["skip"], r.query["limit"]) for r in api.list_requests()] == [
        ("0", "50"),
        ("49", "51"),
        ("0", "50"),  # the re-read: the page that ends where product 52 stood
        ("99", "51"),
    ]
    assert extraction.complete


def test_a_shift_larger_than_a_page_is_re_read_backwards_a_page_at_a_time(
    fake_api: Any,
) -> None:
    api = fake_api(products=200)
    api.on_list_request(119, deleting(*range(3, 48)))
    extraction = Extraction()
    with DummyJsonClient(api.url) as client:
        ids = [p["id"] for p in iter_products(client, page_size=20, extraction=extraction)]
    assert ids == list(range(1, 201))
    assert extraction.rereads == 3  # 45 products moved back: three pages of 20 to read back
    assert extraction.complete


def test_a_gap_left_when_the_re_reads_are_used_up_makes_the_extraction_incomplete(
    api: FakeDummyJson,
) -> None:
    api.on_list_request(49, deleting(10, 11))
    extraction = Extraction()
    with DummyJsonClient(api.url) as client:
        products = iter_products(client, page_size=50, extraction=extraction, max_rereads=0)
        ids = [p["id"] for p in products]
    assert 51 not in ids
    assert not extraction.complete
    reason = extraction.incomplete_reason() or ""
    assert "the products after 50 and before product 52" in reason
    assert "--max-rereads 0 used up" in reason


def test_a_catalog_that_grows_past_the_plan_is_read_to_its_new_end(api: FakeDummyJson) -> None:
    api.on_list_request(49, adding(60))
    extraction = Extraction()
    with DummyJsonClient(api.url) as client:
        ids = [p["id"] for p in iter_products(client, page_size=50, extraction=extraction)]
    assert ids == list(range(1, 181))
    assert [r.query["skip"] for r in api.list_requests()] == ["0", "49", "99", "149"]
    assert extraction.complete


def test_a_catalog_that_shrinks_under_the_last_page_is_re_read_from_its_new_end(
    api: FakeDummyJson,
) -> None:
    # The third page (skip 99) finds the catalog ended at 80 products: products 100..120
    # moved back behind it and are read from the new end.
    api.on_list_request(99, deleting(*range(2, 42)))
    extraction = Extraction()
    with DummyJsonClient(api.url) as client:
        ids = [p["id"] for p in iter_products(client, page_size=50, extraction=extraction)]
    assert ids == list(range(1, 121))
    assert extraction.rereads >= 1
    assert extraction.complete


def test_iter_products_drops_a_product_served_twice_when_an_insertion_shifts_pages_forward(
    api: FakeDummyJson,
) -> None:
    product_10 = api.catalog.get(10)
    assert product_10 is not None
    api.catalog.delete(10)
    api.on_list_request(49, lambda catalog: catalog.put(product_10))
    extraction = Extraction()
    with DummyJsonClient(api.url) as client:
        ids = [p["id"] for p in iter_products(client, page_size=50, extraction=extraction)]
    assert len(ids) == len(set(ids))  # 50 and 51 are served again on page two, yielded once
    assert extraction.duplicates == 2
    assert 10 not in ids  # inserted behind the pages already read: the next run sees it
    assert extraction.complete  # every product that was there all along was seen


# --- validation and transform -----------------------------------------------------------------


def test_transform_keeps_values_exactly_and_absent_fields_as_null() -> None:
    raw = make_product(7)
    raw.pop("brand", None)
    raw["price"] = Decimal("16777217.99")
    raw["discountPercentage"] = 5  # a decimal arriving as a JSON integer
    raw["meta"]["barcode"] = "0012345678905"
    rows = transform_product(raw)
    assert rows.product["brand"] is None
    assert rows.product["price"] == Decimal("16777217.99")
    assert rows.product["discount_percentage"] == Decimal(5)
    assert rows.product["barcode"] == "0012345678905"
    assert rows.product["created_at"].tzinfo is not None
    assert [t["tag"] for t in rows.tags] == raw["tags"]
    assert [i["position"] for i in rows.images] == list(range(len(raw["images"])))
    assert len(rows.reviews) == len(raw["reviews"])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": "7"}, "id: expected a positive integer"),
        ({"id": True}, "id: expected a positive integer"),
        ({"title": None}, "title: required"),
        ({"title": "   "}, "title: required, but it is empty"),
        ({"price": "abc"}, "price: expected a number, got str"),
        ({"price": Decimal("9.999")}, "price: 9.999 has more than 2 decimals"),
        ({"price": -1}, "price: -1 is below 0"),
        ({"price": Decimal("NaN")}, "price: expected a finite number"),
        ({"rating": 7}, "rating: 7 is above 5"),
        ({"stock": 1.5}, "stock: expected an integer"),
        ({"tags": "a,b"}, "tags: expected a list, got str"),
        ({"sku": "x" * 101}, "sku: longer than 100 characters"),
        ({"description": "nul\x00byte"}, "description: contains a NUL character"),
        ({"meta": {"createdAt": "yesterday"}}, "meta.createdAt: expected an ISO-8601 timestamp"),
        (
            {"reviews": [{"rating": 5, "date": "2024-05-23T08:56:21"}]},
            "reviews[0].date: timestamp '2024-05-23T08:56:21' has no timezone",
        ),
        ({"reviews": [{"rating": 5}, {"rating": 6}]}, "reviews[1].rating: 6 is above 5"),
        ({"reviews": [{}, "great"]}, "reviews[1]: expected an object, got str"),
        ({"reviews": [{"reviewerName": 7}]}, "reviews[0].reviewerName: expected text, got int"),
    ],
)
def test_transform_rejects_a_bad_field_naming_it_and_what_arrived(
    change: dict[str, Any], reason: str
) -> None:
    raw = {**make_product(3), **change}
    with pytest.raises(InvalidProduct) as caught:
        transform_product(raw)
    assert reason in caught.value.reason
    assert caught.value.reason.startswith(reason.partition(":")[0] + ":")


def test_transform_accepts_unicode_quotes_and_sql_verbatim() -> None:
    hostile = "Crème d'Été & Co'; DROP TABLE products; -- 🚀"
    rows = transform_product({**make_product(1), "title": hostile})
    assert rows.product["title"] == hostile


def test_content_hash_changes_with_any_field_or_child_and_only_then() -> None:
    raw = make_product(5)
    same = json.loads(json.dumps(raw))
    assert content_hash(raw) == content_hash(same)
    changed_child = json.loads(json.dumps(raw))
    changed_child["images"].append("https://example.test/extra.png")
    assert content_hash(raw) != content_hash(changed_child)
    assert content_hash(raw) != content_hash({**raw, "stock": (raw.get("stock") or 0) + 1})


def page_body(
    products: list[Any], *, indent: int | None = None, total_first: bool = False
) -> bytes:
    """A ``/products`` answer as a server might write it."""
    document: dict[str, Any] = {"products": products, "total": len(products), "skip": 0}
    if total_first:
        document = {"total": document.pop("total"), **document}
    return json.dumps(document, indent=indent, ensure_ascii=False).encode()


def standard_decode(body: bytes) -> Any:
    return json.loads(body, parse_float=Decimal, parse_constant=Decimal)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@given(products=st.lists(JSON_VALUES, max_size=5), indent=st.sampled_from([None, 0, 2]))
@settings(max_examples=300, deadline=None)
def test_decode_json_gives_what_the_standard_decoder_gives(
    products: list[Any], indent: int | None
) -> None:
    for total_first in (False, True):
        body = page_body(products, indent=indent, total_first=total_first)
        assert decoding.decode_json(body) == standard_decode(body)


@given(data=st.data())
@settings(max_examples=500, deadline=None)
def test_decode_json_rejects_exactly_what_the_standard_decoder_rejects(data: st.DataObject) -> None:
    body = bytearray(page_body([make_product(1), [1, "x"], make_product(2)], indent=1))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(body) - 1))
        if data.draw(st.booleans()):
            del body[position]
        else:
            body.insert(position, data.draw(st.sampled_from(b'{}[],:" \n0-.e\\')))
    try:
        expected: Any = standard_decode(bytes(body))
    except ValueError:
        with pytest.raises(ValueError):
            decoding.decode_json(bytes(body))
    else:
        assert decoding.decode_json(bytes(body)) == expected


def test_each_product_carries_the_digest_of_its_own_text_and_only_of_it() -> None:
    first, second = (json.dumps(make_product(i)) for i in (1, 2))
    body = f'{{"products":[{first},{second}],"total":2}}'.encode()
    page = decoding.decode_json(body)["products"]
    elsewhere = f'{{ "total" : 9,\n "products" : [\n  {second} ,\n  {first}\n ] }}'.encode()
    moved = decoding.decode_json(elsewhere)["products"]
    stock = json.loads(first)["stock"]
    edited = first.replace(f'"stock": {stock},', f'"stock": {stock + 1},')
    changed = decoding.decode_json(f'{{"products":[{edited}],"total":1}}'.encode())

    assert all(isinstance(product, decoding.SourceProduct) for product in page + moved)
    # The same text at another place, among other neighbours and whitespace: the same digest.
    assert [content_hash(product) for product in moved] == [
        content_hash(product) for product in reversed(page)
    ]
    assert content_hash(changed["products"][0]) != content_hash(page[0])
    assert content_hash(page[0]) != content_hash(page[1])
    # A product the client did not decode from a page is digested from its content.
    assert content_hash(dict(page[0])) == content_hash(standard_decode(first.encode()))


# --- end to end -------------------------------------------------------------------------------


def test_two_runs_leave_exactly_the_served_catalog_field_by_field(
    fake_api: Any, database_url: str, engine: Engine
) -> None:
    api = fake_api(products=500)
    assert run_pipeline(api, database_url) == 0
    assert run_pipeline(api, database_url) == 0
    assert database_catalog(engine) == served_catalog(api.url)
    counts = row_counts(engine)
    assert counts["products"] == 500
    assert counts["reviews"] == sum(len(p["reviews"]) for p in served_catalog(api.url).values())
    assert [run.status for run in runs(engine)] == ["succeeded", "succeeded"]
    assert runs(engine)[-1].inserted == 500


def test_absent_brand_is_null_and_decimals_are_exact_in_the_database(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    raw = make_product(1)
    raw.pop("brand", None)
    raw.update(price=1899.99, discountPercentage=5, weight=2)
    api.catalog.put(raw)
    assert run_pipeline(api, database_url) == 0
    loaded = database_catalog(engine)[1]
    assert loaded["brand"] is None
    assert loaded["price"] == Decimal("1899.99")
    assert loaded["discount_percentage"] == Decimal(5)
    assert isinstance(loaded["created_at"], dt.datetime)
    assert loaded["created_at"].tzinfo is not None


def test_a_rejected_product_is_recorded_with_its_reason_and_the_others_load(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    api.catalog.put({**make_product(42), "price": "free"})
    assert run_pipeline(api, database_url) == 0
    assert database_catalog(engine) == served_catalog(api.url, exclude={42})
    with Session(engine) as session:
        rejected = session.scalars(select(RejectedRecord)).all()
    assert [(r.source_id, r.reason) for r in rejected] == [
        ("42", "price: expected a number, got str 'free'")
    ]
    assert json.loads(rejected[0].payload)["price"] == "free"
    assert runs(engine)[-1].rejected == 1


def test_a_repeated_sku_is_rejected_instead_of_failing_the_load(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    api.catalog.put({**make_product(9), "sku": make_product(3)["sku"]})
    assert run_pipeline(api, database_url) == 0
    assert 9 not in database_catalog(engine)
    with engine.connect() as conn:
        reason = conn.execute(select(RejectedRecord.reason)).scalar_one()
    assert "already used by product 3" in reason


def test_the_api_failing_on_page_3_leaves_the_previous_catalog_and_exits_1(
    api: FakeDummyJson, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_pipeline(api, database_url) == 0
    before = database_catalog(engine)
    api.catalog.touch(1)
    api.catalog.delete(2)
    api.add_fault(Fault("status", skip=99, status=503, times=-1))

    assert run_pipeline(api, database_url) == 1

    assert database_catalog(engine) == before
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert f"{api.url}/products?limit=51&skip=99" in error[0]
    assert "HTTP 503" in error[0]
    last = runs(engine)[-1]
    assert last.status == "failed"
    assert "HTTP 503" in (last.error or "")


def test_transient_errors_and_truncated_bodies_are_retried_to_the_full_catalog(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    api.add_fault(Fault("status", skip=49, status=500, times=2))
    api.add_fault(Fault("status", skip=0, status=429, retry_after="0"))
    api.add_fault(Fault("truncate", skip=99))
    api.add_fault(Fault("drop", skip=0))
    assert run_pipeline(api, database_url) == 0
    assert database_catalog(engine) == served_catalog(api.url)


def test_a_shift_the_re_reads_cannot_heal_fails_the_refresh_and_keeps_the_old_catalog(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    assert run_pipeline(api, database_url) == 0
    before = database_catalog(engine)
    api.on_list_request(49, deleting(10, 11))
    assert run_pipeline(api, database_url, "--max-rereads", "0") == 1
    assert database_catalog(engine) == before
    assert "extraction incomplete" in (runs(engine)[-1].error or "")


def test_a_shift_healed_by_re_reading_lets_the_refresh_load_every_product(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    api.on_list_request(49, deleting(10, 11))
    assert run_pipeline(api, database_url) == 0
    # Products 10 and 11 were read before they went: the refresh loads what it saw.
    assert sorted(database_catalog(engine)) == list(range(1, 121))


def test_an_unreachable_api_fails_in_one_line_without_a_traceback(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = data_pipeline.main(
        ["--api-url", "http://127.0.0.1:9", "--database-url", sqlite_url, "--max-retries", "0"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "http://127.0.0.1:9/products" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--page-size", "many"], "--page-size"),
        (["--page-size", "0"], "--page-size"),
        (["--api-url", "ftp://example.test"], "--api-url"),
        (["--read-timeout", "-1"], "--read-timeout"),
        (["--database-url", "nonsense://"], "--database-url"),
        (["--no-such-flag"], "--no-such-flag"),
    ],
)
def test_a_bad_argument_exits_2_naming_itself(
    args: list[str], names: str, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--api-url", "http://127.0.0.1:9", "--database-url", sqlite_url]
    assert exit_status(data_pipeline.main, [*base, *args]) == 2
    assert names in capsys.readouterr().err


def test_settings_come_from_the_environment_when_no_flag_is_given(
    api: FakeDummyJson, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PAGE_SIZE=7\nAPI_BASE_URL=http://127.0.0.1:9\n")
    monkeypatch.setenv("API_BASE_URL", api.url)  # the environment beats .env
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    assert data_pipeline.main([]) == 0
    requests = api.list_requests()
    assert len(requests) == 18  # ceil(120 / 7): PAGE_SIZE came from .env
    assert {r.query["limit"] for r in requests} == {"7", "8"}  # 7, then 7 + 1 overlapping


def test_catalog_fixture_is_deterministic() -> None:
    assert list(Catalog(5, seed=1).products()) == list(Catalog(5, seed=1).products())
