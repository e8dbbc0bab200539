"""Exercise 3-1: every factual finding of the review, demonstrated against a real local server.

Each finding's demonstration runs the junior code in a scenario on a real local server (the
DummyJSON-compatible ``tools.local_api``, or a small server below for what it cannot do: redirect
a write, answer 200 with an odd body, keep what was written) and asserts the defect on what the
server received and what the junior returned or printed. Its test then runs the improved
implementation in the same scenario. The junior is loaded afresh from its file for each test,
with its hard-coded sleeps recorded instead of slept (its module's ``time`` name replaced).

A demonstration must be able to fail:
``test_each_demonstration_fails_once_the_junior_is_fixed_the_idiomatic_way`` applies each
finding's small fix (``Finding.patch``, the diff the review shows) to a copy of the junior file,
and asserts that the demonstration no longer holds against it. The improved updater
is paced, as in production, by its ``DummyJsonClient``'s ``RequestPacer``; tests that are not
about pacing leave the client unpaced so they run fast.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import importlib
import importlib.util
import inspect
import io
import itertools
import json
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import requests

import code_review
from code_review import (
    CATEGORIES,
    FINDINGS,
    FORMATS,
    JUNIOR_PATH,
    LABELS,
    NOT_PERSISTED,
    PRAISE,
    SEVERITIES,
    Finding,
    InvalidUpdate,
    ProductUpdater,
    StaleFinding,
    UpdateRequest,
    UpdateResult,
    changed_lines,
    covered_rules,
    fix_diff,
    junior_lines,
    ordered_findings,
    patched_junior,
    quote,
    quote_praise,
    redact,
    render_review,
)
from etl.client import DummyJsonClient
from etl.settings import DEFAULT_RATE_LIMIT
from tests.cli import exit_status
from tools.local_api import FakeDummyJson, Fault, RequestRecord

# Imported by name so mypy does not follow it: the junior code is deliberately untyped.
junior = importlib.import_module("junior.product_updater")

LIVE_KEY = re.compile(r"sk_live_\w+")


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


def printed(call: Callable[..., Any], *args: Any) -> tuple[Any, str]:
    """What a call returned, or the exception it raised; and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            result = call(*args)
        except Exception as exc:  # noqa: BLE001 - whatever it raises is the outcome asserted on
            result = exc
    return result, out.getvalue()


def outcome(call: Callable[..., Any], *args: Any) -> Any:
    """What a call returned, or the exception it raised; its printing discarded."""
    return printed(call, *args)[0]


# --- a small local server, for what tools.local_api cannot do ---------------------------------

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


# --- the junior, loaded afresh, and the demonstrations ----------------------------------------


@dataclass
class Scene:
    """Where a demonstration runs: real local servers, a scratch directory, the junior's sleeps."""

    fake_api: Callable[..., FakeDummyJson]
    local_api: Callable[[Answer], LocalApi]
    tmp_path: Path
    sleeps: list[float] = field(default_factory=list)

    def api(self, products: int = 120, **options: Any) -> FakeDummyJson:
        """A started local DummyJSON, stopped after the test."""
        return self.fake_api(products=products, **options)


_COPIES = itertools.count()


def load_junior(source: str, directory: Path, sleeps: list[float]) -> ModuleType:
    """The junior module from ``source``, written to ``directory``, its sleeps recorded."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "product_updater.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"junior_copy_{next(_COPIES)}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__dict__["time"] = SimpleNamespace(sleep=sleeps.append)  # recorded, not slept
    return module


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
def scene(
    fake_api: Callable[..., FakeDummyJson],
    local_api: Callable[[Answer], LocalApi],
    tmp_path: Path,
) -> Scene:
    return Scene(fake_api, local_api, tmp_path)


@pytest.fixture
def junior_module(scene: Scene) -> ModuleType:
    """The junior file as written, loaded afresh (so its mutable default starts empty)."""
    source = JUNIOR_PATH.read_text(encoding="utf-8")
    return load_junior(source, scene.tmp_path / "as_written", scene.sleeps)


Demonstration = Callable[[ModuleType, Scene], Any]
DEMONSTRATIONS: dict[str, Demonstration] = {}


def demonstrates(finding_id: str) -> Callable[[Demonstration], Demonstration]:
    """Register the function that shows a finding's defect on a junior module, by assertions."""

    def register(demonstration: Demonstration) -> Demonstration:
        DEMONSTRATIONS[finding_id] = demonstration
        return demonstration

    return register


def show(finding_id: str, module: ModuleType, scene: Scene) -> Any:
    """Run a finding's demonstration: it raises AssertionError where the defect is absent."""
    return DEMONSTRATIONS[finding_id](module, scene)


@pytest.fixture
def improved() -> Iterator[Callable[..., ProductUpdater]]:
    """A factory of improved updaters on a real ``DummyJsonClient`` with test-sized timeouts.

    The client is unpaced unless the test passes ``rate_limit``.
    """
    clients: list[DummyJsonClient] = []

    def make(api: Any, *, concurrency: int = 4, **options: Any) -> ProductUpdater:
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


@demonstrates("SEC-1")
def junior_sends_a_live_key_written_in_its_source(jr: ModuleType, scene: Scene) -> None:
    keys = LIVE_KEY.findall(Path(str(jr.__file__)).read_text(encoding="utf-8"))
    assert keys, "a live key is written in the source"  # in every clone, and in history
    api = scene.api()
    assert outcome(jr.ProductUpdater(base_url=api.url).update_product, 1, "T", 9.99, "d")
    assert puts(api, 1)[0].headers.get("authorization") == f"Bearer {keys[0]}"


def test_junior_hard_codes_a_token_and_sends_it_while_improved_sends_no_credential(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("SEC-1", junior_module, scene)

    api = scene.api()
    assert improved(api).update(request(2)).ok
    sent = puts(api, 2)[0].headers
    assert "authorization" not in sent
    assert not LIVE_KEY.search(json.dumps(sent))


@demonstrates("SEC-2")
def junior_prints_the_token_payload_and_response(jr: ModuleType, scene: Scene) -> None:
    api = scene.api()
    private = "Wholesale contact: jane.doe@example.com, +44 20 7946 0958"
    updater = jr.ProductUpdater(base_url=api.url)
    answer, output = printed(updater.update_product, 999, "T", 9.99, private)
    assert answer is None
    assert jr.API_TOKEN in output
    assert output.count(private) == 3  # the whole payload, once per attempt
    assert "Product with id '999' not found" in output  # and the whole response body


def test_junior_prints_token_payload_and_response_on_errors_while_improved_logs_neither(
    junior_module: ModuleType,
    scene: Scene,
    improved: Callable[..., ProductUpdater],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    show("SEC-2", junior_module, scene)

    caplog.set_level(logging.DEBUG)
    private = "Wholesale contact: jane.doe@example.com, +44 20 7946 0958"
    updater = improved(scene.api())
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


@demonstrates("SEC-3")
def junior_lets_the_id_choose_the_endpoint(jr: ModuleType, scene: Scene) -> None:
    api = scene.api()
    # What the junior makes of the id afterwards does not matter: what reached the server does.
    outcome(jr.ProductUpdater(base_url=api.url).update_product, "../users/1", "T", 9.99, "d")
    writes = [r for r in list(api.requests) if r.method == "PUT"]
    assert [r.path for r in writes][:1] == ["/users/1"]  # not a product route at all
    assert writes[0].headers.get("authorization") == f"Bearer {jr.API_TOKEN}"


def test_junior_lets_the_file_choose_the_endpoint_that_gets_the_token(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("SEC-3", junior_module, scene)

    api = scene.api()
    hostile = [{**item(1), "id": "../users/1"}, {**item(1), "id": "1?x=1"}]
    results = improved(api).update_many(hostile)
    assert [r.reason for r in results] == [
        "invalid: id: expected a positive integer, got str '../users/1'",
        "invalid: id: expected a positive integer, got str '1?x=1'",
    ]
    assert api.requests == []  # nothing was sent anywhere


# --- correctness ------------------------------------------------------------------------------


def sockets_to(api: FakeDummyJson) -> list[socket.socket]:
    """This process's open client sockets connected to ``api``, found through the collector."""
    port = int(api.url.rsplit(":", 1)[1])
    found = []
    for obj in gc.get_objects():
        if isinstance(obj, socket.socket) and obj.fileno() != -1:
            with contextlib.suppress(OSError):
                if obj.getpeername()[1] == port:
                    found.append(obj)
    return found


@demonstrates("COR-1")
def junior_waits_on_a_stalled_server_with_no_deadline(jr: ModuleType, scene: Scene) -> None:
    api = scene.api(products=10)
    # Headers and a quarter of the body, then silence for a minute (or until the server stops).
    api.add_fault(Fault("stall", product_id=1, times=-1, seconds=60))
    updater = jr.ProductUpdater(base_url=api.url)
    run = threading.Thread(target=updater.update_products, args=([item(1)], []), daemon=True)
    run.start()
    try:
        deadline = time.monotonic() + 5
        while not puts(api, 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # the headers have arrived; it is reading the rest of the body
        assert run.is_alive()
        # The read it is blocked in has no deadline: it ends when the server hangs up, or never.
        assert [s.gettimeout() for s in sockets_to(api)] == [None]
    finally:
        api.stop()  # closing the connection is the only thing that frees it
        run.join(timeout=10)
    assert not run.is_alive()


def test_junior_hangs_on_a_stalled_server_while_improved_gives_up_after_its_timeout(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("COR-1", junior_module, scene)

    api = scene.api(products=10)
    api.add_fault(Fault("stall", product_id=1, times=-1, seconds=60))
    started = time.monotonic()
    result = improved(api, read_timeout=0.5, max_retries=1).update(request(1))
    assert not result.ok
    assert "broke off" in result.reason
    assert time.monotonic() - started < 2 * 0.5 + 1  # two attempts of 0.5 s each, plus a little


@demonstrates("COR-10")
def junior_reports_a_redirected_put_as_updated(jr: ModuleType, scene: Scene) -> None:
    api = scene.api(products=10)
    moved = scene.local_api(redirect_to(api.url, 303))
    updater = jr.ProductUpdater(base_url=moved.url)
    answer, output = printed(updater.update_products, [item(1, title="New title")], [])
    assert isinstance(answer, list)
    assert [product["id"] for product in answer] == [1]  # reported as updated...
    assert "Updated product 1: " in output
    assert answer[0]["title"] != "New title"  # ...with the old title,
    assert [r.method for r in api.requests] == ["GET"]  # for the API received no PUT at all


def test_a_redirected_put_is_reported_updated_by_the_junior_only(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("COR-10", junior_module, scene)

    api = scene.api(products=10)
    moved = scene.local_api(redirect_to(api.url, 303))
    [result] = improved(moved).update_many([item(1, title="New title")])
    assert not result.ok
    assert "HTTP 303 See Other, a redirect to " in result.reason
    assert "a write never follows a redirect" in result.reason
    assert api.requests == []


@demonstrates("COR-2")
def junior_returns_none_for_every_failure(jr: ModuleType, scene: Scene) -> None:
    api = scene.api()
    api.add_fault(Fault("status", product_id=2, status=503, times=-1))
    updater = jr.ProductUpdater(base_url=api.url)
    assert outcome(updater.update_product, 999, "T", 9.99, "d") is None  # a missing product
    assert outcome(updater.update_product, 2, "T", 9.99, "d") is None  # an outage
    # A Decimal price (what money should be) makes json.dumps raise: a bug in the junior code,
    # which except Exception turns into the same None as a missing product or an outage.
    assert outcome(updater.update_product, 3, "T", Decimal("9.99"), "d") is None
    assert not puts(api, 3)  # the bug never reached the server, yet it looks like the others
    assert outcome(updater.update_products, [item(999), item(2)], []) == []  # failures vanish


def test_junior_returns_none_for_every_failure_while_improved_returns_the_reason(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("COR-2", junior_module, scene)

    api = scene.api()
    api.add_fault(Fault("status", product_id=2, status=503, times=-1))
    batch = [item(999), item(2), item(3, price=Decimal("9.99"))]
    results = improved(api, max_retries=1).update_many(batch)
    assert [(r.product_id, r.ok) for r in results] == [(999, False), (2, False), (3, True)]
    assert "HTTP 404" in results[0].reason
    assert "Product with id '999' not found" in results[0].reason
    assert "HTTP 503 after retries" in results[1].reason


@demonstrates("COR-11")
def junior_batch_dies_on_an_odd_200_answer(jr: ModuleType, scene: Scene) -> None:
    gateway = scene.local_api(always(200, {"message": "accepted"}))
    batch = [item(1), item(2)]
    crash = outcome(jr.ProductUpdater(base_url=gateway.url).update_products, batch, [])
    assert isinstance(crash, KeyError)  # result["title"], in a print
    assert [path for _, path, _ in gateway.requests] == ["/products/1"]  # 2 was never tried


def test_an_odd_200_answer_aborts_the_junior_batch_but_not_the_improved_one(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("COR-11", junior_module, scene)

    gateway = scene.local_api(always(200, {"message": "accepted"}))
    results = improved(gateway).update_many([item(1), item(2)])
    assert [(r.product_id, r.ok) for r in results] == [(1, False), (2, False)]
    assert "expected product 1 back, got {'message': 'accepted'}" in results[0].reason
    assert {path for _, path, _ in gateway.requests} == {"/products/1", "/products/2"}


@demonstrates("COR-3")
def junior_retries_client_errors(jr: ModuleType, scene: Scene) -> None:
    api = scene.api()
    api.add_fault(Fault("status", product_id=3, status=400, times=-1))
    updater = jr.ProductUpdater(base_url=api.url)
    for product_id, status in ((999, 404), (3, 400)):
        assert outcome(updater.update_product, product_id, "T", 9.99, "d") is None
        assert [r.status for r in puts(api, product_id)] == [status] * 3
    assert scene.sleeps == [2] * 6


def test_junior_retries_a_client_error_while_improved_fails_once_with_the_message(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("COR-3", junior_module, scene)

    api = scene.api()
    api.add_fault(Fault("status", product_id=3, status=400, times=-1))
    updater = improved(api)
    for product_id, status, message in (
        (999, 404, "Product with id '999' not found"),
        (3, 400, "Bad Request"),
    ):
        result = updater.update(request(product_id))
        assert [r.status for r in puts(api, product_id)] == [status]  # exactly one
        assert not result.ok
        assert f"HTTP {status}: " in result.reason
        assert message in result.reason


@demonstrates("COR-4")
def junior_ignores_retry_after(jr: ModuleType, scene: Scene) -> None:
    api = scene.api()
    updater = jr.ProductUpdater(base_url=api.url)
    for retry_after in ("1", "10"):
        api.add_fault(Fault("status", product_id=1, status=429, retry_after=retry_after))
        assert outcome(updater.update_product, 1, "T", 9.99, "d") is not None
    # The same 2 s whatever the server said: it came back 8 s early when told to wait 10.
    assert scene.sleeps == [2, 2]
    assert [r.status for r in puts(api, 1)] == [429, 200, 429, 200]


def test_junior_ignores_retry_after_while_improved_waits_as_the_server_asks(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("COR-4", junior_module, scene)

    # Four workers paced as in production; product 2 is told to come back in 1 s.
    api = scene.api()
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


@demonstrates("COR-5")
def junior_sends_an_invalid_price(jr: ModuleType, scene: Scene) -> None:
    api = scene.api()
    answer = outcome(jr.ProductUpdater(base_url=api.url).update_product, 1, "", -5, "d")
    assert isinstance(answer, dict)
    assert answer["price"] == -5  # the API accepted it and the junior reports success
    assert json.loads(puts(api, 1)[0].body) == {"title": "", "price": -5, "description": "d"}


def test_junior_sends_an_invalid_price_while_improved_rejects_it_before_sending(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("COR-5", junior_module, scene)

    api = scene.api()
    batch = [item(2, price=-5), item(3, title=""), item(4, price="9.99"), item(5, id=0)]
    results = improved(api).update_many(batch)
    assert [r.reason for r in results] == [
        "invalid: price: expected a positive amount, got -5",
        "invalid: title: must not be empty",
        "invalid: price: expected a number, got str '9.99'",
        "invalid: id: expected a positive integer, got 0",
    ]
    assert [r.product_id for r in results] == [2, 3, 4, None]
    assert puts(api) == []


@demonstrates("COR-6")
def junior_batch_dies_on_an_item_missing_a_field(jr: ModuleType, scene: Scene) -> None:
    api = scene.api()
    batch = [item(1), {"id": 2, "price": 5, "description": "no title"}, item(3)]
    crash = outcome(jr.ProductUpdater(base_url=api.url).update_products, batch, [])
    assert isinstance(crash, KeyError)
    assert crash.args == ("title",)
    assert [r.path for r in puts(api)] == ["/products/1"]  # product 3 was never attempted


def test_an_item_missing_a_field_aborts_the_junior_batch_but_not_the_improved_one(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("COR-6", junior_module, scene)

    api = scene.api()
    batch = [item(1), {"id": 2, "price": 5, "description": "no title"}, item(3)]
    results = improved(api).update_many(batch)
    assert [(r.product_id, r.ok) for r in results] == [(1, True), (2, False), (3, True)]
    assert results[1].reason == "invalid: missing title"
    assert sorted(r.path for r in puts(api)) == ["/products/1", "/products/3"]


@demonstrates("COR-7")
def junior_destroys_its_input(jr: ModuleType, scene: Scene) -> None:
    api = scene.api(products=10)
    batch = [item(1), item(2)]
    updater = jr.ProductUpdater(base_url=api.url)
    first = outcome(updater.update_products, batch, [])
    assert isinstance(first, list)
    assert len(first) == 2
    assert "id" not in batch[0]  # the first run took the ids out of the caller's items
    rerun = outcome(updater.update_products, batch, [])
    assert isinstance(rerun, KeyError)
    assert rerun.args == ("id",)


def test_rerunning_a_batch_crashes_the_junior_while_improved_repeats_the_same_requests(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("COR-7", junior_module, scene)

    api = scene.api(products=10)
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


@demonstrates("COR-8")
def junior_results_leak_between_calls(jr: ModuleType, scene: Scene) -> None:
    # The module is loaded afresh, as in a new process: the shared default list starts empty.
    api = scene.api()
    first = outcome(jr.ProductUpdater(base_url=api.url).update_products, [item(1)])
    second = outcome(jr.ProductUpdater(base_url=api.url).update_products, [item(2)])
    assert [product["id"] for product in second] == [1, 2]  # product 1 was not in this batch
    assert second is first


def test_junior_results_leak_between_calls_via_a_mutable_default_but_not_improved(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("COR-8", junior_module, scene)

    api = scene.api()
    assert [r.product_id for r in improved(api).update_many([item(1)])] == [1]
    assert [r.product_id for r in improved(api).update_many([item(2)])] == [2]


@demonstrates("COR-9")
def junior_exits_0_on_a_malformed_file(jr: ModuleType, scene: Scene) -> None:
    path = scene.tmp_path / "malformed.json"
    path.write_text('[{"id": 1, "title": "Phone",', encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(jr.__file__), str(path)],
        capture_output=True,
        text=True,
        cwd=scene.tmp_path,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0
    assert "Could not read" in run.stdout
    assert "0 of 0 products updated" in run.stdout


def test_junior_swallows_a_malformed_file_and_exits_0_while_improved_exits_2(
    junior_module: ModuleType, scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    show("COR-9", junior_module, scene)

    path = scene.tmp_path / "malformed.json"
    assert code_review.main(["--apply", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"error: {path}: not valid JSON")


@demonstrates("COR-12")
def junior_crashes_on_one_update_not_in_an_array(jr: ModuleType, scene: Scene) -> None:
    path = scene.tmp_path / "one-update.json"
    path.write_text(json.dumps(item(1)), encoding="utf-8")  # an object, not an array of one
    api = scene.api()
    updates = outcome(jr.load_updates, str(path))
    crash = outcome(jr.ProductUpdater(base_url=api.url).update_products, updates, [])
    assert isinstance(crash, AttributeError)  # 'str' object has no attribute 'pop'
    assert puts(api) == []


def test_one_update_not_in_an_array_crashes_the_junior_but_not_the_improved(
    junior_module: ModuleType, scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    show("COR-12", junior_module, scene)

    path = scene.tmp_path / "one-update.json"
    assert code_review.main(["--apply", str(path)]) == 2
    error = capsys.readouterr().err
    assert error == f"error: {path}: expected a JSON array of updates, got dict\n"


# --- performance ------------------------------------------------------------------------------


@demonstrates("PERF-1")
def junior_opens_a_connection_per_request(jr: ModuleType, scene: Scene) -> None:
    api = scene.api(products=10)
    outcome(jr.ProductUpdater(base_url=api.url).update_products, [item(n) for n in range(1, 9)])
    assert len(puts(api)) == 8
    assert api.connections_opened == 8


def test_junior_opens_a_connection_per_request_while_improved_reuses_a_few(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    show("PERF-1", junior_module, scene)

    api = scene.api(products=10)
    assert all(r.ok for r in improved(api, concurrency=2).update_many(item(n) for n in range(1, 9)))
    assert len(puts(api)) == 8
    assert api.connections_opened <= 2


LATENCY, COUNT = 0.02, 25


@demonstrates("PERF-2")
def junior_runs_serially_with_sleeps(jr: ModuleType, scene: Scene) -> float:
    api = scene.api(products=30, latency=LATENCY)
    started = time.monotonic()
    outcome(
        jr.ProductUpdater(base_url=api.url).update_products, [item(n) for n in range(1, COUNT + 1)]
    )
    # What the run really takes: the requests one after another, plus the sleeps recorded.
    junior_seconds = time.monotonic() - started + sum(scene.sleeps)
    assert scene.sleeps == [0.5] * COUNT
    assert junior_seconds >= COUNT * (LATENCY + 0.5)
    return junior_seconds


def test_junior_runs_serially_with_sleeps_while_improved_runs_concurrently_in_limit(
    junior_module: ModuleType, scene: Scene, improved: Callable[..., ProductUpdater]
) -> None:
    junior_seconds = show("PERF-2", junior_module, scene)

    # A server that enforces 10 requests per second (DummyJSON's 100 per 10 s, scaled down),
    # and four workers sharing the client's pacer at its default 9 a second.
    api = scene.api(products=30, latency=LATENCY, rate_limit=(10, 1.0))
    updater = improved(api, concurrency=4, rate_limit=DEFAULT_RATE_LIMIT)
    started = time.monotonic()
    results = updater.update_many([item(n) for n in range(1, COUNT + 1)])
    improved_seconds = time.monotonic() - started
    assert all(r.ok for r in results)
    assert [r.status for r in puts(api)] == [200] * COUNT  # never a 429
    assert improved_seconds >= (COUNT - 1) / DEFAULT_RATE_LIMIT  # the pacer held the workers back
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


def test_every_finding_and_praise_cites_lines_that_hold_its_anchor() -> None:
    lines = junior_lines()
    for finding in FINDINGS:
        quoted = quote(finding, lines)
        first, last = finding.lines
        assert [number for number, _ in quoted] == list(range(first, last + 1))
    for praise in PRAISE:
        assert [n for n, _ in quote_praise(praise, lines)] == list(
            range(praise.lines[0], praise.lines[1] + 1)
        )
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


def test_every_fact_has_a_demonstration_its_test_runs_and_a_fix_that_breaks_it() -> None:
    facts = {f.id: f for f in FINDINGS if f.is_fact}
    assert set(DEMONSTRATIONS) == set(facts)
    for finding_id, finding in facts.items():
        test = globals()[str(finding.test_name)]
        assert f'show("{finding_id}", junior_module, scene)' in inspect.getsource(test)
        assert finding.patch, f"{finding_id} has no small fix to check its demonstration with"
        assert patched_junior(finding) != JUNIOR_PATH.read_text(encoding="utf-8")
    assert not [f.id for f in FINDINGS if not f.is_fact and f.patch]


FACTS = [f for f in FINDINGS if f.is_fact]


@pytest.mark.parametrize("finding", FACTS, ids=[f.id for f in FACTS])
def test_each_demonstration_fails_once_the_junior_is_fixed_the_idiomatic_way(
    finding: Finding, scene: Scene
) -> None:
    fixed = load_junior(patched_junior(finding), scene.tmp_path / "fixed", scene.sleeps)
    # The fix leaves the junior working: a valid update still goes through.
    api = scene.api(products=5)
    answer = outcome(fixed.ProductUpdater(base_url=api.url).update_product, 1, "T", 9.99, "d")
    assert isinstance(answer, dict)
    assert answer["id"] == 1
    scene.sleeps.clear()
    # And the defect is gone: the demonstration that holds on the junior as written fails.
    with pytest.raises(AssertionError):
        show(finding.id, fixed, scene)


def test_a_small_fix_that_no_longer_applies_is_caught() -> None:
    drifted = JUNIOR_PATH.read_text(encoding="utf-8").replace("results=[]", "results=()")
    cor_8 = next(f for f in FINDINGS if f.id == "COR-8")
    with pytest.raises(StaleFinding, match="COR-8: lines 47-47"):
        patched_junior(cor_8, drifted)


def test_blocking_findings_lead_most_severe_first_then_the_others() -> None:
    ordered = ordered_findings()
    blocking = [f for f in ordered if f.blocking]
    assert ordered[: len(blocking)] == blocking
    for group in (blocking, ordered[len(blocking) :]):
        ranks = [SEVERITIES.index(f.severity) for f in group]
        assert ranks == sorted(ranks)
    assert [f.id for f in ordered[:3]] == ["SEC-1", "SEC-3", "SEC-2"]
    assert {f.label for f in FINDINGS} <= set(LABELS)
    assert all(f.label == "issue" for f in blocking)
    assert {f.comment_label for f in blocking} == {"issue (blocking)"}
    text = render_review("text")
    positions = [text.index(f"[{f.id}] {f.comment_label}: ") for f in ordered]
    assert text.index("Verdict: request changes.") < positions[0]
    assert positions == sorted(positions)
    assert text.index("\nBLOCKING\n") < positions[0]
    assert positions[len(blocking) - 1] < text.index("\nNON-BLOCKING\n") < positions[len(blocking)]


def test_the_hard_coded_token_is_critical_and_its_fix_starts_by_revoking_it() -> None:
    [critical] = [f for f in FINDINGS if f.severity == "critical"]
    assert critical.id == "SEC-1"
    assert critical.blocking
    assert critical.fix.startswith(
        "Revoke and rotate it now, purge it from history (git filter-repo, then every clone "
        "re-cloned), add secret scanning"
    )
    assert next(f for f in FINDINGS if f.id == "COR-5").severity == "medium"


def test_each_blocking_finding_has_a_small_diff_against_the_junior_file() -> None:
    for finding in (f for f in FINDINGS if f.blocking):
        diff = fix_diff(finding)
        assert diff[:2] == ["--- a/junior/product_updater.py", "+++ b/junior/product_updater.py"]
        assert 1 <= changed_lines(diff) <= 10, finding.id
    sec_1 = fix_diff(FINDINGS[0])
    assert '-API_TOKEN = "sk_live_<redacted>"' in sec_1  # the removed line, masked


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_review_in_every_format_has_every_finding_and_quotes_its_lines(fmt: str) -> None:
    output = render_review(fmt)
    lines = junior_lines()
    if fmt == "json":
        document = json.loads(output)
        assert document["verdict"][0].startswith("Verdict: request changes. 9 blocking findings")
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
            assert (shown["blocking"], shown["severity"], shown["label"]) == (
                finding.blocking,
                finding.severity,
                finding.comment_label,
            )
            diff = "\n".join(fix_diff(finding)) if finding.blocking else None
            assert shown["diff"] == diff
        assert [p["text"] for p in document["praise"]] == [p.text for p in PRAISE]
        assert {p["label"] for p in document["praise"]} == {"praise"}
        assert document["note"] == NOT_PERSISTED
        shown_names = {piece["name"] for piece in document["improved"]}
        assert {"UpdateRequest", "UpdateResult", "ProductUpdater"} <= shown_names
        return
    flat = " ".join(output.split())
    for finding in FINDINGS:
        assert finding.id in output
        assert f"{finding.comment_label}" in output
        for part in (finding.title, finding.problem, finding.why, finding.fix):
            assert " ".join(part.split()) in flat
        for number in range(finding.lines[0], finding.lines[1] + 1):
            assert f"{number:>4} | {redact(lines[number - 1])}" in output
        assert (finding.test_name or "judgement") in output
        for line in fix_diff(finding) if finding.blocking else ():
            assert line.rstrip() in output
    for praise in PRAISE:
        assert " ".join(praise.text.split()) in flat
    assert "class ProductUpdater" in output
    assert NOT_PERSISTED in flat


def test_the_review_never_repeats_the_junior_token() -> None:
    for fmt in FORMATS:
        output = render_review(fmt)
        assert junior.API_TOKEN not in output
        assert not LIVE_KEY.search(output.replace("sk_live_<redacted>", ""))
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
    assert out.index("Verdict: request changes.") < out.index("\nBLOCKING\n")
    for heading in ("BLOCKING", "NON-BLOCKING", "PRAISE", "IMPROVED IMPLEMENTATION", "SUMMARY"):
        assert f"\n{heading}" in out
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
        (301, "HTTP 301 Moved Permanently, a redirect to "),  # PUT again, body dropped
        (302, "HTTP 302 Found, a redirect to "),  # turned into a GET
        (303, "HTTP 303 See Other, a redirect to "),  # turned into a GET
        (307, "HTTP 307 Temporary Redirect, a redirect to "),  # body sent elsewhere
        (308, "HTTP 308 Permanent Redirect, a redirect to "),  # body sent elsewhere
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
        (echo(202), "HTTP 202 Accepted; only 200 or 201 with the product written"),
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
    assert exit_status(code_review.main, ["--apply", str(path), *argv]) == 2
    assert capsys.readouterr().err
