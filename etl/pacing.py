"""Pacing: one request schedule per client, shared by its threads, that obeys the server's waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import MaxRetryError, NameResolutionError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from etl.errors import Interrupted

MAX_SERVER_PAUSE = 60.0  # longest wait a Retry-After or rate-limit reset may impose, seconds


class RequestPacer:
    """One request schedule shared by every thread of a client.

    It spaces requests to at most ``rate`` a second (0: no spacing), and when the server says
    wait (``Retry-After`` on a 429 or 503, or ``X-RateLimit-Remaining: 0`` until
    ``X-RateLimit-Reset``) it holds back every worker, not only the one that was told.
    """

    def __init__(
        self,
        rate: float = 0.0,
        max_pause: float = MAX_SERVER_PAUSE,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.max_pause = max_pause
        self.cancelled = cancelled if cancelled is not None else threading.Event()
        self._lock = threading.Lock()
        self._next_start = 0.0  # time.monotonic() before which no further request may start
        self._paused_until = 0.0  # the server's last "wait", also for turns already booked

    def wait_turn(self) -> None:
        """Block until this thread may send its next request."""
        with self._lock:
            start = max(time.monotonic(), self._next_start)
            self._next_start = start + self.interval
        while (delay := max(start, self._paused_until) - time.monotonic()) > 0:
            # A pause the server asked for while this thread slept holds it back too; a
            # cancelled client stops waiting at once (its next step raises).
            if self.cancelled.wait(delay):
                return

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

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> PacedRetry:
        """As urllib3's, except that a host name that does not resolve is not retried: it will
        not resolve a second later either, and an offline first run should fail at once."""
        if isinstance(error, NameResolutionError) and _pool is not None:
            raise MaxRetryError(_pool, url or "", error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)

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
        if self.pacer.cancelled.is_set():
            raise Interrupted("cancelled")
        self.pacer.pause(wait)
        self.pacer.wait_turn()
