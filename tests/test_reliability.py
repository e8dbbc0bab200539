"""Issue 7: the sync loses nothing under faults, kills, concurrent runs and concurrent readers.

The invariants, on SQLite and PostgreSQL: after any run the catalog is the previous state or the
source's; a failed run exits non-zero and is recorded as failed with its reason; nothing is
deleted because of a failure. A small seeded fault campaign (``benchmarks/chaos.py``) checks them
under a random mix of faults; the other tests pin each one with a single, named fault.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import production_pipeline
from benchmarks import chaos
from models import Base, PipelineRun, create_schema, make_engine
from tools.catalog_state import database_catalog, served_catalog
from tools.local_api import FakeDummyJson, Fault, make_product

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--max-retries", "1", "--connect-timeout", "2", "--read-timeout", "5"]
FAST += ["--rate-limit", "0"]


def sync(api: FakeDummyJson, database_url: str, *extra: str) -> int:
    return production_pipeline.main(
        ["--api-url", api.url, "--database-url", database_url, "--page-size", "20", *FAST, *extra]
    )


def runs(engine: Engine) -> list[PipelineRun]:
    with Session(engine) as session:
        return list(session.scalars(select(PipelineRun).order_by(PipelineRun.id)))


def sync_process(api: FakeDummyJson, database_url: str, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "production_pipeline.py", "--api-url", api.url]
    command += ["--database-url", database_url, "--page-size", "10", *FAST, *extra]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


# --- the fault campaign, small --------------------------------------------------------------------


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_seeded_fault_campaign_loses_nothing_and_reports_no_false_success(
    database: str, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("postgres_server_url") if database == "postgresql" else None
    tally = chaos.run_campaign(
        database, trials=7, seed=3, products=100, postgres_server_url=server, progress=None
    )

    assert tally.trials == 7
    assert tally.problems == []
    assert tally.clean, chaos.format_table(tally, 3, 100)
    # Seven trials cycle through every primary fault: each kind of trouble really happened.
    assert sum(tally.faults[kind] for kind in chaos.HTTP_KINDS) > 0
    assert tally.faults["stall"] > 0
    assert tally.faults["dbcut"] + tally.faults["sigkill"] > 0
    assert tally.outcomes["failed cleanly"] > 0
    assert sum(tally.faults[kind] for kind in chaos.HOSTILE_PRODUCTS) > 0


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_busy_trials_of_the_campaign_lose_nothing_while_the_catalog_moves(
    database: str, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("postgres_server_url") if database == "postgresql" else None
    trials = chaos.category_trials("busy", 3)
    tally = chaos.run_campaign(
        database, 3, seed=1, products=100, postgres_server_url=server, only=trials, progress=None
    )

    assert tally.trials == 3
    assert tally.clean, chaos.format_table(tally, 1, 100)
    assert tally.faults["busy"] > 0
    assert tally.outcomes["partial (deletions deferred)"] + tally.outcomes["succeeded"] > 0


def _lossy_sync(api_url: str, database_url: str, concurrency: int) -> list[str]:
    """A broken "sync" for the campaign's self-test: deletes half the catalog, says success."""
    script = (
        "import sys; from sqlalchemy import text; from models import make_engine\n"
        "engine = make_engine(sys.argv[1])\n"
        "with engine.begin() as conn:\n"
        "    conn.execute(text('DELETE FROM products WHERE id % 2 = 0'))\n"
        "print('done')\n"
    )
    return [sys.executable, "-c", script, database_url]


def test_the_campaign_catches_a_sync_that_loses_products_and_claims_success() -> None:
    tally = chaos.run_campaign(
        "sqlite", trials=1, seed=7, products=60, progress=None, command=_lossy_sync
    )

    assert not tally.clean
    assert tally.zero["lost"] >= 25
    assert tally.zero["inconsistent"] == 1
    assert tally.zero["false_success"] == 1
    assert "FAILED" in chaos.format_table(tally, 7, 60)


def test_a_product_changed_while_paging_may_be_at_either_version_but_nothing_else() -> None:
    old, new = {"title": "old"}, {"title": "new"}
    start = {1: old, 2: old, 3: old}
    end = {1: new, 2: old, 4: new}  # 1 touched, 3 deleted, 4 added while paging

    assert chaos.matches_source({1: old, 2: old, 3: old}, start, end)
    assert chaos.matches_source({1: new, 2: old, 4: new}, start, end)
    assert chaos.matches_source({1: old, 2: old, 4: new}, start, end)
    assert not chaos.matches_source({1: new, 4: new}, start, end)  # 2 lost
    assert not chaos.matches_source({1: new, 2: new, 4: new}, start, end)  # 2 made up


# --- one named fault at a time --------------------------------------------------------------------

Inject = Callable[[FakeDummyJson], None]


def _fail_page(fault: Fault) -> Inject:
    return lambda api: api.add_fault(fault)


def _shrink_by_half(api: FakeDummyJson) -> None:
    for product_id in range(21, 81):
        api.catalog.delete(product_id)


FAILURES: dict[str, tuple[Inject, str, str]] = {
    # name: (injection, status recorded, words of the recorded reason)
    "a page answering 500": (
        _fail_page(Fault("status", skip=59, status=500, times=-1)),
        "failed",
        "HTTP 500",
    ),
    "a page answering 429": (
        _fail_page(Fault("status", skip=59, status=429, times=-1, retry_after="0")),
        "failed",
        "HTTP 429",
    ),
    "a body cut in half": (_fail_page(Fault("truncate", skip=59, times=-1)), "failed", "broke off"),
    "a dropped connection": (
        _fail_page(Fault("drop", skip=59, times=-1)),
        "failed",
        "Connection aborted",
    ),
    "a stall beyond the read timeout": (
        _fail_page(Fault("stall", skip=59, times=-1, seconds=1.0)),
        "failed",
        "broke off",
    ),  # run with --read-timeout 0.5
    "a source shrunk by half": (_shrink_by_half, "refused", "refusing to delete"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_run_exits_1_is_recorded_with_its_reason_and_deletes_nothing(
    fake_api: Callable[..., FakeDummyJson],
    database_url: str,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
    failure: str,
) -> None:
    inject, status, reason = FAILURES[failure]
    api = fake_api(products=120)
    assert sync(api, database_url) == 0
    previous = database_catalog(engine)
    for product_id in (7, 8, 9):  # stale: a complete run would delete them
        api.catalog.delete(product_id)
    api.catalog.touch(1)
    api.catalog.add()
    inject(api)
    capsys.readouterr()

    stall = ["--read-timeout", "0.5"] if "stall" in failure else []
    assert sync(api, database_url, *stall) == 1

    assert database_catalog(engine) == previous
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err
    run = runs(engine)[-1]
    assert run.status == status
    assert reason in (run.error or "")
    assert run.finished_at is not None


def test_after_the_failure_the_next_run_completes_the_sync(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    assert sync(api, database_url) == 0
    api.catalog.delete(3)
    api.catalog.touch(4)
    fault = Fault("status", skip=59, status=503, times=-1, retry_after="0")
    api.add_fault(fault)
    assert sync(api, database_url) == 1
    fault.times = 0  # the API recovers

    assert sync(api, database_url) == 0
    assert database_catalog(engine) == served_catalog(api.url)
    assert [run.status for run in runs(engine)] == ["succeeded", "failed", "succeeded"]


def test_a_row_the_database_refuses_during_copy_fails_the_run_cleanly(
    api: FakeDummyJson, postgres_url: str
) -> None:
    engine = make_engine(postgres_url)
    create_schema(engine)
    with engine.begin() as conn:  # a rule the catalog's owner added, which one product breaks
        conn.execute(text("ALTER TABLE products ADD CONSTRAINT no_boom CHECK (title <> 'boom')"))
    api.catalog.put({**make_product(5), "title": "boom"})
    try:
        assert sync(api, postgres_url) == 1

        assert database_catalog(engine) == {}
        run = runs(engine)[-1]
        assert run.status == "failed"
        assert "no_boom" in (run.error or "")
    finally:
        engine.dispose()


# --- concurrent syncs --------------------------------------------------------------------------


@pytest.mark.parametrize("lock_timeout", ["30", "0.2"])
def test_two_syncs_started_at_once_on_postgresql_end_consistent(
    fake_api: Callable[..., FakeDummyJson], postgres_url: str, lock_timeout: str
) -> None:
    api = fake_api(products=150)
    assert sync(api, postgres_url) == 0
    for product_id in range(1, 151, 3):
        api.catalog.touch(product_id)
    api.catalog.delete(2)
    api.catalog.add()
    api.latency = 0.02  # each sync holds the writer's lock for a few tenths of a second

    both = [sync_process(api, postgres_url, "--lock-timeout", lock_timeout) for _ in range(2)]
    outputs = [process.communicate(timeout=120)[0] for process in both]

    codes = sorted(process.returncode for process in both)
    assert codes == [0, 0] if lock_timeout == "30" else codes in ([0, 0], [0, 1]), outputs
    for process, output in zip(both, outputs, strict=True):
        assert "Traceback" not in output
        if process.returncode == 1:
            last = output.strip().splitlines()[-1]
            assert last.startswith("error:")
            assert "another sync is running against this database" in last
    engine = make_engine(postgres_url)
    try:
        assert database_catalog(engine) == served_catalog(api.url)
        statuses = sorted(run.status for run in runs(engine)[1:])
        assert statuses == (
            ["succeeded", "succeeded"] if codes == [0, 0] else ["failed", "succeeded"]
        )
    finally:
        engine.dispose()


def _waiting_backends(admin: Engine, application_name: str) -> int:
    with admin.connect() as conn:
        query = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = :app AND wait_event_type = 'Lock'"
        )
        return int(conn.execute(query, {"app": application_name}).scalar_one())


def test_two_first_syncs_at_once_on_an_empty_postgresql_schema_both_succeed(
    api: FakeDummyJson, postgres_url: str
) -> None:
    # Make the race certain: an open transaction has created the tables but not committed, so
    # both syncs find no table, then both wait on the first CREATE TABLE; then it rolls back.
    url = make_url(postgres_url)
    application_name = "reliability-first-sync"
    sync_url = url.set(query={**url.query, "application_name": application_name})
    blocker = create_engine(postgres_url)
    with blocker.connect() as conn:
        transaction = conn.begin()
        Base.metadata.create_all(conn)
        both = [sync_process(api, sync_url.render_as_string(hide_password=False)) for _ in range(2)]
        deadline = time.monotonic() + 30
        while _waiting_backends(blocker, application_name) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        transaction.rollback()
    outputs = [process.communicate(timeout=120)[0] for process in both]
    blocker.dispose()

    assert [process.returncode for process in both] == [0, 0], outputs


# --- readers during a sync ---------------------------------------------------------------------

# One snapshot of the catalog, read in one transaction: table sizes, sums of fields the sync
# changes, and a digest of every product's content hash.
SNAPSHOT = text(
    "SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM reviews), "
    "(SELECT count(*) FROM product_tags), (SELECT count(*) FROM product_images), "
    "(SELECT coalesce(sum(stock), 0) FROM products), (SELECT coalesce(sum(price), 0) FROM products)"
)


def read_snapshot(engine: Engine) -> tuple[Any, ...]:
    connection = engine.connect()
    if engine.dialect.name == "postgresql":
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
    with connection as conn, conn.begin():
        totals = tuple(conn.execute(SNAPSHOT).one())
        hashes = conn.execute(text("SELECT id, content_hash FROM products ORDER BY id")).all()
        reviews = conn.execute(
            text("SELECT product_id, position, comment FROM reviews ORDER BY product_id, position")
        ).all()
    return (*totals, hash(tuple(map(tuple, hashes))), hash(tuple(map(tuple, reviews))))


def test_a_reader_never_sees_a_half_applied_sync(
    fake_api: Callable[..., FakeDummyJson], database_url: str, engine: Engine
) -> None:
    api = fake_api(products=300)
    assert sync(api, database_url) == 0
    for product_id in range(1, 301, 2):  # 150 updates, merged at the end
        api.catalog.touch(product_id)
    for product_id in (10, 20, 30):  # 3 deletions
        api.catalog.delete(product_id)
    for _ in range(10):  # 10 insertions, written into the catalog tables while paging
        api.catalog.add()
    api.latency = 0.01
    before = read_snapshot(engine)
    seen: list[tuple[Any, ...]] = []
    stop = threading.Event()
    reader_engine = make_engine(database_url)

    def read_until_stopped() -> None:
        while not stop.is_set():
            seen.append(read_snapshot(reader_engine))

    reader = threading.Thread(target=read_until_stopped)
    reader.start()
    try:
        process = sync_process(api, database_url, "--concurrency", "1")
        output, _ = process.communicate(timeout=120)
    finally:
        stop.set()
        reader.join(timeout=60)
        reader_engine.dispose()

    assert process.returncode == 0, output
    after = read_snapshot(engine)
    assert after != before
    assert database_catalog(engine) == served_catalog(api.url)
    assert len(seen) > 20
    half_applied = [snapshot for snapshot in seen if snapshot not in (before, after)]
    assert half_applied == []
    assert seen[0] == before
