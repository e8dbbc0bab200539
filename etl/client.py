"""The DummyJSON client: one pooled session, explicit timeouts, paced retries, checked pages."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError

from etl.decoding import decode_json
from etl.errors import ApiError, UnexpectedPayload, excerpt
from etl.pacing import MAX_SERVER_PAUSE, PacedRetry, RequestPacer
from etl.settings import DEFAULT_API_URL, Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_AGENT = "products-etl/1.0 (+https://github.com/products-etl; python-requests)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


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


def fetch_pages_in_order(
    client: DummyJsonClient, plan: Sequence[tuple[int, int]], concurrency: int
) -> Iterator[Page]:
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
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
