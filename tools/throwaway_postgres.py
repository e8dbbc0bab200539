"""A throwaway PostgreSQL server for tests and benchmarks, from the ``pgserver`` package.

``pgserver`` ships PostgreSQL's binaries in a wheel, so ``pip install -r requirements-dev.txt``
is all a fresh machine needs. The server lives in a temporary directory, listens on a Unix
socket only, and is stopped and deleted when the context exits.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start an empty PostgreSQL server and yield its SQLAlchemy URL (psycopg2 driver)."""
    with tempfile.TemporaryDirectory(prefix="products-etl-pg-") as data_dir:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset, as in CI; harmless here.
            warnings.simplefilter("ignore")
            from pgserver import get_server  # type: ignore[attr-defined]  # noqa: PLC0415

            server = get_server(data_dir, cleanup_mode="stop")
        try:
            yield str(server.get_uri()).replace("postgresql://", "postgresql+psycopg2://", 1)
        finally:
            server.cleanup()


@contextmanager
def postgres_server(variable: str = "TEST_DATABASE_URL") -> Iterator[str]:
    """The server named by the environment ``variable`` when set, else a throwaway one."""
    configured = os.environ.get(variable)
    if configured:
        yield configured
        return
    with throwaway_postgres() as url:
        yield url
