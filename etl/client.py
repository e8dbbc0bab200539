"""The DummyJSON client: one pooled session, explicit timeouts, paced retries, checked pages."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NameResolutionError

from etl.decoding import decode_json
from etl.errors import ApiError, Interrupted, UnexpectedPayload, excerpt
from etl.pacing import MAX_SERVER_PAUSE, PacedRetry, RequestPacer
from etl.settings import DEFAULT_API_URL, DEFAULT_MAX_RESPONSE_MB, Settings
from models import mask_url

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_AGENT = "products-etl/1.0 (+https://github.com/products-etl; python-requests)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # may follow redirects; writes never do
CONFIRMED_WRITE = frozenset({200, 201})  # the answers to a write that carry what was written
CHUNK_BYTES = 64 * 1024  # a body is read (and decompressed) this much at a time
REQUEST_DEADLINE_READS = 4  # default deadline of one response: this many read timeouts
OFFLINE_HINT = (
    " (no network? the README's offline demo serves a local catalog: "
    "python -m tools.local_api --port 8000, then --api-url http://127.0.0.1:8000)"
)


@dataclass(frozen=True)
class Page:
    """One answer of ``GET /products``."""

    products: list[dict[str, Any]]
    total: int
    skip: int


class DummyJsonClient:
    """A DummyJSON client: one pooled session, explicit timeouts, retries with backoff.

    urllib3 retries connection errors, 429 and 5xx (waiting for ``Retry-After`` when the server
    sends one). A body that breaks off, times out or is not the JSON expected is retried here,
    because urllib3 has already returned the response when that happens. Every request, from
    any thread, goes through one ``RequestPacer``.

    A body is read a piece at a time against a deadline for the whole response (a server that
    trickles a byte at a time never trips the read timeout) and a cap on its decompressed
    size; a run deadline, when set, bounds everything from the client's creation on. A write
    never follows a redirect and counts only when answered 200 or 201. ``cancel()`` stops
    every worker at its next piece, retry or turn. URLs are shown with credentials masked.
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
        request_deadline: float | None = None,
        max_run_seconds: float = 0.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_MB * 2**20,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.backoff_factor = backoff_factor
        self.request_deadline = request_deadline or REQUEST_DEADLINE_READS * read_timeout
        self.run_deadline = time.monotonic() + max_run_seconds if max_run_seconds else None
        self.max_run_seconds = max_run_seconds
        self.max_response_bytes = max_response_bytes
        self.cancelled = threading.Event()
        self.pacer = RequestPacer(rate_limit, cancelled=self.cancelled)
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
            request_deadline=settings.request_deadline,
            max_run_seconds=settings.max_run_seconds,
            max_response_bytes=int(settings.max_response_mb * 2**20),
        )

    def __enter__(self) -> DummyJsonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the pooled connections."""
        self.session.close()

    def cancel(self) -> None:
        """Make every request in flight, and every later one, stop at its next chance."""
        self.cancelled.set()

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
        shown = mask_url(url)
        for attempt in range(self.max_retries + 1):
            try:
                return expect(self._request_once(method, url, shown, payload))
            except UnexpectedPayload as exc:
                exc.url = shown
                if attempt == self.max_retries:
                    raise UnexpectedPayload(
                        f"{method} {shown}: {exc} (after {attempt + 1} attempts)",
                        url=shown,
                        status=exc.status,
                    ) from exc
                delay = self.backoff_factor * 2**attempt
                log.warning("%s %s: %s; retrying in %.1f s", method, shown, exc, delay)
                self._check_deadlines(method, shown)
                if self.cancelled.wait(delay):
                    raise Interrupted(f"{method} {shown}: cancelled") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _request_once(self, method: str, url: str, shown: str, payload: Any) -> Any:
        """One request (urllib3 retries included); broken bodies raise ``UnexpectedPayload``."""
        self._check_deadlines(method, shown)
        self.pacer.wait_turn()
        try:
            # stream=True: the body is read below, so a body that breaks off is told apart
            # from a request that never got an answer. A write never follows a redirect:
            # requests would turn a PUT into a GET on a 302/303 and drop its body on a 301,
            # and the product that came back would look updated.
            response = self.session.request(
                method,
                url,
                json=payload,
                timeout=self.timeout,
                stream=True,
                allow_redirects=method in SAFE_METHODS,
            )
        except requests.RequestException as exc:
            raise ApiError(f"{method} {shown} failed: {_root_cause(exc)}", url=shown) from exc
        self.pacer.observe(response.headers)
        with response:
            _refuse_unconfirmed_write(method, shown, response)
            body = self._read_body(method, shown, response)
        if response.status_code >= 400:
            retried = " after retries" if response.status_code in RETRY_STATUSES else ""
            raise ApiError(
                f"{method} {shown} failed: HTTP {response.status_code}{retried}: {excerpt(body)}",
                url=shown,
                status=response.status_code,
            )
        try:
            return decode_json(body)
        except RecursionError:
            raise UnexpectedPayload(
                "expected a JSON document, got one nested too deeply to decode",
                url=shown,
                status=response.status_code,
            ) from None
        except (ValueError, ArithmeticError) as exc:
            # ArithmeticError: a number such as 1e99999999999999999999 that Decimal refuses.
            raise UnexpectedPayload(
                f"expected a JSON document, got {excerpt(body)!r} ({exc.__class__.__name__}: "
                f"{excerpt(str(exc), 120)})",
                url=shown,
                status=response.status_code,
            ) from exc

    def _read_body(self, method: str, shown: str, response: requests.Response) -> bytes:
        """The decompressed body, read within the response's deadline and size cap.

        ``read1`` returns what one read of the socket (or one step of the decompressor)
        gives, so a body that trickles is timed byte by byte, and a compressed body is
        inflated a bounded piece at a time, never whole.
        """
        deadline = time.monotonic() + self.request_deadline
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise ApiError(
                        f"{method} {shown} failed: the response is larger than "
                        f"{self.max_response_bytes / 2**20:g} MiB once decompressed "
                        "(--max-response-mb); not read further",
                        url=shown,
                        status=response.status_code,
                    )
                if time.monotonic() > deadline:
                    raise UnexpectedPayload(
                        f"the response took longer than {self.request_deadline:g} s "
                        "(--request-deadline) and was abandoned",
                        url=shown,
                        status=response.status_code,
                    )
                self._check_deadlines(method, shown)
                chunks.append(chunk)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise UnexpectedPayload(
                f"the body broke off ({type(exc).__name__})",
                url=shown,
                status=response.status_code,
            ) from exc
        return b"".join(chunks)

    def _check_deadlines(self, method: str, shown: str) -> None:
        """Stop when the client was cancelled or the run's deadline has passed."""
        if self.cancelled.is_set():
            raise Interrupted(f"{method} {shown}: cancelled")
        if self.run_deadline is not None and time.monotonic() > self.run_deadline:
            raise ApiError(
                f"{method} {shown} stopped: the run took longer than {self.max_run_seconds:g} s "
                "(--max-run-seconds)",
                url=shown,
            )

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


def _causes(exc: BaseException) -> list[BaseException]:
    """A requests/urllib3 error and the errors it wraps (``reason``, or a first argument)."""
    chain = [exc]
    while True:
        cause = chain[-1]
        reason = getattr(cause, "reason", None)
        if not isinstance(reason, BaseException):
            reason = cause.args[0] if cause.args else None
        if not isinstance(reason, BaseException):
            return chain
        chain.append(reason)


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, without the pool's boilerplate.

    A host name that does not resolve was not retried (``PacedRetry``); its reason points to
    the offline demo instead.
    """
    chain = _causes(exc)
    text = str(chain[-1])
    # urllib3 prefixes "HTTPConnection(host=..., port=...): "; the address is in the URL already.
    if text.startswith("HTTP") and "): " in text:
        text = text.split("): ", 1)[1]
    if any(isinstance(cause, NameResolutionError) for cause in chain):
        return f"{text}{OFFLINE_HINT}"
    if any(isinstance(cause, MaxRetryError) for cause in chain):
        return f"{text} (retries exhausted)"
    return text


def _refuse_unconfirmed_write(method: str, shown: str, response: requests.Response) -> None:
    """A write answered with a redirect, or a success other than 200/201, was not applied."""
    status = response.status_code
    if method in SAFE_METHODS or status >= 400 or status in CONFIRMED_WRITE:
        return
    answered = f"{method} {shown} failed: HTTP {status} {response.reason}"
    if response.is_redirect:
        where = mask_url(excerpt(response.headers.get("Location", ""), 80))
        message = (
            f"{answered}, a redirect to {where}; a write never follows a redirect, "
            "so nothing was applied"
        )
    else:
        message = f"{answered}; only 200 or 201 with the product written confirms a write"
    raise ApiError(message, url=shown, status=status)


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


def fetch_pages_in_order(
    client: DummyJsonClient, plan: Iterable[tuple[int, int]], concurrency: int
) -> Generator[Page]:
    """Fetch the planned ``(skip, limit)`` pages, at most ``concurrency`` in flight, in order."""
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
    except GeneratorExit:
        pool.shutdown(wait=False, cancel_futures=True)  # the caller stopped early (empty page)
        raise
    except BaseException:
        # A failed page, Ctrl-C or SIGTERM: the workers still fetching stop at their next
        # chunk or turn, and nobody waits for them (a stalled read would hold the run).
        client.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
