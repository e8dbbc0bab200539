"""Issue 7: bad configuration, secrets and privacy, checked by running the real command lines.

Each CLI (``models.py``, ``data_pipeline.py``, ``production_pipeline.py``) runs as a subprocess
with a bad setting and must answer with one ``error:`` line naming the problem, exit 2 (bad
configuration) or 1 (the run failed), and no traceback. Every run is given a database URL with a
distinctive password; nothing any of them prints may contain it. Verbose runs must not print
reviewer emails or SQL; TLS certificates are verified.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from etl.client import DummyJsonClient
from etl.settings import Settings, open_database
from models import create_schema, make_engine
from tools.local_api import FakeDummyJson, make_product

ROOT = Path(__file__).resolve().parent.parent
CLIS = ("models.py", "data_pipeline.py", "production_pipeline.py")
PIPELINES = ("data_pipeline.py", "production_pipeline.py")
PASSWORD = f"Sup3r-{uuid.uuid4().hex[:10]}-p@ss/w:rd%"
SECRETS = (PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD))
NO_API = "http://127.0.0.1:9"  # nothing listens: a run that gets past the database fails here
FAST = ["--max-retries", "0", "--connect-timeout", "2", "--read-timeout", "5", "--rate-limit", "0"]
EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(\.[\w-]+)+")


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def everything(self) -> str:
        return self.out + self.err

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def run_cli(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> Run:
    """Run a CLI from ``cwd`` (so no ``.env`` or ``products.db`` of the checkout is used)."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return Run(completed.returncode, completed.stdout, completed.stderr)


def database_args(script: str, url: str, api_url: str = NO_API) -> list[str]:
    if script == "models.py":
        return ["--database-url", url, "-v"]
    return ["--database-url", url, "--api-url", api_url, "-v", *FAST]


def assert_fails_in_one_line(run: Run, code: int, *words: str) -> None:
    """Exit ``code``, exactly one ``error:`` line naming the problem, no traceback, no secret."""
    assert "Traceback" not in run.everything, run.err
    assert run.code == code, run.err
    assert len(run.error_lines) == 1, run.err
    assert any(word in run.error_lines[0] for word in words), run.error_lines[0]
    assert_no_secret(run)


def assert_no_secret(run: Run) -> None:
    for secret in SECRETS:
        assert secret not in run.everything


# --- PostgreSQL roles with a password ---------------------------------------------------------


@dataclass
class PasswordRole:
    url: str  # the right password
    wrong_password_url: str
    password_enforced: bool  # False when the server trusts every local connection


@pytest.fixture(scope="module")
def password_role(postgres_server_url: str) -> Iterator[PasswordRole]:
    """A login role with ``PASSWORD`` and its own schema on the test PostgreSQL.

    The throwaway server trusts local connections; to test a wrong password for real, a rule
    asking this role (only) for its password is added to its ``pg_hba.conf`` for the module.
    """
    role = f"etl_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    server = make_url(postgres_server_url)
    url = server.set(username=role, password=PASSWORD)
    wrong = server.set(username=role, password=f"not-{PASSWORD}")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD :password"), {"password": PASSWORD})
        conn.execute(text(f"CREATE SCHEMA {role} AUTHORIZATION {role}"))
        hba = Path(conn.execute(text("SHOW hba_file")).scalar_one())
    original = None
    if not os.environ.get("TEST_DATABASE_URL") and os.access(hba, os.W_OK):
        original = hba.read_text()
        rules = "".join(
            f"{kind} all {role} {address} scram-sha-256\n"
            for kind, address in (("local", ""), ("host", "127.0.0.1/32"), ("host", "::1/128"))
        )
        hba.write_text(rules + original)
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_reload_conf()"))
    enforced = _password_is_checked(wrong.render_as_string(hide_password=False))
    try:
        yield PasswordRole(
            url=url.render_as_string(hide_password=False),
            wrong_password_url=wrong.render_as_string(hide_password=False),
            password_enforced=enforced,
        )
    finally:
        if original is not None:
            hba.write_text(original)
        with admin.connect() as conn:
            if original is not None:
                conn.execute(text("SELECT pg_reload_conf()"))
            conn.execute(text(f"DROP SCHEMA {role} CASCADE"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def _password_is_checked(wrong_url: str, wait: float = 5.0) -> bool:
    """Whether the server refuses a wrong password (a reload takes a moment to apply)."""
    deadline = time.monotonic() + wait
    while True:
        engine = create_engine(wrong_url)
        try:
            with engine.connect():
                pass
        except Exception:  # noqa: BLE001 (any refusal will do)
            return True
        finally:
            engine.dispose()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


# --- bad configuration ------------------------------------------------------------------------

BAD_URLS = {
    "malformed": ("not a database url", 2, ("not a usable URL",)),
    "unknown scheme": (f"mongodb://etl:{quote(PASSWORD, safe='')}@localhost/db", 2, ("plugin",)),
    "unreachable host": (
        f"postgresql://etl:{quote(PASSWORD, safe='')}@127.0.0.1:1/products",
        1,
        ("Connection refused", "could not connect"),
    ),
    "missing directory": ("sqlite:////nonexistent-dir/catalog.db", 1, ("unable to open",)),
}


@pytest.mark.parametrize("script", CLIS)
@pytest.mark.parametrize("case", list(BAD_URLS))
def test_a_bad_database_url_fails_in_one_line_naming_it(
    script: str, case: str, tmp_path: Path
) -> None:
    url, code, words = BAD_URLS[case]

    assert_fails_in_one_line(
        run_cli(script, *database_args(script, url), cwd=tmp_path), code, *words
    )


@pytest.mark.parametrize("script", CLIS)
def test_a_non_numeric_port_is_bad_configuration(script: str, tmp_path: Path) -> None:
    url = f"postgresql://etl:{quote(PASSWORD, safe='')}@localhost:fivefour/products"

    run = run_cli(script, *database_args(script, url), cwd=tmp_path)

    assert_fails_in_one_line(run, 2, "not a usable URL")


@pytest.mark.parametrize("script", CLIS)
def test_wrong_credentials_fail_in_one_line_without_the_password(
    script: str, password_role: PasswordRole, tmp_path: Path
) -> None:
    # The throwaway server is made to check this role's password; a shared one may trust all.
    assert password_role.password_enforced or os.environ.get("TEST_DATABASE_URL")
    if password_role.password_enforced:
        url, words = password_role.wrong_password_url, ("password authentication failed",)
    else:  # a server that trusts everyone still refuses a role that does not exist
        url = make_url(password_role.url).set(username="no_such_role_7").render_as_string(False)
        words = ('role "no_such_role_7" does not exist',)

    run = run_cli(script, *database_args(script, url), cwd=tmp_path)

    assert_fails_in_one_line(run, 1, *words)
    assert f"not-{PASSWORD}" not in run.everything


def _read_only_sqlite(tmp_path: Path, with_schema: bool) -> str:
    path = tmp_path / "catalog.db"
    if with_schema:
        engine = make_engine(f"sqlite:///{path}")
        create_schema(engine)
        engine.dispose()
    else:
        path.touch()
    # File permissions do not stop root (CI), so SQLite's own read-only mode is used.
    return f"sqlite:///file:{path}?mode=ro&uri=true"


@pytest.mark.parametrize("script", CLIS)
def test_a_read_only_sqlite_database_fails_in_one_line(script: str, tmp_path: Path) -> None:
    url = _read_only_sqlite(tmp_path, with_schema=script != "models.py")

    run = run_cli(script, *database_args(script, url), cwd=tmp_path)

    assert_fails_in_one_line(run, 1, "readonly database")


@pytest.mark.parametrize("script", CLIS)
def test_a_read_only_postgresql_database_fails_in_one_line(
    script: str, postgres_url: str, tmp_path: Path
) -> None:
    url = make_url(postgres_url)
    options = f"{url.query['options']} -cdefault_transaction_read_only=on"
    read_only = url.set(query={**url.query, "options": options}, password=PASSWORD)

    run = run_cli(script, *database_args(script, read_only.render_as_string(False)), cwd=tmp_path)

    assert_fails_in_one_line(run, 1, "read-only transaction")


@pytest.mark.parametrize("script", PIPELINES)
@pytest.mark.parametrize(
    "api_url, code, word",
    [
        ("ftp://dummyjson.com", 2, "expected an http(s) URL"),
        ("dummyjson.com/products", 2, "expected an http(s) URL"),
        (NO_API, 1, "Connection refused"),
    ],
)
def test_a_bad_api_url_fails_in_one_line_naming_it(
    script: str, api_url: str, code: int, word: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"

    run = run_cli(script, *database_args(script, url, api_url), cwd=tmp_path)

    assert_fails_in_one_line(run, code, word)


# --- secrets and privacy ----------------------------------------------------------------------


def test_no_cli_prints_the_password_of_a_working_postgresql_url(
    password_role: PasswordRole, tmp_path: Path
) -> None:
    runs = []
    with FakeDummyJson(products=40) as api:
        api.catalog.put({**make_product(3), "price": -1})  # a rejection, logged
        for script in CLIS:
            runs.append(
                run_cli(script, *database_args(script, password_role.url, api.url), cwd=tmp_path)
            )
        runs.append(
            run_cli(
                "production_pipeline.py",
                "--history",
                cwd=tmp_path,
                env={"DATABASE_URL": password_role.url},
            )
        )
        runs.append(
            run_cli(
                "production_pipeline.py",
                *database_args("production_pipeline.py", password_role.url, NO_API),
                cwd=tmp_path,
            )
        )

    assert [run.code for run in runs] == [0, 0, 0, 0, 1]
    assert "***" in runs[0].out  # models.py says which database, masked
    assert "sync finished" in runs[2].out
    for run in runs:
        assert_no_secret(run)
    engine = make_engine(password_role.url)
    try:
        with engine.connect() as conn:
            recorded = " ".join(
                str(row) for row in conn.execute(text("SELECT * FROM pipeline_runs"))
            )
        assert "Connection refused" in recorded
        assert PASSWORD not in recorded
    finally:
        engine.dispose()


@pytest.mark.parametrize("script", PIPELINES)
def test_a_password_given_in_the_environment_is_not_printed(script: str, tmp_path: Path) -> None:
    url = f"postgresql://etl:{quote(PASSWORD, safe='')}@127.0.0.1:1/products"

    run = run_cli(script, "--api-url", NO_API, "-v", cwd=tmp_path, env={"DATABASE_URL": url})

    assert_fails_in_one_line(run, 1, "Connection refused")
    assert "etl:" not in run.err or "etl:***@127.0.0.1" in run.err  # shown masked, if at all


def _catalog_with_reviewers(api: FakeDummyJson) -> None:
    api.catalog.put({**make_product(2), "price": "free"})  # rejected, its reviews with it
    review = {
        "rating": 5,
        "comment": "ok",
        "reviewerName": "Ann",
        "reviewerEmail": "ann@private.example",
    }
    api.catalog.put({**make_product(4), "reviews": [review]})
    api.catalog.put({**make_product(5), "title": "", "reviews": [review]})


@pytest.mark.parametrize("script", PIPELINES)
def test_a_verbose_run_logs_no_reviewer_email_and_no_sql(
    script: str, database_url: str, tmp_path: Path
) -> None:
    with FakeDummyJson(products=60) as api:
        _catalog_with_reviewers(api)
        run = run_cli(script, *database_args(script, database_url, api.url), cwd=tmp_path)

    assert run.code == 0, run.err
    assert "rejected product 2" in run.err  # verbose logging really ran
    assert EMAIL.search(run.everything) is None
    for sql in ("INSERT INTO", "SELECT ", "COPY ", "DELETE FROM"):
        assert sql not in run.everything


@pytest.mark.parametrize("script", PIPELINES)
def test_a_reviewer_email_of_the_wrong_type_is_not_logged(script: str, tmp_path: Path) -> None:
    review = {"rating": 4, "reviewerName": "Bo", "reviewerEmail": ["bo@private.example"]}
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    with FakeDummyJson(products=10) as api:
        api.catalog.put({**make_product(6), "reviews": [review]})
        run = run_cli(script, *database_args(script, url, api.url), cwd=tmp_path)

    assert run.code == 0, run.err
    assert "rejected product 6" in run.err
    assert "bo@private.example" not in run.everything


def test_the_client_verifies_tls_certificates() -> None:
    assert DummyJsonClient().session.verify is True
    assert (
        DummyJsonClient.from_settings(Settings(api_url="https://x.example")).session.verify is True
    )


def test_sql_echo_is_off_unless_asked_for(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    assert make_engine(url).echo is False
    engine = open_database(Settings(database_url=url, verbose=True))
    assert engine.echo is False
    engine.dispose()


class _TlsServer:
    """An HTTPS server with a self-signed certificate, serving an empty catalog."""

    def __init__(self, cert: Path, key: Path) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps({"products": [], "total": 0, "skip": 0, "limit": 0}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the refused handshakes are the point

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def self_signed(tmp_path: Path) -> Iterator[Callable[[], _TlsServer]]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    servers: list[_TlsServer] = []

    def start() -> _TlsServer:
        servers.append(_TlsServer(cert, key))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_a_self_signed_certificate_is_refused_and_accepted_once_trusted(
    self_signed: Callable[[], _TlsServer], tmp_path: Path
) -> None:
    server = self_signed()
    args = database_args("production_pipeline.py", f"sqlite:///{tmp_path / 'c.db'}", server.url)

    refused = run_cli("production_pipeline.py", *args, cwd=tmp_path)
    trusted = run_cli(
        "production_pipeline.py",
        *args,
        cwd=tmp_path,
        env={"REQUESTS_CA_BUNDLE": str(tmp_path / "cert.pem")},
    )

    assert_fails_in_one_line(refused, 1, "CERTIFICATE_VERIFY_FAILED", "certificate verify failed")
    assert trusted.code == 0, trusted.err


def test_env_example_lists_every_setting_the_pipelines_read() -> None:
    from etl.settings import _SETTING_SOURCES  # noqa: PLC0415 (the one list of settings)

    listed = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert {env_name for _, env_name, _ in _SETTING_SOURCES} <= listed
