"""Exercise 3-1: every factual finding of the review, demonstrated against the local DummyJSON.

Each finding's test runs the junior code (``junior/product_updater.py``, untouched) and the
improved implementation in the same scenario on a real local server, and asserts on what the
server received and what each side returned or printed. The junior's hard-coded sleeps are
recorded instead of slept, by replacing the ``time`` name in the junior module only. The
improved updater is paced, as in production, by its ``DummyJsonClient``'s ``RequestPacer``;
tests that are not about pacing leave the client unpaced so they run fast.
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from types import SimpleNamespace
from typing import Any

import pytest
import requests

import code_review
from code_review import (
    CATEGORIES,
    FINDINGS,
    FORMATS,
    JUNIOR_PATH,
    NOT_PERSISTED,
    SEVERITIES,
    InvalidUpdate,
    ProductUpdater,
    StaleFinding,
    UpdateRequest,
    UpdateResult,
    covered_rules,
    junior_lines,
    ordered_findings,
    quote,
    redact,
    render_review,
)
from data_pipeline import DEFAULT_RATE_LIMIT, DummyJsonClient
from tests.fake_api import FakeDummyJson, Fault, RequestRecord

# Imported by name so mypy does not follow it: the junior code is deliberately untyped.
junior = importlib.import_module("junior.product_updater")


def item(product_id: int, **changes: Any) -> dict[str, Any]:
    """One entry of an updates file."""
    return {
        "id": product_id,
        "title": f"Reviewed title {product_id}",
        "price": 19.99,
        "description": "Updated by the code review",
        **changes,
    }


def request(product_id: int, description: str = "Updated by the code review") -> UpdateRequest:
    return UpdateRequest(product_id, f"Reviewed title {product_id}", Decimal("19.99"), description)


def puts(api: FakeDummyJson, product_id: int | None = None) -> list[RequestRecord]:
    """The PUT requests the server received, optionally for one product."""
    return [
        r
        for r in list(api.requests)
        if r.method == "PUT" and (product_id is None or r.path == f"/products/{product_id}")
    ]


# --- a small local server, for what tests.fake_api cannot do ----------------------------------

Answer = Callable[[str, str, bytes], tuple[int, dict[str, str], bytes]]


class LocalApi:
    """A threaded HTTP server on 127.0.0.1 whose every answer a test's function decides."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str, bytes]] = []  # method, path, body
        self.lock = threading.Lock()
        self._server = _LocalServer(("127.0.0.1", 0), _LocalHandler)
        self._server.api = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    api: LocalApi

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host."""
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])


class _LocalHandler(BaseHTTPRequestHandler):
    server: _LocalServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""

    def do_GET(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def _answer(self) -> None:
        api = self.server.api
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with api.lock:
            api.requests.append((self.command, self.path, body))
        status, headers, payload = api.answer(self.command, self.path, body)
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


JSON_HEADERS = {"Content-Type": "application/json"}


def redirect_to(target: str, status: int) -> Answer:
    """Answer every request with a redirect to the same path on ``target``."""

    def answer(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        return status, {"Location": f"{target}{path}"}, b""

    return answer


def always(status: int, document: Any) -> Answer:
    """Answer every request with the same JSON document."""
    payload = json.dumps(document).encode()
    return lambda method, path, body: (status, JSON_HEADERS, payload)


def echo(status: int) -> Answer:
    """Answer a PUT the way DummyJSON does, with the product as written, under ``status``."""

    def answer(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        product = {"id": int(path.rsplit("/", 1)[1]), **json.loads(body or b"{}")}
        return status, JSON_HEADERS, json.dumps(product).encode()

    return answer


@pytest.fixture
def local_api() -> Iterator[Callable[[Answer], LocalApi]]:
    """A factory of small local servers, all stopped after the test."""
    servers: list[LocalApi] = []

    def start(answer: Answer) -> LocalApi:
        servers.append(LocalApi(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def junior_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The junior's sleeps, recorded instead of slept (only the junior module's ``time``)."""
    calls: list[float] = []
    monkeypatch.setattr(junior, "time", SimpleNamespace(sleep=calls.append))
    return calls


@pytest.fixture
def improved() -> Iterator[Callable[..., ProductUpdater]]:
    """A factory of improved updaters on a real ``DummyJsonClient`` with test-sized timeouts.

    The client is unpaced unless the test passes ``rate_limit``.
    """
    clients: list[DummyJsonClient] = []

    def make(api: FakeDummyJson, *, concurrency: int = 4, **options: Any) -> ProductUpdater:
        settings = {
            "connect_timeout": 2.0,
            "read_timeout": 5.0,
            "max_retries": 2,
            "backoff_factor": 0.05,
            **options,
        }
        client = DummyJsonClient(api.url, **settings)
        clients.append(client)
        return ProductUpdater(client, concurrency=concurrency)

    yield make
    for client in clients:
        client.close()


# --- security ---------------------------------------------------------------------------------


def test_junior_hard_codes_a_token_and_sends_it_while_improved_sends_no_credential(
    api: FakeDummyJson, improved: Callable[..., ProductUpdater]
) -> None:
    token = junior.API_TOKEN
    assert token in JUNIOR_PATH.read_text(encoding="utf-8")  # in every clone, and in history
    assert junior.ProductUpdater(base_url=api.url).update_product(1, "T", 9.99, "d") is not None
    assert puts(api, 1)[0].headers["authorization"] == f"Bearer {token}"

    assert improved(api).update(request(2)).ok
    sent = puts(api, 2)[0].headers
    assert "authorization" not in sent
    assert token not in json.dumps(sent)


def test_junior_prints_token_payload_and_response_on_errors_while_improved_logs_neither(
    api: FakeDummyJson,
    improved: Callable[..., ProductUpdater],
    junior_sleeps: list[float],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    private = "Wholesale contact: jane.doe@example.com, +44 20 7946 0958"
    assert junior.ProductUpdater(base_url=api.url).update_product(999, "T", 9.99, private) is None
    printed = capsys.readouterr().out
    assert junior.API_TOKEN in printed
    assert printed.count(private) == 3  # the whole payload, once per attempt
    assert "Product with id '999' not found" in printed  # and the whole response body

    caplog.set_level(logging.DEBUG)
    updater = improved(api)
    # Even with a credential configured on the session, nothing prints it.
    updater.client.session.headers["Authorization"] = f"Bearer {junior.API_TOKEN}"
    result = updater.update(request(999, description=private))
    output = capsys.readouterr()
    everything = caplog.text + output.out + output.err + result.reason
    assert not result.ok
    assert junior.API_TOKEN not in everything
    assert private not in everything
    assert "product 999 not updated" in caplog.text  # the failure is still logged, in one line
    assert "HTTP 404" in caplog.text


# --- correctness ------------------------------------------------------------------------------

DEADLINE = 2.5  # seconds: well past what the improved updater needs on a stalled server


def test_junior_hangs_on_a_stalled_server_while_improved_gives_up_after_its_timeout(
    fake_api: Callable[..., FakeDummyJson],
    improved: Callable[..., ProductUpdater],
    junior_sleeps: list[float],
) -> None:
    api = fake_api(products=10)
    # Headers and a quarter of the body, then silence for a minute (or until the server stops).
    api.add_fault(Fault("stall", product_id=1, times=-1, seconds=60))
    junior_updater = junior.ProductUpdater(base_url=api.url)
    junior_run = threading.Thread(
        target=junior_updater.update_products, args=([item(1)], []), daemon=True
    )
    started = time.monotonic()
    junior_run.start()

    result = improved(api, read_timeout=0.5, max_retries=1).update(request(1))
    improved_seconds = time.monotonic() - started
    assert not result.ok
    assert "broke off" in result.reason
    assert improved_seconds < 2 * 0.5 + 1  # two attempts of 0.5 s each, plus a little

    junior_run.join(timeout=DEADLINE - (time.monotonic() - started))
    assert junior_run.is_alive()  # still waiting, with no end in sight
    api.stop()  # closing the connection is the only thing that frees it
    junior_run.join(timeout=10)
    assert not junior_run.is_alive()


def test_junior_returns_none_for_every_failure_while_improved_returns_the_reason(
    api: FakeDummyJson, improved: Callable[..., ProductUpdater], junior_sleeps: list[float]
) -> None:
    api.add_fault(Fault("status", product_id=2, status=503, times=-1))
    updater = junior.ProductUpdater(base_url=api.url)
    missing = updater.update_product(999, "T", 9.99, "d")
    outage = updater.update_product(2, "T", 9.99, "d")
    # A Decimal price (what money should be) makes json.dumps raise: a bug in the junior code,
    # which except Exception turns into the same None as a missing product or an outage.
    bug = updater.update_product(3, "T", Decimal("9.99"), "d")
    assert missing is None
    assert outage is None
    assert bug is None
    assert not puts(api, 3)  # the bug never reached the server, yet it looks like the others
    assert updater.update_products([item(999), item(2)], []) == []  # failures simply vanish

    batch = [item(999), item(2), item(3, price=Decimal("9.99"))]
    results = improved(api, max_retries=1).update_many(batch)
    assert [(r.product_id, r.ok) for r in results] == [(999, False), (2, False), (3, True)]
    assert "HTTP 404" in results[0].reason
    assert "Product with id '999' not found" in results[0].reason
    assert "HTTP 503 after retries" in results[1].reason


@pytest.mark.parametrize(
    ("product_id", "status", "message"),
    [(999, 404, "Product with id '999' not found"), (3, 400, "Bad Request")],
)
def test_junior_retries_a_client_error_while_improved_fails_once_with_the_message(
    api: FakeDummyJson,
    improved: Callable[..., ProductUpdater],
    junior_sleeps: list[float],
    product_id: int,
    status: int,
    message: str,
) -> None:
    if status == 400:
        api.add_fault(Fault("status", product_id=product_id, status=400, times=-1))
    assert (
        junior.ProductUpdater(base_url=api.url).update_product(product_id, "T", 9.99, "d") is None
    )
    assert [r.status for r in puts(api, product_id)] == [status] * 3
    assert junior_sleeps == [2, 2, 2]

    result = improved(api).update(request(product_id))
    assert [r.status for r in puts(api, product_id)] == [status] * 4  # exactly one more
    assert not result.ok
    assert f"HTTP {status}: " in result.reason
    assert message in result.reason


def test_junior_ignores_retry_after_while_improved_waits_as_the_server_asks(
    api: FakeDummyJson, improved: Callable[..., ProductUpdater], junior_sleeps: list[float]
) -> None:
    updater = junior.ProductUpdater(base_url=api.url)
    for retry_after in ("1", "10"):
        api.add_fault(Fault("status", product_id=1, status=429, retry_after=retry_after))
        assert updater.update_product(1, "T", 9.99, "d") is not None
    # The same 2 s whatever the server said: it came back 8 s early when told to wait 10.
    assert junior_sleeps == [2, 2]
    assert [r.status for r in puts(api, 1)] == [429, 200, 429, 200]

    # Four workers paced as in production; product 2 is told to come back in 1 s.
    api.add_fault(Fault("status", product_id=2, status=429, retry_after="1"))
    batch = [item(n) for n in range(2, 10)]
    results = improved(api, concurrency=4, rate_limit=DEFAULT_RATE_LIMIT).update_many(batch)
    assert all(r.ok for r in results)
    assert [r.status for r in puts(api, 2)] == [429, 200]
    told, retried = (r.arrived for r in puts(api, 2))
    assert retried - told >= 1.0  # the Retry-After, not the 0.05 s backoff
    # And every worker waited with it: only the requests already given their turn (at most one
    # per other worker, 1/9 s apart) went out meanwhile, then nothing until the second was up.
    assert not [r for r in puts(api) if 0.6 < r.arrived - told < 1.0]
    held_back = {r.path for r in puts(api) if r.arrived - told >= 1.0}
    assert held_back > {"/products/2"}  # not only the retry: other products waited too


def test_junior_sends_an_invalid_price_while_improved_rejects_it_before_sending(
    api: FakeDummyJson, improved: Callable[..., ProductUpdater], junior_sleeps: list[float]
) -> None:
    answer = junior.ProductUpdater(base_url=api.url).update_product(1, "", -5, "d")
    assert answer["price"] == -5  # the API accepted it and the junior reports success
    assert json.loads(puts(api, 1)[0].body) == {"title": "", "price": -5, "description": "d"}

    batch = [item(2, price=-5), item(3, title=""), item(4, price="9.99"), item(5, id=0)]
    results = improved(api).update_many(batch)
    assert [r.reason for r in results] == [
        "invalid: price: expected a positive amount, got -5",
        "invalid: title: must not be empty",
        "invalid: price: expected a number, got str '9.99'",
        "invalid: id: expected a positive integer, got 0",
    ]
    assert [r.product_id for r in results] == [2, 3, 4, None]
    assert len(puts(api)) == 1  # only the junior's


def test_an_item_missing_a_field_aborts_the_junior_batch_but_not_the_improved_one(
    api: FakeDummyJson, improved: Callable[..., ProductUpdater], junior_sleeps: list[float]
) -> None:
    batch = [item(1), {"id": 2, "price": 5, "description": "no title"}, item(3)]
    with pytest.raises(KeyError, match="title"):
        junior.ProductUpdater(base_url=api.url).update_products(copy.deepcopy(batch), [])
    assert [r.path for r in puts(api)] == ["/products/1"]  # product 3 was never attempted

    results = improved(api).update_many(batch)
    assert [(r.product_id, r.ok) for r in results] == [(1, True), (2, False), (3, True)]
    assert results[1].reason == "invalid: missing title"
    assert sorted(r.path for r in puts(api)[1:]) == ["/products/1", "/products/3"]


def test_rerunning_a_batch_crashes_the_junior_while_improved_repeats_the_same_requests(
    fake_api: Callable[..., FakeDummyJson],
    improved: Callable[..., ProductUpdater],
    junior_sleeps: list[float],
) -> None:
    api = fake_api(products=10)
    batch = [item(1), item(2)]
    updater = junior.ProductUpdater(base_url=api.url)
    assert len(updater.update_products(batch, [])) == 2
    assert "id" not in batch[0]  # the first run took the ids out of the caller's items
    with pytest.raises(KeyError, match="id"):
        updater.update_products(batch, [])

    api = fake_api(products=10)
    batch = [item(1), item(2)]
    original = copy.deepcopy(batch)
    updater = improved(api)
    first, second = updater.update_many(batch), updater.update_many(batch)
    assert first == second == [UpdateResult(1, ok=True), UpdateResult(2, ok=True)]
    assert batch == original
    bodies: dict[str, list[bytes]] = defaultdict(list)
    for record in puts(api):
        bodies[record.path].append(record.body)
    assert sorted(bodies) == ["/products/1", "/products/2"]
    assert all(len(sent) == 2 and sent[0] == sent[1] for sent in bodies.values())


def test_junior_results_leak_between_calls_via_a_mutable_default_but_not_improved(
    api: FakeDummyJson,
    improved: Callable[..., ProductUpdater],
    junior_sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As in a fresh process: the shared default list starts empty.
    monkeypatch.setattr(junior.ProductUpdater.update_products, "__defaults__", ([],))
    first = junior.ProductUpdater(base_url=api.url).update_products([item(1)])
    second = junior.ProductUpdater(base_url=api.url).update_products([item(2)])
    assert [product["id"] for product in second] == [1, 2]  # product 1 was not in this batch
    assert second is first

    assert [r.product_id for r in improved(api).update_many([item(1)])] == [1]
    assert [r.product_id for r in improved(api).update_many([item(2)])] == [2]


def test_junior_swallows_a_malformed_file_and_exits_0_while_improved_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "updates.json"
    path.write_text('[{"id": 1, "title": "Phone",', encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(JUNIOR_PATH), str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0
    assert "Could not read" in run.stdout
    assert "0 of 0 products updated" in run.stdout

    assert code_review.main(["--apply", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"error: {path}: not valid JSON")


# --- performance ------------------------------------------------------------------------------


def test_junior_opens_a_connection_per_request_while_improved_reuses_a_few(
    fake_api: Callable[..., FakeDummyJson],
    improved: Callable[..., ProductUpdater],
    junior_sleeps: list[float],
) -> None:
    batch = [item(n) for n in range(1, 9)]
    api = fake_api(products=10)
    junior.ProductUpdater(base_url=api.url).update_products(copy.deepcopy(batch), [])
    assert len(puts(api)) == 8
    assert api.connections_opened == 8

    api = fake_api(products=10)
    assert all(r.ok for r in improved(api, concurrency=2).update_many(batch))
    assert len(puts(api)) == 8
    assert api.connections_opened <= 2


def test_junior_runs_serially_with_sleeps_while_improved_runs_concurrently_in_limit(
    fake_api: Callable[..., FakeDummyJson],
    improved: Callable[..., ProductUpdater],
    junior_sleeps: list[float],
) -> None:
    latency, count = 0.02, 25
    batch = [item(n) for n in range(1, count + 1)]
    api = fake_api(products=30, latency=latency)
    started = time.monotonic()
    junior.ProductUpdater(base_url=api.url).update_products(copy.deepcopy(batch), [])
    # What the run really takes: the requests one after another, plus the sleeps recorded.
    junior_seconds = time.monotonic() - started + sum(junior_sleeps)
    assert junior_sleeps == [0.5] * count
    assert junior_seconds >= count * (latency + 0.5)

    # A server that enforces 10 requests per second (DummyJSON's 100 per 10 s, scaled down),
    # and four workers sharing the client's pacer at its default 9 a second.
    api = fake_api(products=30, latency=latency, rate_limit=(10, 1.0))
    updater = improved(api, concurrency=4, rate_limit=DEFAULT_RATE_LIMIT)
    started = time.monotonic()
    results = updater.update_many(batch)
    improved_seconds = time.monotonic() - started
    assert all(r.ok for r in results)
    assert [r.status for r in puts(api)] == [200] * count  # never a 429
    assert improved_seconds >= (count - 1) / DEFAULT_RATE_LIMIT  # the pacer held the workers back
    assert improved_seconds < junior_seconds / 2


# --- the improved request type ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**item(1), "id": 0}, "id: expected a positive integer, got 0"),
        ({**item(1), "id": -3}, "id: expected a positive integer, got -3"),
        ({**item(1), "id": True}, "id: expected a positive integer, got bool True"),
        ({**item(1), "id": "7"}, "id: expected a positive integer, got str '7'"),
        ({**item(1), "price": 0}, "price: expected a positive amount, got 0"),
        ({**item(1), "price": Decimal("NaN")}, "price: expected a positive amount, got NaN"),
        ({**item(1), "price": Decimal("9.999")}, "price: 9.999 has more than 2 decimals"),
        (
            {**item(1), "price": Decimal("1e12")},
            "price: 1E+12 is above the maximum 9999999999.99",
        ),
        ({**item(1), "price": None}, "price: expected a number, got NoneType None"),
        ({**item(1), "title": "   "}, "title: must not be empty"),
        ({**item(1), "title": 42}, "title: expected text, got int 42"),
        ({**item(1), "title": "x" * 201}, "title: 201 characters, at most 200 allowed"),
        (
            {**item(1), "description": "x" * 2001},
            "description: 2001 characters, at most 2000 allowed",
        ),
        (
            {**item(1), "prcie": 5},
            "unknown field(s) prcie; expected id, title, price, description",
        ),
        ({"id": 1, "title": "T"}, "missing price, description"),
        ([1, "T"], "expected an object with id, title, price, description, got list"),
    ],
)
def test_update_request_rejects_a_bad_item_with_a_message_naming_the_field(
    raw: Any, message: str
) -> None:
    with pytest.raises(InvalidUpdate) as caught:
        UpdateRequest.from_dict(raw)
    assert str(caught.value) == message


def test_update_request_keeps_prices_exact_and_sends_the_shortest_number() -> None:
    assert UpdateRequest.from_dict(item(1, price=Decimal("1899.99"))).payload()["price"] == 1899.99
    assert UpdateRequest.from_dict(item(1, price=16777217.99)).price == Decimal("16777217.99")
    sent = UpdateRequest.from_dict(item(1, price=25)).payload()["price"]
    assert sent == 25
    assert isinstance(sent, int)


# --- the review itself ------------------------------------------------------------------------


def test_ruff_select_all_reports_exactly_the_rules_the_findings_cover() -> None:
    # --isolated: the project's configuration exempts junior/ from every rule.
    run = subprocess.run(
        [
            *(sys.executable, "-m", "ruff", "check", "--isolated", "--select", "ALL"),
            *("--line-length", "100", "--target-version", "py311", "--output-format", "json"),
            str(JUNIOR_PATH),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    reported = {diagnostic["code"] for diagnostic in json.loads(run.stdout)}
    assert len(reported) > 10  # ruff really looked at the file
    assert reported - covered_rules() == set(), "rules ruff reports that no finding covers"
    assert covered_rules() - reported == set(), "rules a finding claims that ruff does not report"


def test_every_finding_cites_lines_that_hold_its_anchor() -> None:
    lines = junior_lines()
    for finding in FINDINGS:
        quoted = quote(finding, lines)
        first, last = finding.lines
        assert [number for number, _ in quoted] == list(range(first, last + 1))
    with pytest.raises(StaleFinding, match="SEC-1"):
        quote(replace(FINDINGS[0], lines=(1, 1)), lines)


def test_every_fact_names_a_test_in_this_file_and_every_other_finding_is_a_judgement() -> None:
    assert len({f.id for f in FINDINGS}) == len(FINDINGS)
    assert {f.category for f in FINDINGS} == set(CATEGORIES)
    facts = [f for f in FINDINGS if f.is_fact]
    assert len(facts) >= 10
    for finding in FINDINGS:
        if finding.is_fact:
            assert finding.evidence == f"test: tests/test_code_review.py::{finding.test_name}"
            assert callable(globals().get(str(finding.test_name))), finding.evidence
        else:
            assert finding.evidence == "judgement"


def test_findings_are_grouped_by_category_with_the_most_severe_first() -> None:
    order = [
        (CATEGORIES.index(f.category), SEVERITIES.index(f.severity)) for f in ordered_findings()
    ]
    assert order == sorted(order)
    text = render_review("text")
    positions = [text.index(f"[{f.id}]") for f in ordered_findings()]
    assert positions == sorted(positions)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_review_in_every_format_has_every_finding_and_quotes_its_lines(fmt: str) -> None:
    output = render_review(fmt)
    lines = junior_lines()
    if fmt == "json":
        document = json.loads(output)
        assert [f["id"] for f in document["findings"]] == [f.id for f in ordered_findings()]
        for finding, shown in zip(ordered_findings(), document["findings"], strict=True):
            first, last = finding.lines
            expected = [{"line": n, "text": redact(lines[n - 1])} for n in range(first, last + 1)]
            assert shown["quote"] == expected
            assert (shown["problem"], shown["why"], shown["fix"]) == (
                finding.problem,
                finding.why,
                finding.fix,
            )
            assert shown["kind"] == ("fact" if finding.is_fact else "judgement")
        assert document["note"] == NOT_PERSISTED
        shown_names = {piece["name"] for piece in document["improved"]}
        assert {"UpdateRequest", "UpdateResult", "ProductUpdater"} <= shown_names
        return
    flat = " ".join(output.split())
    for finding in FINDINGS:
        assert finding.id in output
        for part in (finding.problem, finding.why, finding.fix):
            assert " ".join(part.split()) in flat
        for number in range(finding.lines[0], finding.lines[1] + 1):
            assert f"{number:>4} | {redact(lines[number - 1])}" in output
        assert (finding.test_name or "judgement") in output
    assert "class ProductUpdater" in output
    assert NOT_PERSISTED in flat


def test_the_review_never_repeats_the_junior_token() -> None:
    for fmt in FORMATS:
        output = render_review(fmt)
        assert junior.API_TOKEN not in output
        assert "sk_live_<redacted>" in output


def test_main_without_arguments_prints_the_review_offline_and_returns_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_network(*args: Any) -> None:
        raise AssertionError("the review must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert code_review.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Code review of junior/product_updater.py")
    for category in CATEGORIES:
        assert f"\n{category.upper()}\n" in out
    assert "IMPROVED IMPLEMENTATION" in out
    assert "SUMMARY" in out
    assert "DummyJSON does not persist writes" in out


# --- applying updates -------------------------------------------------------------------------


def write_updates(tmp_path: Path, items: Any) -> Path:
    path = tmp_path / "updates.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def test_apply_updates_every_product_returns_0_and_says_writes_are_not_persisted(
    api: FakeDummyJson, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_updates(tmp_path, [item(1), item(2, price=1899.99), item(3, price=25)])
    assert code_review.main(["--apply", str(path), "--api-url", api.url]) == 0
    out = capsys.readouterr().out
    assert "item 2 (product 2): updated" in out
    assert "updated 3 of 3 products, 0 failed" in out
    assert "DummyJSON does not persist writes" in out
    sent = {r.path: json.loads(r.body)["price"] for r in puts(api)}
    assert sent == {"/products/1": 19.99, "/products/2": 1899.99, "/products/3": 25}
    # And indeed: the product reads back unchanged.
    answer = requests.get(f"{api.url}/products/1", timeout=5).json()
    assert answer["title"] != item(1)["title"]


def test_apply_reports_an_invalid_item_as_failed_and_returns_1(
    api: FakeDummyJson, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_updates(tmp_path, [item(1), item(2, price=-5), item(3)])
    assert code_review.main(["--apply", str(path), "--api-url", api.url]) == 1
    out = capsys.readouterr().out
    assert "item 2 (product 2): invalid: price: expected a positive amount, got -5" in out
    assert "updated 2 of 3 products, 1 failed" in out
    assert sorted(r.path for r in puts(api)) == ["/products/1", "/products/3"]


def test_apply_as_json_gives_one_result_per_item_and_the_summary(
    api: FakeDummyJson, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_updates(tmp_path, [item(1), "not an object", item(999)])
    argv = ["--apply", str(path), "--api-url", api.url, "--format", "json"]
    assert code_review.main(argv) == 1
    document = json.loads(capsys.readouterr().out)
    assert [(r["item"], r["product_id"], r["ok"]) for r in document["results"]] == [
        (1, 1, True),
        (2, None, False),
        (3, 999, False),
    ]
    assert "not found" in document["results"][2]["reason"]
    assert document["summary"]["failed"] == 2
    assert document["note"] == NOT_PERSISTED


@pytest.mark.parametrize(
    ("flags", "rate"), [([], DEFAULT_RATE_LIMIT), (["--rate-limit", "4"], 4.0)]
)
def test_apply_paces_requests_from_every_worker_at_the_rate_limit(
    api: FakeDummyJson,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    rate: float,
) -> None:
    monkeypatch.delenv("RATE_LIMIT", raising=False)
    monkeypatch.chdir(tmp_path)  # no developer's .env either: the default applies
    path = write_updates(tmp_path, [item(n) for n in range(1, 4)])
    started = time.monotonic()
    assert code_review.main(["--apply", str(path), "--api-url", api.url, *flags]) == 0
    arrived = sorted(r.arrived for r in puts(api))
    assert len(arrived) == 3
    # Several workers, yet the last request waited two turns of 1/rate s: the client's pacer.
    assert arrived[-1] - started >= 2 / rate


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (301, "answered HTTP 301 Moved Permanently, a redirect to "),  # PUT again, body dropped
        (302, "answered HTTP 302 Found, a redirect to "),  # turned into a GET
        (303, "answered HTTP 303 See Other, a redirect to "),  # turned into a GET
        (307, "answered HTTP 307 Temporary Redirect, a redirect to "),  # body sent elsewhere
        (308, "answered HTTP 308 Permanent Redirect, a redirect to "),  # body sent elsewhere
    ],
)
def test_apply_never_follows_a_redirect_with_a_write(
    fake_api: Callable[..., FakeDummyJson],
    local_api: Callable[[Answer], LocalApi],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: int,
    reason: str,
) -> None:
    api = fake_api(products=10)
    moved = local_api(redirect_to(api.url, status))
    path = write_updates(tmp_path, [item(1, title="New title")])
    assert code_review.main(["--apply", str(path), "--api-url", moved.url]) == 1
    out = capsys.readouterr().out
    assert f"item 1 (product 1): PUT {moved.url}/products/1 failed: {reason}" in out
    assert "a write never follows a redirect, so nothing was applied" in out
    assert "updated 0 of 1 products, 1 failed" in out
    assert api.requests == []  # the redirect's target never heard of it
    assert [method for method, _, _ in moved.requests] == ["PUT"]  # and it was not re-sent


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (echo(202), "answered HTTP 202 Accepted; only 200 or 201 with the product written"),
        (
            always(200, {"id": 1, "title": "Old title", "price": 5, "description": "Old"}),
            "product 1 came back without the values written (title, price, description differ)",
        ),
        (always(200, {"id": 2, **item(2)}), "expected product 1 back, got {'id': 2"),
    ],
    ids=["accepted-not-applied", "old-values", "another-product"],
)
def test_apply_reports_an_answer_that_does_not_confirm_the_write_as_failed(
    local_api: Callable[[Answer], LocalApi],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: Answer,
    reason: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no developer's .env
    monkeypatch.setenv("HTTP_MAX_RETRIES", "1")  # an odd answer is tried again once, not five times
    server = local_api(answer)
    path = write_updates(tmp_path, [item(1)])
    assert code_review.main(["--apply", str(path), "--api-url", server.url]) == 1
    out = capsys.readouterr().out
    assert reason in out
    assert "updated 0 of 1 products, 1 failed" in out


def test_apply_keeps_the_updates_of_one_product_in_file_order(
    local_api: Callable[[Answer], LocalApi], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that keeps what it is sent, and holds the first write of product 1 a while.

    Updates of one product sent concurrently land in the wrong order here (the held first one
    lands last and wins); sent one after the other, the last in the file wins, as in the junior.
    """
    stored: dict[str, str] = {}
    seen: set[str] = set()
    answered: list[tuple[str, float]] = []
    lock = threading.Lock()

    def keep(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        with lock:
            held = path == "/products/1" and path not in seen
            seen.add(path)
        if held:
            time.sleep(0.5)
        product = {"id": int(path.rsplit("/", 1)[1]), **json.loads(body)}
        with lock:
            stored[path] = product["title"]
            answered.append((path, time.monotonic()))
        return 200, JSON_HEADERS, json.dumps(product).encode()

    server = local_api(keep)
    updates = [item(1, title="Older"), item(2), item(1, title="Newer"), item(3)]
    path = write_updates(tmp_path, updates)
    argv = ["--apply", str(path), "--api-url", server.url, "--rate-limit", "0"]
    assert code_review.main(argv) == 0
    assert "updated 4 of 4 products, 0 failed" in capsys.readouterr().out
    assert stored["/products/1"] == "Newer"  # the last one in the file stays
    titles = [json.loads(body)["title"] for _, p, body in server.requests if p == "/products/1"]
    assert titles == ["Older", "Newer"]
    # The other products did not wait: they were answered while product 1's first write was held.
    first_of_1 = next(at for p, at in answered if p == "/products/1")
    assert {p for p, at in answered if at < first_of_1} == {"/products/2", "/products/3"}


@pytest.mark.parametrize(
    "content",
    ["[" * 100_000 + "]" * 100_000, '{"a": ' * 100_000 + "1" + "}" * 100_000],
    ids=["arrays", "objects"],
)
def test_apply_a_file_nested_100000_deep_returns_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    path = tmp_path / "updates.json"
    path.write_text(content, encoding="utf-8")
    assert code_review.main(["--apply", str(path)]) == 2
    error = capsys.readouterr().err
    assert error == f"error: {path}: nested too deeply to read (an update is one flat object)\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{", "not valid JSON"),
        ('{"id": 1}', "expected a JSON array of updates, got dict"),
        (None, "cannot read it"),
    ],
)
def test_apply_an_unusable_file_returns_2_with_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "updates.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert code_review.main(["--apply", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"error: {path}: {message}")


@pytest.mark.parametrize(
    "argv",
    [
        ["--concurrency", "0"],
        ["--concurrency", "11"],
        ["--rate-limit", "-1"],
        ["--rate-limit", "fast"],
        ["--format", "xml"],
    ],
)
def test_bad_usage_returns_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    path = write_updates(tmp_path, [item(1)])
    assert code_review.main(["--apply", str(path), *argv]) == 2
    assert capsys.readouterr().err
