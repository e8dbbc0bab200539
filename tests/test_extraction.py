"""Extraction against a misbehaving API: retries, rate limits, broken bodies, stalls, drift."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Engine

import production_pipeline
from data_pipeline import Extraction, iter_products
from etl.client import DummyJsonClient, _page_from_document
from etl.errors import ApiError, UnexpectedPayload
from etl.pacing import RequestPacer
from tools.catalog_state import database_catalog, served_catalog
from tools.local_api import FakeDummyJson, Fault


def extract(client: DummyJsonClient, page_size: int = 20, concurrency: int = 4) -> list[int]:
    extraction = Extraction()
    ids = [p["id"] for p in iter_products(client, page_size, extraction, concurrency=concurrency)]
    assert extraction.complete, extraction.incomplete_reason()
    return ids


@pytest.mark.parametrize("concurrency", [1, 4])
def test_random_500s_and_429s_on_a_tenth_of_requests_still_give_exactly_the_catalog(
    fake_api: Any, concurrency: int
) -> None:
    api = fake_api(products=400)
    api.chaos(0.1, kinds=("500", "502", "503", "429"), seed=7, retry_after="0")
    with DummyJsonClient(api.url, backoff_factor=0.01, max_retries=6) as client:
        assert extract(client, concurrency=concurrency) == api.catalog.ids()
    assert any(r.status >= 500 for r in api.list_requests())
    assert any(r.status == 429 for r in api.list_requests())


def test_truncated_bodies_and_dropped_connections_on_random_requests_are_retried(
    fake_api: Any,
) -> None:
    api = fake_api(products=300)
    api.chaos(0.15, kinds=("truncate", "drop"), seed=3)
    with DummyJsonClient(api.url, backoff_factor=0.01, max_retries=6) as client:
        assert extract(client) == api.catalog.ids()


def test_retry_after_is_honoured_so_the_run_takes_at_least_that_long(api: FakeDummyJson) -> None:
    api.add_fault(Fault("status", skip=39, status=429, retry_after="1"))
    started = time.monotonic()
    with DummyJsonClient(api.url, backoff_factor=0.01) as client:
        assert extract(client) == api.catalog.ids()
    assert time.monotonic() - started >= 1.0


def test_a_retry_after_pauses_every_worker_not_only_the_one_told(api: FakeDummyJson) -> None:
    api.add_fault(Fault("status", skip=19, status=429, retry_after="1"))
    with DummyJsonClient(api.url, backoff_factor=0.01, pool_size=4) as client:
        assert extract(client, concurrency=4) == api.catalog.ids()
    requests = api.list_requests()
    told = next(r for r in requests if r.status == 429)
    # Every request that arrived after the 429 was sent at least ~1 s later by its worker,
    # except those already on the wire when the 429 came back.
    after = [r for r in requests if r.arrived > told.arrived + 0.1]
    assert after
    assert min(r.arrived for r in after) >= told.arrived + 0.95


def test_retry_after_zero_does_not_burn_every_attempt_at_once(api: FakeDummyJson) -> None:
    api.add_fault(Fault("status", skip=0, status=429, retry_after="0", times=3))
    started = time.monotonic()
    with DummyJsonClient(api.url, backoff_factor=0.1, max_retries=5) as client:
        assert extract(client) == api.catalog.ids()
    # Backoff still applies: 0 s, then about 0.2 s and 0.4 s (plus jitter) between attempts.
    assert time.monotonic() - started >= 0.5


def test_a_client_error_fails_at_once_naming_the_url_and_the_body(api: FakeDummyJson) -> None:
    api.add_fault(Fault("status", skip=0, status=400, times=-1))
    with DummyJsonClient(api.url) as client, pytest.raises(ApiError) as caught:
        extract(client)
    assert len(api.list_requests()) == 1  # not retried
    message = str(caught.value)
    assert f"{api.url}/products?limit=20&skip=0" in message
    assert "HTTP 400" in message
    assert '"message"' in message


def test_a_body_that_is_not_the_json_expected_is_retried_then_reported(
    api: FakeDummyJson,
) -> None:
    # A single product is a JSON object, but not a page: it lacks 'products' and 'total'.
    client = DummyJsonClient(api.url, backoff_factor=0.01, max_retries=2)
    with client, pytest.raises(UnexpectedPayload) as caught:
        client.request_json(
            "GET", "/products/1", expect=lambda document: _page_from_document(document, 0)
        )
    assert "expected 'products'" in str(caught.value)
    assert "after 3 attempts" in str(caught.value)
    assert len([r for r in api.requests if r.path == "/products/1"]) == 3


def test_a_server_that_stalls_mid_body_fails_within_the_read_timeout_bound(
    api: FakeDummyJson,
) -> None:
    api.add_fault(Fault("stall", skip=19, seconds=10, times=-1))
    started = time.monotonic()
    client = DummyJsonClient(api.url, read_timeout=0.5, max_retries=1, backoff_factor=0.01)
    with client, pytest.raises(ApiError) as caught:
        extract(client)
    elapsed = time.monotonic() - started
    # Two attempts, each given up after 0.5 s without data: well under the 10 s stall.
    assert elapsed < 3.0
    assert "broke off" in str(caught.value)


def test_default_pacing_keeps_a_rate_limited_server_from_ever_answering_429(
    fake_api: Any,
) -> None:
    api = fake_api(products=200, rate_limit=(10, 1.0))
    with DummyJsonClient(api.url, rate_limit=9.0, pool_size=4) as client:
        assert extract(client, page_size=10, concurrency=4) == api.catalog.ids()
    assert {r.status for r in api.list_requests()} == {200}


def test_the_pacer_spaces_requests_from_all_threads() -> None:
    pacer = RequestPacer(rate=50)
    started = time.monotonic()
    for _ in range(11):
        pacer.wait_turn()
    assert time.monotonic() - started >= 0.19  # ten intervals of 20 ms


def test_the_pacer_waits_for_the_rate_limit_window_when_none_is_left() -> None:
    pacer = RequestPacer()
    pacer.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(time.time() + 0.3)})
    started = time.monotonic()
    pacer.wait_turn()
    assert time.monotonic() - started >= 0.25


def test_a_failing_page_makes_the_production_sync_delete_nothing(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    args = ["--api-url", api.url, "--database-url", database_url, "--page-size", "20"]
    fast = ["--rate-limit", "0", "--max-retries", "1", "--concurrency", "4"]
    assert production_pipeline.main([*args, *fast]) == 0
    before = database_catalog(engine)
    for product_id in range(1, 100):
        api.catalog.delete(product_id)
    api.add_fault(Fault("stall", skip=19, seconds=5, times=-1))
    assert (
        production_pipeline.main([*args, *fast, "--allow-mass-delete", "--read-timeout", "0.5"])
        == 1
    )
    assert database_catalog(engine) == before


def test_a_product_inserted_and_one_deleted_between_pages_two_and_three_wrongly_delete_nothing(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    args = ["--api-url", api.url, "--database-url", database_url, "--page-size", "20"]
    fast = ["--rate-limit", "0", "--concurrency", "1"]
    assert production_pipeline.main([*args, *fast]) == 0

    def insert_one_delete_one(catalog: Any) -> None:
        catalog.delete(5)
        catalog.add()

    api.on_list_request(39, insert_one_delete_one)
    assert production_pipeline.main([*args, *fast]) == 0  # the overlap shows nothing skipped
    catalog = database_catalog(engine)
    assert 121 in catalog  # the new product
    assert 5 in catalog  # read before it went: its deletion is the next run's
    assert production_pipeline.main([*args, *fast]) == 0
    assert database_catalog(engine) == served_catalog(api.url)
