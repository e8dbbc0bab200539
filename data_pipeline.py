"""Exercise 1-2: extract DummyJSON's products, validate and normalise them, load them.

The pieces, each usable on its own (``production_pipeline.py`` imports them):

* ``Settings`` / ``resolve_settings``: configuration from flag > environment > ``.env`` > default;
* ``DummyJsonClient``: a ``requests.Session`` with explicit timeouts, a User-Agent and urllib3
  retries (connection errors, 429 and 5xx, honouring ``Retry-After``), plus a retry of bodies that
  arrive truncated or are not the JSON expected;
* ``iter_products``: a generator that pages through ``/products`` and yields products as they
  arrive, recording in an ``Extraction`` whether it saw the whole catalog; each product carries
  the digest of its JSON text as sent (``decode_json``), which the sync compares;
* ``transform_product``: one raw product to typed rows for the four catalog tables, or an
  ``InvalidProduct`` that says which field and what arrived;
* ``load_products``: the basic load, a full refresh inside the caller's transaction.

Run ``python data_pipeline.py --help``; ``python data_pipeline.py --api-url http://127.0.0.1:8000``
loads from the repository's local server (``python -m tests.fake_api --port 8000``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import io
import itertools
import json
import logging
import os
import pickle
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeGuard, TypeVar
from urllib.parse import urlencode, urlsplit

import requests
from dotenv import dotenv_values
from requests.adapters import HTTPAdapter
from sqlalchemy import Connection, Engine, delete, insert, update
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from models import (
    DEFAULT_DATABASE_URL,
    PipelineRun,
    Product,
    ProductImage,
    ProductTag,
    RejectedRecord,
    Review,
    create_schema,
    make_engine,
    mask_url,
    write_transaction,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_API_URL = "https://dummyjson.com"
USER_AGENT = "products-etl/1.0 (+https://github.com/products-etl; python-requests)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BODY_EXCERPT = 200  # characters of a response body quoted in an error message
LOG_EVERY_PAGES = 10
MAX_SERVER_PAUSE = 60.0  # longest wait a Retry-After or rate-limit reset may impose, seconds
# DummyJSON allows 100 requests per 10 s per client; 9 a second stays under it with room to spare.
DEFAULT_RATE_LIMIT = 9.0


# --- errors -----------------------------------------------------------------------------------


class PipelineError(Exception):
    """Root of every error a pipeline reports as a failed run (exit code 1)."""


class ConfigError(PipelineError):
    """A setting is missing or malformed (exit code 2)."""


class ApiError(PipelineError):
    """The API could not be reached, or answered with an error, after the retries."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class UnexpectedPayload(ApiError):
    """The API answered 200 with a body that is not the JSON document expected."""


class ExtractionIncomplete(PipelineError):
    """Paging ended without seeing every product the API announced."""


class InvalidProduct(PipelineError):
    """A product failed validation; ``reason`` names the field and what arrived."""

    def __init__(self, reason: str, *, source_id: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.source_id = source_id


def excerpt(text: str | bytes, limit: int = BODY_EXCERPT) -> str:
    """The start of a body, on one line, for an error message."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything a pipeline run is configured with, resolved once."""

    api_url: str = DEFAULT_API_URL
    database_url: str = DEFAULT_DATABASE_URL
    page_size: int = 100
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_retries: int = 5
    concurrency: int = 4
    rate_limit: float = DEFAULT_RATE_LIMIT
    verbose: bool = False


# (flag attribute, environment variable, parser) for every setting with an environment twin.
_SETTING_SOURCES: tuple[tuple[str, str, type], ...] = (
    ("api_url", "API_BASE_URL", str),
    ("database_url", "DATABASE_URL", str),
    ("page_size", "PAGE_SIZE", int),
    ("connect_timeout", "HTTP_CONNECT_TIMEOUT", float),
    ("read_timeout", "HTTP_READ_TIMEOUT", float),
    ("max_retries", "HTTP_MAX_RETRIES", int),
    ("concurrency", "CONCURRENCY", int),
    ("rate_limit", "RATE_LIMIT", float),
)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every pipeline shares; each defaults to its environment variable."""
    parser.add_argument(
        "--api-url", help=f"API base URL (env API_BASE_URL; default {DEFAULT_API_URL})"
    )
    parser.add_argument(
        "--database-url",
        help=f"SQLAlchemy database URL (env DATABASE_URL; default {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument("--page-size", help="products per request (env PAGE_SIZE; default 100)")
    parser.add_argument(
        "--connect-timeout", help="seconds to connect (env HTTP_CONNECT_TIMEOUT; default 5)"
    )
    parser.add_argument(
        "--read-timeout", help="seconds to wait for data (env HTTP_READ_TIMEOUT; default 30)"
    )
    parser.add_argument(
        "--max-retries", help="retries per request (env HTTP_MAX_RETRIES; default 5)"
    )
    parser.add_argument(
        "--concurrency", help="pages fetched at once (env CONCURRENCY; default 4; 1 = sequential)"
    )
    parser.add_argument(
        "--rate-limit",
        help=f"requests per second at most, 0 = unpaced (env RATE_LIMIT; default "
        f"{DEFAULT_RATE_LIMIT:g}, within DummyJSON's 100 per 10 s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every page")


def resolve_settings(
    args: argparse.Namespace, environ: Mapping[str, str | None] | None = None
) -> Settings:
    """Flag > environment > ``.env`` > default, validated; a bad value raises ``ConfigError``."""
    env = {**dotenv_values(".env"), **os.environ} if environ is None else environ
    values: dict[str, Any] = {"verbose": bool(getattr(args, "verbose", False))}
    for attr, env_name, kind in _SETTING_SOURCES:
        flag = "--" + attr.replace("_", "-")
        raw = getattr(args, attr, None)
        origin = flag
        if raw in (None, ""):
            raw, origin = env.get(env_name), env_name
        if raw in (None, ""):
            continue
        try:
            values[attr] = kind(raw)
        except ValueError:
            raise ConfigError(f"{origin}: expected {kind.__name__}, got {raw!r}") from None
    settings = Settings(**values)
    _validate_settings(settings)
    return settings


def _validate_settings(settings: Settings) -> None:
    """Reject values no run could use, naming the setting."""
    parts = urlsplit(settings.api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"--api-url / API_BASE_URL: expected an http(s) URL, got {settings.api_url!r}"
        )
    if not 1 <= settings.page_size <= 10_000:
        raise ConfigError(f"--page-size / PAGE_SIZE: expected 1..10000, got {settings.page_size}")
    if settings.connect_timeout <= 0 or settings.read_timeout <= 0:
        raise ConfigError("--connect-timeout / --read-timeout: expected positive seconds")
    if not 1 <= settings.concurrency <= 64:
        raise ConfigError(
            f"--concurrency / CONCURRENCY: expected 1..64, got {settings.concurrency}"
        )
    if settings.rate_limit < 0:
        raise ConfigError(f"--rate-limit / RATE_LIMIT: expected >= 0, got {settings.rate_limit}")
    if settings.max_retries < 0:
        raise ConfigError(
            f"--max-retries / HTTP_MAX_RETRIES: expected >= 0, got {settings.max_retries}"
        )


# --- the HTTP client --------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One answer of ``GET /products``."""

    products: list[dict[str, Any]]
    total: int
    skip: int


# JSON with exact decimals: 9.99 stays Decimal('9.99'), never a binary float.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=Decimal)
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's four whitespace characters


class SourceProduct(dict[str, Any]):
    """A product decoded from a page, with ``digest``: a hash of its JSON text as the API sent it.

    The sync compares digests to skip unchanged products. Digesting the text already in memory
    costs a few microseconds; re-serialising the decoded dict would cost about 13.
    """

    __slots__ = ("digest",)

    def __init__(self, fields: dict[str, Any], digest: int) -> None:
        super().__init__(fields)
        self.digest = digest


def decode_json(body: bytes) -> Any:
    """Decode a response body; the products of a list page come out as ``SourceProduct``.

    The standard library's decoder does all the decoding; this walks only the top-level object,
    so that each element of its ``"products"`` list is decoded on its own and its span of text
    is known. Any other document is decoded in one call. Raises ``ValueError`` for invalid JSON.
    """
    text = body.decode(json.detect_encoding(body), "surrogatepass")
    position = _skip_whitespace(text, 0)
    if not text.startswith("{", position):
        return _DECODER.decode(text)
    position = _after(text, position, "{")
    if text.startswith("}", position):
        return _DECODER.decode(text)
    document: dict[str, Any] = {}
    while True:
        if not text.startswith('"', position):
            raise json.JSONDecodeError("Expecting a property name", text, position)
        key, position = _DECODER.raw_decode(text, position)
        position = _after(text, _skip_whitespace(text, position), ":")
        if key == "products" and text.startswith("[", position):
            document[key], position = _decode_products(text, position)
        else:
            document[key], position = _DECODER.raw_decode(text, position)
        position = _skip_whitespace(text, position)
        if not text.startswith(",", position):
            break
        position = _after(text, position, ",")
    position = _after(text, position, "}")
    if position != len(text):
        raise json.JSONDecodeError("Extra data", text, position)
    return document


def _decode_products(text: str, position: int) -> tuple[list[Any], int]:
    """The list that starts at ``position`` (a ``[``), each object digested; and where it ends."""
    products: list[Any] = []
    position = _after(text, position, "[")
    if text.startswith("]", position):
        return products, _after(text, position, "]")
    while True:
        start = position
        item, position = _DECODER.raw_decode(text, position)
        if isinstance(item, dict):
            span = text[start:position].encode("utf-8", "surrogatepass")
            item = SourceProduct(item, digest_bytes(span))
        products.append(item)
        position = _skip_whitespace(text, position)
        if not text.startswith(",", position):
            return products, _after(text, position, "]")
        position = _after(text, position, ",")


def _skip_whitespace(text: str, position: int) -> int:
    """The position of the first character at or after ``position`` that is not whitespace."""
    match = _WHITESPACE.match(text, position)
    return match.end() if match else position


def _after(text: str, position: int, token: str) -> int:
    """The position after ``token`` (at ``position``) and the whitespace that follows it."""
    if not text.startswith(token, position):
        raise json.JSONDecodeError(f"Expecting {token!r} delimiter", text, position)
    return _skip_whitespace(text, position + 1)


class RequestPacer:
    """One request schedule shared by every thread of a client.

    It spaces requests to at most ``rate`` a second (0: no spacing), and when the server says
    wait (``Retry-After`` on a 429 or 503, or ``X-RateLimit-Remaining: 0`` until
    ``X-RateLimit-Reset``) it holds back every worker, not only the one that was told.
    """

    def __init__(self, rate: float = 0.0, max_pause: float = MAX_SERVER_PAUSE) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.max_pause = max_pause
        self._lock = threading.Lock()
        self._next_start = 0.0  # time.monotonic() before which no further request may start
        self._paused_until = 0.0  # the server's last "wait", also for turns already booked

    def wait_turn(self) -> None:
        """Block until this thread may send its next request."""
        with self._lock:
            start = max(time.monotonic(), self._next_start)
            self._next_start = start + self.interval
        while (delay := max(start, self._paused_until) - time.monotonic()) > 0:
            # A pause the server asked for while this thread slept holds it back too.
            time.sleep(delay)

    def pause(self, seconds: float) -> None:
        """Hold every request back for ``seconds`` (capped at ``max_pause``) from now."""
        until = time.monotonic() + min(max(seconds, 0.0), self.max_pause)
        with self._lock:
            self._paused_until = max(self._paused_until, until)
            self._next_start = max(self._next_start, until)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Pause until the window resets when the server says no request is left in it."""
        if headers.get("X-RateLimit-Remaining") != "0":
            return
        try:
            reset = float(headers.get("X-RateLimit-Reset", ""))
        except ValueError:
            return
        if reset > 0:
            self.pause(reset - time.time())


class PacedRetry(Retry):
    """urllib3's ``Retry``, sleeping through the client's ``RequestPacer``.

    The wait is the larger of the backoff (exponential, with jitter) and the server's
    ``Retry-After``, so ``Retry-After: 0`` cannot burn every attempt at once; and it is a pause
    of the whole client, so the other workers wait too.
    """

    pacer: RequestPacer | None = None

    def new(self, **kw: Any) -> PacedRetry:
        retry = super().new(**kw)
        retry.pacer = self.pacer
        return retry

    def sleep(self, response: Any = None) -> None:
        wait = self.get_backoff_time()
        if response is not None and self.respect_retry_after_header:
            wait = max(wait, self.get_retry_after(response) or 0.0)
        if self.pacer is None:
            time.sleep(wait)
            return
        self.pacer.pause(wait)
        self.pacer.wait_turn()


class DummyJsonClient:
    """A DummyJSON client: one pooled session, explicit timeouts, retries with backoff.

    urllib3 retries connection errors, 429 and 5xx (waiting for ``Retry-After`` when the server
    sends one). A body that breaks off, times out or is not the JSON expected is retried here,
    because urllib3 has already returned the response when that happens. Every request, from
    any thread, goes through one ``RequestPacer``.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_retries: int = 5,
        backoff_factor: float = 0.5,
        pool_size: int = 10,
        rate_limit: float = 0.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.backoff_factor = backoff_factor
        self.pacer = RequestPacer(rate_limit)
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        retry = PacedRetry(
            total=max_retries,
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff_factor,
            backoff_jitter=backoff_factor / 2,
            backoff_max=MAX_SERVER_PAUSE,
            retry_after_max=int(MAX_SERVER_PAUSE),
            respect_retry_after_header=True,
            # Give back the last answer instead of raising, so its status and body are reported.
            raise_on_status=False,
        )
        retry.pacer = self.pacer
        adapter = HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @classmethod
    def from_settings(cls, settings: Settings) -> DummyJsonClient:
        """A client configured from resolved settings."""
        return cls(
            settings.api_url,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_retries=settings.max_retries,
            pool_size=max(settings.concurrency, 1),
            rate_limit=settings.rate_limit,
        )

    def __enter__(self) -> DummyJsonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the pooled connections."""
        self.session.close()

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        payload: Any = None,
        expect: Callable[[Any], T] = lambda document: document,
    ) -> T:
        """Send a request and return ``expect(decoded JSON)``, retrying bodies that arrive broken.

        ``expect`` checks the document's shape and raises ``UnexpectedPayload`` when it is wrong;
        a wrong shape is retried like a truncated body, then reported.
        """
        url = f"{self.base_url}{path}"
        if params:
            url = f"{url}?{urlencode(params)}"
        for attempt in range(self.max_retries + 1):
            try:
                return expect(self._request_once(method, url, payload))
            except UnexpectedPayload as exc:
                exc.url = url
                if attempt == self.max_retries:
                    raise UnexpectedPayload(
                        f"{method} {url}: {exc} (after {attempt + 1} attempts)",
                        url=url,
                        status=exc.status,
                    ) from exc
                delay = self.backoff_factor * 2**attempt
                log.warning("%s %s: %s; retrying in %.1f s", method, url, exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _request_once(self, method: str, url: str, payload: Any) -> Any:
        """One request (urllib3 retries included); broken bodies raise ``UnexpectedPayload``."""
        self.pacer.wait_turn()
        try:
            # stream=True: the body is read below, so a body that breaks off is told apart
            # from a request that never got an answer.
            response = self.session.request(
                method, url, json=payload, timeout=self.timeout, stream=True
            )
        except requests.RequestException as exc:
            raise ApiError(f"{method} {url} failed: {_root_cause(exc)}", url=url) from exc
        self.pacer.observe(response.headers)
        with response:
            try:
                body = response.content
            except requests.RequestException as exc:
                raise UnexpectedPayload(
                    f"the body broke off ({type(exc).__name__})",
                    url=url,
                    status=response.status_code,
                ) from exc
        if response.status_code >= 400:
            retried = " after retries" if response.status_code in RETRY_STATUSES else ""
            raise ApiError(
                f"{method} {url} failed: HTTP {response.status_code}{retried}: {excerpt(body)}",
                url=url,
                status=response.status_code,
            )
        try:
            return decode_json(body)
        except RecursionError:
            raise UnexpectedPayload(
                "expected a JSON document, got one nested too deeply to decode",
                url=url,
                status=response.status_code,
            ) from None
        except ValueError as exc:
            raise UnexpectedPayload(
                f"expected a JSON document, got {excerpt(body)!r} ({exc})",
                url=url,
                status=response.status_code,
            ) from exc

    def fetch_page(self, skip: int, limit: int) -> Page:
        """``GET /products?limit=&skip=``, checked to hold a product list and a total."""
        return self.request_json(
            "GET",
            "/products",
            params={"limit": limit, "skip": skip},
            expect=lambda document: _page_from_document(document, skip),
        )

    def get_product(self, product_id: int) -> dict[str, Any]:
        """``GET /products/{id}``."""
        return self.request_json("GET", f"/products/{product_id}", expect=_object_document)


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, without the pool's boilerplate."""
    retries = ""
    cause: BaseException | None = exc
    while cause is not None:
        reason = getattr(cause, "reason", None)
        if isinstance(cause, MaxRetryError):
            retries = " (retries exhausted)"
        if isinstance(reason, BaseException):
            cause = reason
            continue
        nested = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        if nested is None:
            break
        cause = nested
    text = str(cause)
    # urllib3 prefixes "HTTPConnection(host=..., port=...): "; the address is in the URL already.
    if text.startswith("HTTP") and "): " in text:
        text = text.split("): ", 1)[1]
    return f"{text}{retries}"


def _object_document(document: Any) -> dict[str, Any]:
    """The document itself if it is a JSON object."""
    if not isinstance(document, dict):
        raise UnexpectedPayload(f"expected an object, got {excerpt(repr(document))}", url="")
    return document


def _page_from_document(document: Any, skip: int) -> Page:
    """A ``Page`` from a decoded list answer, or ``UnexpectedPayload`` saying what was missing."""
    if not isinstance(document, dict):
        raise UnexpectedPayload(
            f"expected an object with 'products' and 'total', got {type(document).__name__}",
            url="",
        )
    products, total = document.get("products"), document.get("total")
    if not isinstance(products, list) or not isinstance(total, int) or isinstance(total, bool):
        raise UnexpectedPayload(
            "expected 'products' (a list) and 'total' (an integer), got keys "
            f"{sorted(document)[:10]}",
            url="",
        )
    return Page(products=products, total=total, skip=skip)


# --- extraction -------------------------------------------------------------------------------


@dataclass
class Extraction:
    """What paging saw: the facts the sync needs before it may delete anything."""

    total: int | None = None
    pages: int = 0
    received: int = 0  # products yielded, after dropping repeats
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
        return f"complete, {seen}{repeats}" if reason is None else f"INCOMPLETE ({reason}), {seen}"

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


def page_plan(total: int, page_size: int) -> list[tuple[int, int]]:
    """The ``(skip, limit)`` of every page after the first, each overlapping the one before.

    Each page starts one product early, so its first product should be the previous page's
    last. If it is not, the catalog shifted between the two requests and a product may have
    been skipped: the overlap makes that visible, where counting alone could not see a deletion
    and an insertion that cancel out.
    """
    return [(skip - 1, page_size + 1) for skip in range(page_size, total, page_size)]


def _fetch_in_order(
    client: DummyJsonClient, plan: Sequence[tuple[int, int]], concurrency: int
) -> Iterator[Page]:
    """Fetch the planned pages with at most ``concurrency`` in flight; yield them in order."""
    if concurrency <= 1:
        for skip, limit in plan:
            yield client.fetch_page(skip, limit)
        return
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fetch")
    window: deque[Future[Page]] = deque()
    try:
        for skip, limit in plan:
            window.append(pool.submit(client.fetch_page, skip, limit))
            if len(window) >= concurrency:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def iter_products(
    client: DummyJsonClient,
    page_size: int = 100,
    extraction: Extraction | None = None,
    *,
    concurrency: int = 1,
) -> Iterator[dict[str, Any]]:
    """Yield every product of ``/products`` in id order, a few pages in memory at a time.

    The first page announces the total; the other pages are fetched ``concurrency`` at a time
    and yielded in order. A product whose id is not above the last one yielded is a repeat
    (the catalog shifted forward) and is dropped. ``extraction`` records whether the picture
    is complete: every page fetched, no shift seen between pages, the total never changed and
    the products seen equal to it. Only then may a sync delete what it did not see.
    """
    state = extraction if extraction is not None else Extraction()
    first = client.fetch_page(0, page_size)
    state.total = first.total
    rest = _fetch_in_order(client, page_plan(first.total, page_size), concurrency)
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
            if is_int(product_id):
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


# --- validation and transform -----------------------------------------------------------------


@dataclass
class ProductRows:
    """One product as rows for the four catalog tables."""

    product: dict[str, Any]
    tags: list[dict[str, Any]]
    images: list[dict[str, Any]]
    reviews: list[dict[str, Any]]

    @property
    def id(self) -> int:
        """The product's source id."""
        return int(self.product["id"])

    def row_count(self) -> int:
        """How many database rows this product becomes."""
        return 1 + len(self.tags) + len(self.images) + len(self.reviews)


INT32 = (-(2**31), 2**31 - 1)
ZERO, FIVE = Decimal(0), Decimal(5)

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


def is_int(value: Any) -> TypeGuard[int]:
    """An integer that is not a bool (JSON true is not a quantity)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _text(
    value: Any, name: str, max_length: int | None = None, *, required: bool = False
) -> str | None:
    """A string field, kept verbatim; None when absent or null unless required."""
    if value is None:
        if required:
            raise InvalidProduct(f"{name}: required, but it is missing")
        return None
    if not isinstance(value, str):
        # The value is not quoted: reasons are logged, and a field may hold personal data.
        raise InvalidProduct(f"{name}: expected text, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidProduct(f"{name}: required, but it is empty")
    if "\x00" in value:
        raise InvalidProduct(f"{name}: contains a NUL character, which a database text cannot hold")
    if not value.isascii() and not _is_utf8(value):
        raise InvalidProduct(f"{name}: contains a lone surrogate, which UTF-8 text cannot hold")
    if max_length is not None and len(value) > max_length:
        raise InvalidProduct(f"{name}: longer than {max_length} characters ({len(value)})")
    return value


def _is_utf8(text: str) -> bool:
    """False for text with a lone surrogate (JSON allows "\\ud83d"; no database stores it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@functools.cache
def _numeric_bounds(precision: int, scale: int) -> tuple[Decimal, Decimal]:
    """The smallest magnitude ``Numeric(precision, scale)`` cannot hold, and its step."""
    return Decimal(10) ** (precision - scale), Decimal(1).scaleb(-scale)


def _decimal(
    value: Any,
    name: str,
    precision: int,
    scale: int,
    minimum: Decimal | None = None,
    maximum: Decimal | None = None,
    *,
    required: bool = False,
) -> Decimal | None:
    """An exact decimal that fits ``Numeric(precision, scale)`` without rounding."""
    if value is None:
        if required:
            raise InvalidProduct(f"{name}: required, but it is missing")
        return None
    if type(value) is Decimal:  # the common case first: the decoder's type for fractions
        number = value
    elif isinstance(value, bool) or not isinstance(value, int | Decimal | float):
        raise InvalidProduct(
            f"{name}: expected a number, got {type(value).__name__} {excerpt(repr(value), 60)}"
        )
    else:
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise InvalidProduct(f"{name}: expected a finite number, got {value}")
    ceiling, step = _numeric_bounds(precision, scale)
    if abs(number) >= ceiling:
        raise InvalidProduct(
            f"{name}: {value} is too large (at most {precision - scale} integer digits)"
        )
    if not isinstance(value, int) and number != number.quantize(step):
        raise InvalidProduct(f"{name}: {value} has more than {scale} decimals; it would be rounded")
    if minimum is not None and number < minimum:
        raise InvalidProduct(f"{name}: {value} is below {minimum}")
    if maximum is not None and number > maximum:
        raise InvalidProduct(f"{name}: {value} is above {maximum}")
    return number


def _integer(value: Any, name: str) -> int | None:
    """An optional 32-bit integer."""
    if value is None:
        return None
    if not is_int(value):
        raise InvalidProduct(
            f"{name}: expected an integer, got {type(value).__name__} {excerpt(repr(value), 60)}"
        )
    if not INT32[0] <= value <= INT32[1]:
        raise InvalidProduct(f"{name}: {value} is out of the 32-bit integer range")
    return int(value)


def _timestamp(value: Any, name: str) -> dt.datetime | None:
    """An ISO-8601 timestamp with a zone ('2024-05-23T08:56:21.618Z'), as an aware datetime."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidProduct(f"{name}: expected an ISO-8601 timestamp, got {type(value).__name__}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidProduct(
            f"{name}: expected an ISO-8601 timestamp, got {excerpt(repr(value), 60)}"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidProduct(f"{name}: timestamp {value!r} has no timezone")
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidProduct(
            f"{name}: timestamp {value!r} is outside years 1..9999 in UTC"
        ) from None


def _object(value: Any, name: str) -> Mapping[str, Any]:
    """An optional nested object (dimensions, meta); absent means empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidProduct(f"{name}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, name: str) -> list[Any]:
    """An optional list (tags, images, reviews); absent means empty."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidProduct(f"{name}: expected a list, got {type(value).__name__}")
    return value


def digest_bytes(data: bytes | memoryview) -> int:
    """A signed 64-bit digest (it fits PostgreSQL's BIGINT and SQLite's INTEGER)."""
    # SHA-256 rather than BLAKE2: with the CPU's SHA extensions it digests a product's 1.5 KB
    # in 1.5 µs here, BLAKE2b in 2.5.
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big", signed=True)


def content_hash(raw: Mapping[str, Any]) -> int:
    """A signed 64-bit digest of a product's whole content, children included.

    A product decoded from a page (``SourceProduct``) already carries the digest of its JSON
    text as the API sent it. Any other mapping (built in code, read back from a record) is
    digested through its pickle in fast mode (no memo, so equal content gives equal bytes
    however objects are shared). The two never compare equal: a catalog written from one kind
    and synced from the other is rewritten once, which is correct, only slower. Likewise the
    text's key order and number formatting count: if the API changes how it writes a product,
    the next sync rewrites it.
    """
    if isinstance(raw, SourceProduct):
        return raw.digest
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.fast = True
    pickler.dump(raw)
    return digest_bytes(buffer.getbuffer())


def transform_product(raw: Any, digest: int | None = None) -> ProductRows:
    """Validate one raw product and flatten it into rows; raise ``InvalidProduct`` if it is bad.

    Optional fields that are absent or null become NULL; present values are kept exactly
    (decimals are never rounded, text is never trimmed), and list order becomes ``position``.
    ``digest`` is the product's ``content_hash`` when the caller has already computed it.
    """
    if not isinstance(raw, dict):
        raise InvalidProduct(f"expected a product object, got {type(raw).__name__}")
    product_id = raw.get("id")
    if not is_int(product_id) or product_id <= 0 or product_id > INT32[1]:
        raise InvalidProduct(
            f"id: expected a positive integer, got {excerpt(repr(product_id), 60)}"
        )
    try:
        return _flatten(raw, product_id, content_hash(raw) if digest is None else digest)
    except InvalidProduct as exc:
        exc.source_id = product_id
        raise


def _flatten(raw: Mapping[str, Any], product_id: int, digest: int) -> ProductRows:
    """The rows of a product whose id is already known to be valid."""
    dimensions = _object(raw.get("dimensions"), "dimensions")
    meta = _object(raw.get("meta"), "meta")
    product: dict[str, Any] = {
        "id": product_id,
        "title": _text(raw.get("title"), "title", required=True),
        "price": _decimal(raw.get("price"), "price", 12, 2, ZERO, required=True),
        "stock": _integer(raw.get("stock"), "stock"),
        "minimum_order_quantity": _integer(raw.get("minimumOrderQuantity"), "minimumOrderQuantity"),
        "width": _decimal(dimensions.get("width"), "dimensions.width", 10, 2, ZERO),
        "height": _decimal(dimensions.get("height"), "dimensions.height", 10, 2, ZERO),
        "depth": _decimal(dimensions.get("depth"), "dimensions.depth", 10, 2, ZERO),
        "created_at": _timestamp(meta.get("createdAt"), "meta.createdAt"),
        "updated_at": _timestamp(meta.get("updatedAt"), "meta.updatedAt"),
        "barcode": _text(meta.get("barcode"), "meta.barcode", 64),
        "qr_code": _text(meta.get("qrCode"), "meta.qrCode"),
        "content_hash": digest,
    }
    for key, column, max_length in _TEXT_FIELDS:
        product[column] = _text(raw.get(key), key, max_length)
    for key, column, precision, scale, low, high in _DECIMAL_FIELDS:
        product[column] = _decimal(raw.get(key), key, precision, scale, low, high)
    tags = [
        {"product_id": product_id, "position": i, "tag": _text(tag, f"tags[{i}]", required=True)}
        for i, tag in enumerate(_list(raw.get("tags"), "tags"))
    ]
    images = [
        {"product_id": product_id, "position": i, "url": _text(url, f"images[{i}]", required=True)}
        for i, url in enumerate(_list(raw.get("images"), "images"))
    ]
    reviews = [
        _review_row(review, product_id, i)
        for i, review in enumerate(_list(raw.get("reviews"), "reviews"))
    ]
    return ProductRows(product=product, tags=tags, images=images, reviews=reviews)


def _review_row(review: Any, product_id: int, position: int) -> dict[str, Any]:
    """One review as a row; reviews have no natural key, so position identifies them."""
    try:
        # Field names relative to the review; the path is added only if one fails (building
        # "reviews[2].rating" for every field of every review costs more than validating it).
        fields = _object(review, "")
        return {
            "product_id": product_id,
            "position": position,
            "rating": _decimal(fields.get("rating"), ".rating", 3, 2, ZERO, FIVE),
            "comment": _text(fields.get("comment"), ".comment"),
            "date": _timestamp(fields.get("date"), ".date"),
            "reviewer_name": _text(fields.get("reviewerName"), ".reviewerName"),
            "reviewer_email": _text(fields.get("reviewerEmail"), ".reviewerEmail"),
        }
    except InvalidProduct as exc:
        raise InvalidProduct(f"reviews[{position}]{exc.reason}") from None


# --- run bookkeeping --------------------------------------------------------------------------


@dataclass
class RunStats:
    """What a run did; recorded in ``pipeline_runs`` and printed as the summary."""

    pages: int = 0
    extracted: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    seconds: float = 0.0


def start_run(engine: Engine, pipeline: str) -> int:
    """Record a run as started, in its own transaction, and return its id."""
    with write_transaction(engine) as conn:
        started = insert(PipelineRun).values(pipeline=pipeline, status="running")
        run_id = conn.execute(started.returning(PipelineRun.id)).scalar_one()
    return int(run_id)


def finish_run(
    engine: Engine, run_id: int, stats: RunStats, status: str, error: str | None = None
) -> None:
    """Record how a run ended, in its own transaction (so a failed run is still recorded)."""
    values = {name: getattr(stats, name) for name in RunStats.__dataclass_fields__}
    with write_transaction(engine) as conn:
        conn.execute(
            update(PipelineRun)
            .where(PipelineRun.id == run_id)
            .values(status=status, error=error, finished_at=dt.datetime.now(dt.UTC), **values)
        )


def rejection_row(run_id: int, raw: Any, exc: InvalidProduct) -> dict[str, Any]:
    """A ``rejected_records`` row for a bad product; the reason is logged, the payload is not.

    The payload is the product as it arrived, as JSON. Text that UTF-8 cannot hold (a lone
    surrogate) is kept as a JSON escape, so the record can always be stored.
    """
    log.warning("rejected product %s: %s", exc.source_id, exc.reason)
    payload = json.dumps(raw, ensure_ascii=False, default=str)
    if not _is_utf8(payload):
        payload = json.dumps(raw, default=str)
    return {
        "run_id": run_id,
        "source_id": None if exc.source_id is None else str(exc.source_id)[:100],
        "reason": exc.reason,
        "payload": payload,
    }


# --- the basic load: a full refresh -----------------------------------------------------------


def load_products(
    conn: Connection, products: Iterable[Any], run_id: int, stats: RunStats, batch_size: int = 500
) -> None:
    """Replace the catalog with ``products`` inside the caller's transaction.

    Everything is deleted, then the products are inserted in batches as they arrive; the caller
    commits only if all went well, so a rerun never duplicates and a failure changes nothing.
    A product that fails validation, or repeats an id or sku already loaded, is set aside.
    """
    for model in (Review, ProductImage, ProductTag, Product):
        conn.execute(delete(model))
    skus: dict[str, int] = {}
    batch: list[ProductRows] = []
    for raw in products:
        stats.extracted += 1
        try:
            rows = transform_product(raw)
            _claim_sku(skus, rows)
        except InvalidProduct as exc:
            stats.rejected += 1
            conn.execute(insert(RejectedRecord), [rejection_row(run_id, raw, exc)])
            continue
        batch.append(rows)
        if len(batch) >= batch_size:
            stats.inserted += insert_rows(conn, batch)
            batch = []
    stats.inserted += insert_rows(conn, batch)


def _claim_sku(skus: dict[str, int], rows: ProductRows) -> None:
    """Reject a product whose sku another product of this run already has (sku is unique)."""
    sku = rows.product["sku"]
    if sku is None:
        return
    owner = skus.setdefault(sku, rows.id)
    if owner != rows.id:
        raise InvalidProduct(f"sku: {sku!r} is already used by product {owner}", source_id=rows.id)


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


# --- command line -----------------------------------------------------------------------------


def configure_logging(verbose: bool) -> None:
    """Progress to stderr; DEBUG with -v. SQL echo stays off (it would log reviewer data)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("urllib3").setLevel(logging.INFO if verbose else logging.WARNING)


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace | int:
    """Parsed arguments, or the exit code argparse chose (0 for --help, 2 for bad usage)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def open_database(settings: Settings) -> Engine:
    """An engine with the schema in place; a bad URL raises ``ConfigError``."""
    try:
        engine = make_engine(settings.database_url)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigError(f"--database-url / DATABASE_URL is not a usable URL: {exc}") from exc
    create_schema(engine)
    return engine


def one_line(exc: BaseException) -> str:
    """An exception as one line, without a database driver's multi-line detail."""
    detail = getattr(exc, "orig", None) or exc
    lines = str(detail).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def run_full_refresh(settings: Settings, engine: Engine) -> tuple[RunStats, Extraction]:
    """Extract everything and replace the catalog in one transaction; record the run."""
    stats, extraction = RunStats(), Extraction()
    run_id = start_run(engine, "data_pipeline")
    started = time.perf_counter()
    try:
        with DummyJsonClient.from_settings(settings) as client, write_transaction(engine) as conn:
            products = iter_products(
                client, settings.page_size, extraction, concurrency=settings.concurrency
            )
            load_products(conn, products, run_id, stats)
            stats.pages = extraction.pages
            reason = extraction.incomplete_reason()
            if reason:
                raise ExtractionIncomplete(
                    f"extraction incomplete, catalog left as it was: {reason}"
                )
    except (PipelineError, SQLAlchemyError) as exc:
        stats.pages, stats.seconds = extraction.pages, time.perf_counter() - started
        finish_run(engine, run_id, stats, "failed", one_line(exc))
        raise
    stats.seconds = time.perf_counter() - started
    finish_run(engine, run_id, stats, "succeeded")
    return stats, extraction


def main(argv: Sequence[str] | None = None) -> int:
    """Run the basic pipeline; 0 on success, 1 if the run failed, 2 on bad usage."""
    parser = argparse.ArgumentParser(
        description="Load DummyJSON's products into the database: a full refresh, one transaction."
    )
    add_settings_arguments(parser)
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    try:
        settings = resolve_settings(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.verbose)
    log.info("api %s -> database %s", settings.api_url, mask_url(settings.database_url))
    try:
        engine = open_database(settings)
        stats, _ = run_full_refresh(settings, engine)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (PipelineError, SQLAlchemyError) as exc:
        print(f"error: run failed, database unchanged: {one_line(exc)}", file=sys.stderr)
        return 1
    engine.dispose()
    print(
        f"loaded {stats.inserted} products, rejected {stats.rejected}, "
        f"{stats.pages} pages in {stats.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
