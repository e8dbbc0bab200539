"""Tests of the fake DummyJSON server, over real HTTP on 127.0.0.1 with `requests`.

Run: pytest tests/test_local_api.py
"""

from __future__ import annotations

import re
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.cli import exit_status
from tools.local_api import Catalog, FakeDummyJson, Fault, main, make_product

TIMEOUT = 5
ISO_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def api() -> Iterator[FakeDummyJson]:
    """A server with DummyJSON's real catalog size, 194 products."""
    with FakeDummyJson(products=194) as server:
        yield server


@pytest.fixture(scope="module")
def catalog_500() -> list[dict[str, Any]]:
    """Five hundred synthetic products, enough for every quirk to show up."""
    return list(Catalog(500).products())


def get(api: FakeDummyJson, path: str, **params: Any) -> requests.Response:
    """GET a path of the fake server with query parameters."""
    return requests.get(f"{api.url}{path}", params=params, timeout=TIMEOUT)


def float32(value: float) -> float:
    """What a float4 / PostgreSQL real column would store."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


# --------------------------------------------------------------------------- listing


def test_listing_defaults_to_thirty_products_from_the_start(api: FakeDummyJson) -> None:
    page = get(api, "/products").json()

    assert [p["id"] for p in page["products"]] == list(range(1, 31))
    assert (page["total"], page["skip"], page["limit"]) == (194, 0, 30)


def test_listing_echoes_the_count_returned_as_limit(api: FakeDummyJson) -> None:
    page = get(api, "/products", skip=190, limit=10).json()

    assert [p["id"] for p in page["products"]] == [191, 192, 193, 194]
    assert (page["total"], page["skip"], page["limit"]) == (194, 190, 4)


def test_limit_zero_returns_every_product(api: FakeDummyJson) -> None:
    page = get(api, "/products", limit=0).json()

    assert [p["id"] for p in page["products"]] == list(range(1, 195))
    assert page["limit"] == 194


def test_skip_past_the_end_answers_an_empty_page_with_the_real_total(api: FakeDummyJson) -> None:
    response = get(api, "/products", skip=500)

    assert response.status_code == 200
    assert response.json() == {"products": [], "total": 194, "skip": 500, "limit": 0}


def test_paging_by_the_count_returned_visits_every_product_once(api: FakeDummyJson) -> None:
    seen: list[int] = []
    skip, total = 0, 1
    while skip < total:
        page = get(api, "/products", skip=skip, limit=50).json()
        seen += [p["id"] for p in page["products"]]
        skip, total = skip + len(page["products"]), page["total"]

    assert seen == list(range(1, 195))


@pytest.mark.parametrize("name", ["limit", "skip"])
def test_non_numeric_limit_or_skip_answers_400_with_a_message(
    api: FakeDummyJson, name: str
) -> None:
    response = get(api, "/products", **{name: "ten"})

    assert response.status_code == 400
    assert response.json() == {"message": f"Invalid '{name}' - must be a number"}


def test_select_returns_id_plus_the_known_requested_fields(api: FakeDummyJson) -> None:
    page = get(api, "/products", select="title,price,noSuchField", limit=2).json()

    assert page["products"] == [
        {"id": p["id"], "title": p["title"], "price": p["price"]}
        for p in (make_product(1), make_product(2))
    ]


def test_sort_by_sorts_the_whole_catalog_before_paging(api: FakeDummyJson) -> None:
    page = get(api, "/products", sortBy="price", order="desc", limit=5, skip=1).json()

    prices = sorted((p["price"] for p in api.catalog.products()), reverse=True)
    assert [p["price"] for p in page["products"]] == prices[1:6]
    assert page["total"] == 194


def test_delay_parameter_makes_the_server_wait_before_answering(api: FakeDummyJson) -> None:
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{api.url}/products", params={"delay": 1000}, timeout=0.2)


def test_latency_delays_every_request(api: FakeDummyJson) -> None:
    api.latency = 0.2
    started = time.perf_counter()
    get(api, "/products/1")

    assert time.perf_counter() - started >= 0.2


# --------------------------------------------------------------------------- single products


def test_get_by_id_returns_the_full_product(api: FakeDummyJson) -> None:
    response = get(api, "/products/7")

    assert response.status_code == 200
    assert response.json() == make_product(7) == api.catalog.get(7)


def test_missing_product_answers_404_with_a_json_message(api: FakeDummyJson) -> None:
    response = get(api, "/products/999")

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.json() == {"message": "Product with id '999' not found"}


def test_non_numeric_product_id_answers_a_json_error(api: FakeDummyJson) -> None:
    response = get(api, "/products/abc")

    assert response.status_code in (400, 404)
    assert "abc" in response.json()["message"]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_updates_answer_the_overlaid_fields_without_persisting(
    api: FakeDummyJson, method: str
) -> None:
    before = api.catalog.get(3)
    assert before is not None
    response = requests.request(
        method, f"{api.url}/products/3", json={"price": 1, "stock": 2, "sku": "X"}, timeout=TIMEOUT
    )

    body = response.json()
    assert response.status_code == 200
    assert set(body) <= {
        "id",
        "title",
        "price",
        "discountPercentage",
        "stock",
        "rating",
        "images",
        "thumbnail",
        "description",
        "brand",
        "category",
    }
    assert (body["id"], body["price"], body["stock"], body["title"]) == (3, 1, 2, before["title"])
    assert get(api, "/products/3").json() == before


def test_update_with_invalid_json_answers_400(api: FakeDummyJson) -> None:
    response = requests.put(f"{api.url}/products/3", data=b"{not json", timeout=TIMEOUT)

    assert response.status_code == 400
    assert "message" in response.json()


def test_update_of_a_missing_product_answers_404(api: FakeDummyJson) -> None:
    response = requests.patch(f"{api.url}/products/999", json={"price": 1}, timeout=TIMEOUT)

    assert response.status_code == 404


def test_delete_answers_the_product_marked_deleted_without_deleting_it(
    api: FakeDummyJson,
) -> None:
    response = requests.delete(f"{api.url}/products/5", timeout=TIMEOUT)

    body = response.json()
    assert response.status_code == 200
    assert body.pop("isDeleted") is True
    assert ISO_UTC_MS.match(body.pop("deletedOn"))
    assert body == make_product(5)
    assert len(api.catalog) == 194
    assert get(api, "/products/5").status_code == 200


def test_add_answers_201_with_the_next_id_without_persisting(api: FakeDummyJson) -> None:
    response = requests.post(f"{api.url}/products/add", json={"title": "Crème"}, timeout=TIMEOUT)

    assert response.status_code == 201
    assert response.json() == {"id": 195, "title": "Crème"}
    assert len(api.catalog) == 194


def test_trailing_slash_redirects_permanently_to_products(api: FakeDummyJson) -> None:
    response = requests.get(f"{api.url}/products/", timeout=TIMEOUT, allow_redirects=False)

    assert response.status_code == 301
    assert response.headers["Location"] == "/products"


def test_unknown_route_answers_an_html_404_page(api: FakeDummyJson) -> None:
    response = get(api, "/nothing/here")

    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Cannot GET /nothing/here" in response.text


def test_every_response_carries_content_type_length_and_rate_limit_headers(
    api: FakeDummyJson,
) -> None:
    for path in ("/products", "/products/1", "/products/999", "/nope"):
        response = get(api, path)

        assert response.headers["Content-Length"] == str(len(response.content))
        assert "charset=utf-8" in response.headers["Content-Type"]
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
            response.headers
        )
        assert int(response.headers["X-RateLimit-Reset"]) > time.time()


# --------------------------------------------------------------------------- synthetic products


def test_make_product_is_a_pure_function_of_seed_id_and_variant() -> None:
    assert make_product(42, seed=3, variant=1) == make_product(42, seed=3, variant=1)
    assert make_product(42, seed=3) != make_product(42, seed=4)
    assert make_product(42) != make_product(43)


def test_a_changed_variant_differs_but_keeps_its_identity() -> None:
    original, changed = make_product(42), make_product(42, variant=1)

    assert changed != original
    assert (changed["id"], changed["sku"]) == (original["id"], original["sku"])
    assert changed["price"] != original["price"]
    assert changed["stock"] != original["stock"]
    assert changed["meta"]["updatedAt"] > original["meta"]["updatedAt"]
    assert changed["meta"]["createdAt"] == original["meta"]["createdAt"]


def test_products_have_every_dummyjson_field(catalog_500: list[dict[str, Any]]) -> None:
    required = {
        "id", "title", "description", "category", "price", "discountPercentage", "rating",
        "stock", "tags", "sku", "weight", "dimensions", "warrantyInformation",
        "shippingInformation", "availabilityStatus", "reviews", "returnPolicy",
        "minimumOrderQuantity", "meta", "images", "thumbnail",
    }  # fmt: skip
    for product in catalog_500:
        assert required <= set(product) <= required | {"brand"}
        assert set(product["dimensions"]) == {"width", "height", "depth"}
        assert set(product["meta"]) == {"createdAt", "updatedAt", "barcode", "qrCode"}


def test_some_products_have_no_brand_key_rather_than_a_null(
    catalog_500: list[dict[str, Any]],
) -> None:
    without_brand = [p for p in catalog_500 if "brand" not in p]

    assert 0.05 < len(without_brand) / len(catalog_500) < 0.30
    assert all(p.get("brand") is not None for p in catalog_500 if "brand" in p)


def test_numbers_sometimes_arrive_as_json_integers(catalog_500: list[dict[str, Any]]) -> None:
    for name in ("price", "discountPercentage", "rating"):
        assert any(type(p[name]) is int for p in catalog_500), name
        assert any(type(p[name]) is float for p in catalog_500), name
    assert any(type(p["dimensions"]["width"]) is int for p in catalog_500)
    assert all(type(p["weight"]) is int for p in catalog_500)


def test_some_prices_lose_their_cents_in_float32(catalog_500: list[dict[str, Any]]) -> None:
    prices = [p["price"] for p in catalog_500]

    assert any(f"{float32(price):.2f}" != f"{price:.2f}" for price in prices)
    assert 1899.99 in prices or any(str(price).endswith(".99") for price in prices)


def test_money_and_measures_have_at_most_two_decimals_and_stay_in_range(
    catalog_500: list[dict[str, Any]],
) -> None:
    for p in catalog_500:
        values = [p["price"], p["discountPercentage"], p["rating"], *p["dimensions"].values()]
        assert all(re.fullmatch(r"\d+(\.\d{1,2})?", repr(v)) for v in values), values
        assert 0 < p["price"] < 100_000_000
        assert 0 <= p["discountPercentage"] <= 100
        assert 0 <= p["rating"] <= 5
        assert all(type(r["rating"]) is int and 1 <= r["rating"] <= 5 for r in p["reviews"])


def test_money_goes_over_the_wire_with_at_most_two_decimals() -> None:
    with FakeDummyJson(products=500) as server:
        text = get(server, "/products", limit=0).text

    prices = re.findall(r'"price":([^,}]+)', text)
    assert len(prices) == 500
    assert all(re.fullmatch(r"\d+(\.\d{1,2})?", price) for price in prices)
    assert '"price":16777217.99' in text


def test_barcodes_are_13_digit_strings_often_with_leading_zeros(
    catalog_500: list[dict[str, Any]],
) -> None:
    barcodes = [p["meta"]["barcode"] for p in catalog_500]

    assert all(isinstance(b, str) and re.fullmatch(r"\d{13}", b) for b in barcodes)
    assert sum(b.startswith("0") for b in barcodes) > 50


def test_skus_are_unique_text_derived_from_the_id(catalog_500: list[dict[str, Any]]) -> None:
    skus = [p["sku"] for p in catalog_500]

    assert len(set(skus)) == len(skus)
    assert all(re.fullmatch(r"[0-9A-Z]{8}", sku) for sku in skus)
    assert any(sku.startswith("0") for sku in skus)
    assert make_product(7, seed=1)["sku"] == make_product(7, seed=2)["sku"]


def test_titles_repeat_across_products(catalog_500: list[dict[str, Any]]) -> None:
    titles = Counter(p["title"] for p in catalog_500)

    assert len(titles) < 100
    assert titles.most_common(1)[0][1] > 5


def test_a_reviewer_can_appear_twice_on_one_product_with_the_same_date(
    catalog_500: list[dict[str, Any]],
) -> None:
    def has_repeat(product: dict[str, Any]) -> bool:
        keys = [(r["reviewerName"], r["reviewerEmail"], r["date"]) for r in product["reviews"]]
        return len(keys) != len(set(keys))

    assert any(has_repeat(p) for p in catalog_500)


def test_tags_and_reviews_are_sometimes_empty_and_tags_sometimes_repeat(
    catalog_500: list[dict[str, Any]],
) -> None:
    assert any(p["tags"] == [] for p in catalog_500)
    assert any(p["reviews"] == [] for p in catalog_500)
    assert any(len(p["tags"]) != len(set(p["tags"])) for p in catalog_500)
    assert all(0 <= len(p["tags"]) <= 5 and 0 <= len(p["reviews"]) <= 5 for p in catalog_500)
    assert all(1 <= len(p["images"]) <= 4 for p in catalog_500)


def test_text_and_urls_carry_apostrophes_ampersands_quotes_and_non_ascii(
    catalog_500: list[dict[str, Any]],
) -> None:
    text = " ".join(f"{p['title']} {p['description']} {p.get('brand', '')}" for p in catalog_500)
    urls = [url for p in catalog_500 for url in p["images"]]

    assert all(ch in text for ch in ("'", "&", '"', "é", "ñ", "🚀"))
    assert any("Cr%C3%A8me%20br%C3%BBl%C3%A9e" in url for url in urls)
    assert any(not url.isascii() for url in urls)


def test_timestamps_are_iso_utc_with_milliseconds(catalog_500: list[dict[str, Any]]) -> None:
    stamps = [s for p in catalog_500 for s in (p["meta"]["createdAt"], p["meta"]["updatedAt"])]
    stamps += [r["date"] for p in catalog_500 for r in p["reviews"]]

    assert all(ISO_UTC_MS.match(stamp) for stamp in stamps)


# --------------------------------------------------------------------------- catalog


def test_catalog_put_serves_arbitrary_content_verbatim(api: FakeDummyJson) -> None:
    broken = {"id": 3, "price": "abc", "tags": None}
    api.catalog.put(broken)
    api.catalog.put({"id": 1000, "title": "Far away"})

    assert get(api, "/products/3").json() == broken
    page = get(api, "/products", skip=2, limit=1).json()
    assert page["products"] == [broken]
    assert get(api, "/products", limit=0).json()["products"][-1] == {
        "id": 1000,
        "title": "Far away",
    }
    assert len(api.catalog) == 195


def test_catalog_touch_changes_the_served_content(api: FakeDummyJson) -> None:
    before = get(api, "/products/9").json()
    api.catalog.touch(9)

    assert get(api, "/products/9").json() == make_product(9, variant=1) != before


def test_catalog_delete_removes_the_product_from_pages_and_total(api: FakeDummyJson) -> None:
    api.catalog.delete(2)

    page = get(api, "/products", limit=3).json()
    assert [p["id"] for p in page["products"]] == [1, 3, 4]
    assert page["total"] == 193
    assert get(api, "/products/2").status_code == 404
    with pytest.raises(KeyError):
        api.catalog.delete(2)


def test_catalog_add_appends_the_next_id(api: FakeDummyJson) -> None:
    new_id = api.catalog.add()

    assert new_id == 195
    assert get(api, "/products/195").json() == make_product(195)
    assert api.catalog.ids()[-2:] == [194, 195]


def test_catalog_get_returns_a_fresh_copy_or_none() -> None:
    catalog = Catalog(3)
    catalog.get(1)["title"] = "changed"  # type: ignore[index]

    assert catalog.get(1) == make_product(1)
    assert catalog.get(4) is None
    assert catalog.page(1, 0) == ([make_product(2), make_product(3)], 3)


def test_a_million_product_catalog_builds_fast_small_and_pages_quickly() -> None:
    started = time.perf_counter()
    catalog = Catalog(1_000_000)
    built_in = time.perf_counter() - started
    tracemalloc.start()
    Catalog(1_000_000)
    memory, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert built_in < 0.5
    assert memory < 20_000_000
    with FakeDummyJson(catalog) as server:
        started = time.perf_counter()
        page = get(server, "/products", skip=999_900, limit=100).json()
        assert time.perf_counter() - started < 1.0
    assert [p["id"] for p in page["products"]] == list(range(999_901, 1_000_001))
    assert page["total"] == 1_000_000


# --------------------------------------------------------------------------- faults


def test_status_fault_answers_its_code_with_retry_after_then_recovers(api: FakeDummyJson) -> None:
    api.add_fault(Fault("status", status=429))

    limited = get(api, "/products")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.json() == {"message": "request limit exceeded, please wait a few seconds"}
    assert get(api, "/products").status_code == 200


def test_status_fault_sends_the_retry_after_it_is_given(api: FakeDummyJson) -> None:
    api.add_fault(Fault("status", status=503, retry_after="0"))

    response = get(api, "/products")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "0"
    assert "message" in response.json()


def test_truncate_fault_breaks_the_body_mid_way(api: FakeDummyJson) -> None:
    api.add_fault(Fault("truncate"))

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(api, "/products")
    assert get(api, "/products").status_code == 200


def test_drop_fault_closes_the_connection_without_an_answer(api: FakeDummyJson) -> None:
    api.add_fault(Fault("drop"))

    with pytest.raises(requests.ConnectionError):
        get(api, "/products")
    assert api.list_requests()[0].status == 0


def test_stall_fault_times_out_a_client_mid_body(api: FakeDummyJson) -> None:
    api.add_fault(Fault("stall", seconds=2))
    started = time.perf_counter()

    # The headers arrive, so requests reports the body's read timeout as a ConnectionError.
    with pytest.raises(requests.ConnectionError, match="Read timed out"):
        requests.get(f"{api.url}/products", timeout=0.5)
    assert time.perf_counter() - started < 1.5


def test_faults_hit_only_the_matching_skip_or_product(api: FakeDummyJson) -> None:
    api.add_fault(Fault("status", skip=30, status=502))
    api.add_fault(Fault("status", product_id=7, status=500))

    assert get(api, "/products", skip=0).status_code == 200
    assert get(api, "/products/8").status_code == 200
    assert get(api, "/products", skip=30).status_code == 502
    assert get(api, "/products/7").status_code == 500
    assert get(api, "/products", skip=30).status_code == 200


def test_fault_times_counts_down_and_minus_one_is_forever(api: FakeDummyJson) -> None:
    api.add_fault(Fault("status", product_id=1, times=2))
    api.add_fault(Fault("status", product_id=2, times=-1, status=503))

    assert [get(api, "/products/1").status_code for _ in range(3)] == [500, 500, 200]
    assert [get(api, "/products/2").status_code for _ in range(5)] == [503] * 5


def test_chaos_is_deterministic_for_a_seed_and_off_at_rate_zero() -> None:
    def statuses(seed: int) -> list[int]:
        with FakeDummyJson(products=10) as server:
            server.chaos(0.5, kinds=("500", "502", "503", "429"), seed=seed)
            return [get(server, "/products").status_code for _ in range(20)]

    first = statuses(seed=1)
    assert first == statuses(seed=1)
    assert first != statuses(seed=2)
    assert {500, 502, 503, 429} & set(first) and 200 in first

    with FakeDummyJson(products=10) as server:
        server.chaos(1.0, kinds=("drop",))
        server.chaos(0)
        assert all(get(server, "/products").status_code == 200 for _ in range(5))


def test_chaos_with_breaking_kinds_raises_client_errors() -> None:
    with FakeDummyJson(products=10) as server:
        server.chaos(1.0, kinds=("truncate", "drop"), seed=5)
        for _ in range(4):
            with pytest.raises(requests.RequestException):
                get(server, "/products")
        assert get(server, "/products/1").status_code == 200  # chaos spares single products


def test_on_list_request_runs_once_just_before_the_page_is_served(api: FakeDummyJson) -> None:
    calls: list[int] = []

    def delete_first(catalog: Catalog) -> None:
        calls.append(len(catalog))
        catalog.delete(1)

    api.on_list_request(30, delete_first)
    first = get(api, "/products", skip=0).json()
    second = get(api, "/products", skip=30).json()
    again = get(api, "/products", skip=30).json()

    assert calls == [194]
    assert first["products"][-1]["id"] == 30
    assert second["products"][0]["id"] == 32  # product 31 slid into the page already read
    assert second["total"] == 193
    assert again == second


# --------------------------------------------------------------------------- limits and plumbing


def test_rate_limit_answers_429_with_retry_after_past_the_limit() -> None:
    with FakeDummyJson(products=10, rate_limit=(5, 10.0)) as server:
        responses = [get(server, "/products") for _ in range(6)]

    assert [r.status_code for r in responses] == [200] * 5 + [429]
    remaining = [int(r.headers["X-RateLimit-Remaining"]) for r in responses]
    assert remaining == [4, 3, 2, 1, 0, 0]
    assert 1 <= int(responses[-1].headers["Retry-After"]) <= 10
    assert responses[-1].json() == {"message": "request limit exceeded, please wait a few seconds"}


def test_one_session_reuses_one_connection(api: FakeDummyJson) -> None:
    with requests.Session() as session:
        for skip in range(0, 150, 30):
            session.get(f"{api.url}/products", params={"skip": skip}, timeout=TIMEOUT)

    assert api.connections_opened == 1


def test_bare_requests_open_one_connection_each(api: FakeDummyJson) -> None:
    for _ in range(5):
        get(api, "/products")

    assert api.connections_opened == 5


def test_requests_are_recorded_with_method_path_query_status_headers_and_body(
    api: FakeDummyJson,
) -> None:
    requests.put(f"{api.url}/products/4?x=1", data=b'{"price":2}', timeout=TIMEOUT)
    get(api, "/products", skip=30)

    put, listing = api.requests
    assert (put.method, put.path, put.query, put.status, put.body) == (
        "PUT",
        "/products/4",
        {"x": "1"},
        200,
        b'{"price":2}',
    )
    assert put.headers["user-agent"].startswith("python-requests")
    assert api.list_requests() == [listing]
    assert listing.query == {"skip": "30"}


def test_stop_closes_the_port() -> None:
    server = FakeDummyJson(products=1).start()
    url = server.url
    server.stop()

    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/products", timeout=TIMEOUT)


def test_command_line_serves_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.local_api", "--port", "0", "--products", "5"],
        cwd=Path(__file__).parent.parent,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/products", line)
        assert match, line
        assert requests.get(f"{match[1]}/products", timeout=TIMEOUT).json()["total"] == 5
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=TIMEOUT) == 0
    finally:
        process.kill()


def test_busy_mode_deletes_products_already_served_and_appends_new_ones(
    api: FakeDummyJson,
) -> None:
    api.busy(every=2, changes=3, seed=1)
    first = get(api, "/products", skip=0, limit=50).json()  # request 1: no move yet
    second = get(api, "/products", skip=49, limit=51).json()  # request 2: the catalog moves

    assert first["total"] == 194
    assert second["total"] == 194  # three deleted, three appended
    assert api.busy_moves() == 1
    ids = api.catalog.ids()
    gone = set(range(1, 195)) - set(ids)
    assert ids[-3:] == [195, 196, 197]
    assert second["products"][0]["id"] == 53  # the page shifted by the three deletions
    assert len(gone) == 3 and max(gone) < 53  # deleted among the products before the offset
    api.busy(0)
    get(api, "/products", skip=0)
    assert len(api.catalog) == 194 and api.busy_moves() == 0


def test_busy_mode_draws_its_moves_from_its_seed() -> None:
    def gone_after_paging(seed: int) -> set[int]:
        with FakeDummyJson(products=100) as server:
            server.busy(every=1, changes=2, seed=seed)
            for skip in range(0, 100, 20):
                get(server, "/products", skip=skip, limit=20)
            return set(range(1, 101)) - set(server.catalog.ids())

    assert gone_after_paging(5) == gone_after_paging(5)
    assert gone_after_paging(5) != gone_after_paging(6)


def test_the_command_line_refuses_a_negative_busy_rate() -> None:
    assert exit_status(main, ["--port", "0", "--busy", "-1"]) == 2
