"""Configuration, resolved once: flag > environment > ``.env`` > default; and what it opens."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError

from etl.errors import ConfigError
from models import DEFAULT_DATABASE_URL, create_schema, make_engine

DEFAULT_API_URL = "https://dummyjson.com"
# DummyJSON allows 100 requests per 10 s per client; 9 a second stays under it with room to spare.
DEFAULT_RATE_LIMIT = 9.0


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


def configure_logging(verbose: bool) -> None:
    """Progress to stderr; DEBUG with -v. SQL echo stays off (it would log reviewer data)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("urllib3").setLevel(logging.INFO if verbose else logging.WARNING)


def open_database(settings: Settings) -> Engine:
    """An engine with the schema in place; a bad URL raises ``ConfigError``."""
    try:
        engine = make_engine(settings.database_url)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigError(f"--database-url / DATABASE_URL is not a usable URL: {exc}") from exc
    create_schema(engine)
    return engine
