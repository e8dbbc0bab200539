"""Shared fixtures: a real SQLite file, a real PostgreSQL, a real local DummyJSON server.

PostgreSQL comes from ``TEST_DATABASE_URL`` when it is set; otherwise the session starts a
throwaway server with the ``pgserver`` package, so a fresh machine needs no set-up and the
PostgreSQL tests never skip. Each test gets its own schema (its own ``search_path``), so tests
never see each other's tables and a shared server is never wiped.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from models import create_schema, make_engine
from tools.local_api import FakeDummyJson
from tools.throwaway_postgres import postgres_server

# Some tests stop a child process with SIGINT, as Ctrl-C would. A test run started in the
# background by a non-interactive shell (`cmd &`) ignores SIGINT, and a child would inherit that
# and never see it; Python's own handler in this process makes children start with the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """The URL of the PostgreSQL server the tests use (never skipped)."""
    with postgres_server() as url:
        yield url


def _url_with_schema(server_url: str, schema: str) -> str:
    """The server URL whose connections use ``schema`` first (libpq ``options``)."""
    url = make_url(server_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    query = dict(url.query)
    query["options"] = f"-csearch_path={schema}"
    return url.set(query=query).render_as_string(hide_password=False)


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A URL into a fresh, empty schema of the test PostgreSQL, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(_url_with_schema(postgres_server_url, "public"))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _url_with_schema(postgres_server_url, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A URL to a new SQLite file."""
    return f"sqlite:///{tmp_path / 'catalog.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each database test runs twice: on a real SQLite file and on a real PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param.replace('postgresql', 'postgres')}_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the test database with the schema created."""
    engine = make_engine(database_url)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def fake_api() -> Iterator[Callable[..., FakeDummyJson]]:
    """A factory of started local DummyJSON servers, all stopped after the test."""
    servers: list[FakeDummyJson] = []

    def start(**kwargs: Any) -> FakeDummyJson:
        server = FakeDummyJson(**kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def api(fake_api: Callable[..., FakeDummyJson]) -> FakeDummyJson:
    """A local DummyJSON server with 120 products."""
    return fake_api(products=120)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local Spark session with Iceberg for every test of the Spark job (the JVM takes
    seconds to start). Skipped only where Java or the job's requirements are missing, with the
    reason, and never under CI=true: CI installs both."""
    from scale.session import SparkSettings, java_missing_reason, start_session  # noqa: PLC0415

    reason = java_missing_reason()
    try:
        import pyspark  # noqa: F401, PLC0415
    except ImportError:
        reason = reason or "pyspark is missing: python -m pip install -r scale/requirements.txt"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Spark tests cannot run under CI: {reason}")
        pytest.skip(reason)
    scratch = tmp_path_factory.mktemp("spark")
    settings = SparkSettings(
        master="local[2]", driver_memory="1g", shuffle_partitions=1, local_dir=scratch
    )
    session = start_session(settings, app_name="products-etl-tests")
    # Test data is tiny: compiling generated code costs more than it saves, so Spark interprets
    # every plan (the same results; about half the time per query on tests' data).
    session.conf.set("spark.sql.codegen.wholeStage", "false")
    session.conf.set("spark.sql.codegen.factoryMode", "NO_CODEGEN")
    yield session
    session.stop()
