"""Configuration, resolved once: flag > environment > ``.env`` > default; and what it opens."""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError

from etl.drift import DriftPolicy
from etl.errors import ConfigError, SchemaMismatch
from models import DEFAULT_DATABASE_URL, SchemaError, create_schema, make_engine, mask_url

DEFAULT_API_URL = "https://dummyjson.com"
# DummyJSON allows 100 requests per 10 s per client; 9 a second stays under it with room to spare.
DEFAULT_RATE_LIMIT = 9.0
# No real catalog needs more pages than this at any page size; a larger announced total is refused
# before a page is planned (100,000 pages of 100 is ten million products).
DEFAULT_MAX_PAGES = 100_000
MAX_SECONDS = 86_400.0  # the longest timeout any setting accepts: a day
# One response may be this large once decompressed: a page of 100 products is about 200 KB, and
# the whole of DummyJSON's catalog in one answer (limit=0) well under 1 MB.
DEFAULT_MAX_RESPONSE_MB = 256
# Requests a run may spend re-reading the products a shifting catalog made paging skip (one
# shift needs one re-read unless the catalog moves by more than a page between two requests).
DEFAULT_MAX_REREADS = 100


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
    max_pages: int = DEFAULT_MAX_PAGES
    request_deadline: float | None = None  # None: four read timeouts
    max_run_seconds: float = 0.0  # 0: no run deadline
    max_response_mb: float = DEFAULT_MAX_RESPONSE_MB
    on_drift: DriftPolicy = DriftPolicy.KEEP
    max_rereads: int = DEFAULT_MAX_REREADS
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
    ("max_pages", "MAX_PAGES", int),
    ("request_deadline", "HTTP_REQUEST_DEADLINE", float),
    ("max_run_seconds", "MAX_RUN_SECONDS", float),
    ("max_response_mb", "HTTP_MAX_RESPONSE_MB", float),
    ("on_drift", "ON_DRIFT", DriftPolicy),
    ("max_rereads", "MAX_REREADS", int),
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
    parser.add_argument(
        "--max-pages",
        help=f"refuse an announced total that needs more pages than this (env MAX_PAGES; "
        f"default {DEFAULT_MAX_PAGES})",
    )
    parser.add_argument(
        "--request-deadline",
        help="seconds one response may take in all, however it trickles "
        "(env HTTP_REQUEST_DEADLINE; default 4 read timeouts)",
    )
    parser.add_argument(
        "--max-run-seconds",
        help="stop a run, changing nothing, after this many seconds (env MAX_RUN_SECONDS; "
        "default 0 = no limit)",
    )
    parser.add_argument(
        "--max-response-mb",
        help=f"largest response, once decompressed, in MiB (env HTTP_MAX_RESPONSE_MB; default "
        f"{DEFAULT_MAX_RESPONSE_MB})",
    )
    parser.add_argument(
        "--on-drift",
        help="when the API's fields differ from the mapping's: keep (record it, keep unknown "
        "fields in products.extras), refuse (record it, exit 1, change nothing) or ignore "
        "(env ON_DRIFT; default keep)",
    )
    parser.add_argument(
        "--max-rereads",
        help="requests a run may spend re-reading what a shifting catalog made paging skip; "
        f"0 = never (env MAX_REREADS; default {DEFAULT_MAX_REREADS})",
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
            expected = f"one of {', '.join(kind)}" if issubclass(kind, Enum) else kind.__name__
            raise ConfigError(f"{origin}: expected {expected}, got {raw!r}") from None
    settings = Settings(**values)
    _validate_settings(settings)
    return settings


def _validate_settings(settings: Settings) -> None:
    """Reject values no run could use, naming the setting."""
    parts = urlsplit(settings.api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"--api-url / API_BASE_URL: expected an http(s) URL, got {mask_url(settings.api_url)!r}"
        )
    check_range("--page-size / PAGE_SIZE", settings.page_size, 1, 10_000)
    name = "--connect-timeout / HTTP_CONNECT_TIMEOUT"
    check_range(name, settings.connect_timeout, 0, MAX_SECONDS)
    check_range("--read-timeout / HTTP_READ_TIMEOUT", settings.read_timeout, 0, MAX_SECONDS)
    check_range("--concurrency / CONCURRENCY", settings.concurrency, 1, 64)
    check_range("--rate-limit / RATE_LIMIT", settings.rate_limit, 0, 10_000, low_open=False)
    check_range("--max-retries / HTTP_MAX_RETRIES", settings.max_retries, 0, 100, low_open=False)
    check_range("--max-pages / MAX_PAGES", settings.max_pages, 1, 10**9)
    if settings.request_deadline is not None:
        name = "--request-deadline / HTTP_REQUEST_DEADLINE"
        check_range(name, settings.request_deadline, 0, MAX_SECONDS)
    name = "--max-run-seconds / MAX_RUN_SECONDS"
    check_range(name, settings.max_run_seconds, 0, 30 * MAX_SECONDS, low_open=False)
    check_range("--max-response-mb / HTTP_MAX_RESPONSE_MB", settings.max_response_mb, 0, 65_536)
    check_range("--max-rereads / MAX_REREADS", settings.max_rereads, 0, 10**6)


def check_range(
    name: str, value: float, low: float, high: float, *, low_open: bool | None = None
) -> None:
    """``value`` is finite and within ``low..high`` (above ``low`` for a float whose ``low`` is 0,
    such as a timeout); else ``ConfigError`` naming the setting. NaN and infinity never pass."""
    if low_open is None:
        low_open = isinstance(value, float) and low == 0
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        bound = f"above {low:g}" if low_open else f"at least {low:g}"
        raise ConfigError(f"{name}: expected a number {bound} and at most {high:g}, got {value}")


def configure_logging(verbose: bool) -> None:
    """Progress to stderr; DEBUG with -v. SQL echo stays off (it would log reviewer data)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("urllib3").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.INFO if verbose else logging.WARNING)


def open_database(settings: Settings) -> Engine:
    """An engine on a database at the latest revision (an empty one gets the schema).

    A bad URL raises ``ConfigError``; a database at an older revision, or one this code did not
    make, raises ``SchemaMismatch`` saying what to do.
    """
    try:
        engine = make_engine(settings.database_url)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigError(f"--database-url / DATABASE_URL is not a usable URL: {exc}") from exc
    try:
        create_schema(engine)
    except SchemaError as exc:
        engine.dispose()
        raise SchemaMismatch(str(exc)) from exc
    return engine
