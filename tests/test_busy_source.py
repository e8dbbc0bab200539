"""Issue 14: a sync converges on a source that changes while it is paged.

A shift the page overlap reveals is healed by re-reading the pages it made paging skip; a
picture the re-reads cannot heal is applied as ``partial``, its deletions deferred, and
``--strict`` refuses it as before. On a real SQLite file and a real PostgreSQL, against the
local server's busy mode (products deleted behind the client's offset and new ones appended
while it pages).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import production_pipeline
from etl.runs import RunStatus
from models import PipelineRun
from tools.catalog_state import database_catalog, served_catalog
from tools.local_api import Catalog, FakeDummyJson, Fault

FAST = ["--max-retries", "1", "--connect-timeout", "2", "--read-timeout", "5", "--rate-limit", "0"]
STALE = (3, 50, 90)  # deleted from the source before the run: a complete run deletes them
TOUCHED = (10, 70, 110)  # changed before the run: every run must update them


def sync(api: FakeDummyJson, database_url: str, *extra: str) -> int:
    args = ["--api-url", api.url, "--database-url", database_url, "--page-size", "20"]
    # One page at a time, so each run of a seeded busy server moves the catalog the same way.
    return production_pipeline.main([*args, *FAST, "--concurrency", "1", *extra])


def last_run(engine: Engine) -> PipelineRun:
    with Session(engine) as session:
        run = session.scalars(select(PipelineRun).order_by(PipelineRun.id.desc())).first()
        assert run is not None
        return run


def deleting(*product_ids: int) -> Callable[[Catalog], None]:
    """A catalog change: these products go."""

    def delete(catalog: Catalog) -> None:
        for product_id in product_ids:
            catalog.delete(product_id)

    return delete


def change_the_source(api: FakeDummyJson) -> None:
    for product_id in STALE:
        api.catalog.delete(product_id)
    for product_id in TOUCHED:
        api.catalog.touch(product_id)


def busy_run(
    api: FakeDummyJson, database_url: str, *extra: str
) -> tuple[int, dict[int, Any], dict[int, Any]]:
    """A sync while the catalog moves on every request: its exit code, and the catalog
    served before and after it."""
    start = served_catalog(api.url)
    api.busy(every=1, changes=2, seed=14)
    code = sync(api, database_url, *extra)
    api.busy(0)
    return code, start, served_catalog(api.url)


@pytest.fixture
def synced(
    fake_api: Any, database_url: str, engine: Engine
) -> tuple[FakeDummyJson, dict[int, Any]]:
    """A source of 120 products synced once, then changed; and the catalog as first synced."""
    api = fake_api(products=120)
    assert sync(api, database_url) == 0
    previous = database_catalog(engine)
    change_the_source(api)
    return api, previous


def test_a_run_on_a_moving_catalog_ends_partial_then_a_quiet_run_ends_exact(
    synced: tuple[FakeDummyJson, dict[int, Any]],
    database_url: str,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api, previous = synced
    capsys.readouterr()

    code, start, end = busy_run(api, database_url, "--max-rereads", "0")

    assert code == 0
    after = database_catalog(engine)
    assert set(previous) <= set(after)  # nothing deleted
    for product_id in set(after) | set(start) | set(end):
        # Each product as the run read it, or, in a gap it could not re-read, as it was.
        assert after.get(product_id) in (start.get(product_id), end.get(product_id)) or (
            after.get(product_id) == previous.get(product_id)
        )
    stayed = set(start) & set(end)
    assert sum(after.get(pid) == end[pid] for pid in stayed) > len(stayed) // 2
    run = last_run(engine)
    assert run.status == RunStatus.PARTIAL
    assert run.deleted == 0
    assert "stayed unread" in (run.error or "")
    summary = capsys.readouterr().out
    deferred = next(line for line in summary.splitlines() if "deletions deferred" in line)
    assert "unseen stored product(s) wait for a complete run" in deferred
    assert "--max-rereads 0 used up" in deferred

    # The source falls quiet: the next run is complete and leaves the catalog exact.
    assert sync(api, database_url, "--max-delete-fraction", "0.5") == 0
    assert database_catalog(engine) == served_catalog(api.url)
    assert last_run(engine).status == RunStatus.SUCCEEDED


def test_a_partial_run_applies_what_it_read_and_a_skipped_product_keeps_its_row(
    synced: tuple[FakeDummyJson, dict[int, Any]], database_url: str, engine: Engine
) -> None:
    api, previous = synced
    api.catalog.touch(42)
    # Two products already read go before page three: product 42 slides behind its offset,
    # into a gap that no re-read may close.
    api.on_list_request(39, deleting(5, 6))

    assert sync(api, database_url, "--max-rereads", "0") == 0

    after = database_catalog(engine)
    served = served_catalog(api.url)
    assert after[42] == previous[42]  # not read: as it was, until a run reads it
    assert all(after[pid] == served[pid] for pid in TOUCHED)  # read: up to date
    assert set(previous) <= set(after)  # the stale products and 5 and 6: deletions wait
    assert last_run(engine).status == RunStatus.PARTIAL
    assert sync(api, database_url) == 0  # the source is still now: complete, and exact
    assert database_catalog(engine) == served


def test_shifts_healed_by_re_reading_end_succeeded_with_every_product_seen(
    synced: tuple[FakeDummyJson, dict[int, Any]], database_url: str, engine: Engine
) -> None:
    api, previous = synced

    code, start, end = busy_run(api, database_url, "--max-delete-fraction", "0.5")

    assert code == 0
    run = last_run(engine)
    assert run.status == RunStatus.SUCCEEDED, run.error
    after = database_catalog(engine)
    stayed = set(start) & set(end)
    assert {pid: after.get(pid) for pid in stayed} == {pid: end[pid] for pid in stayed}
    assert not set(STALE) & set(after)  # the stale products are deleted
    for product_id in set(start) - set(end):  # deleted while paging: before or after its read
        assert after.get(product_id) in (None, start[product_id])
    assert run.deleted == len(set(previous) - set(after))


def test_a_deletion_that_skips_a_product_is_re_read_and_the_run_is_exact(
    synced: tuple[FakeDummyJson, dict[int, Any]],
    database_url: str,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api, _ = synced
    # Two products already read go before page three: product 42 slides behind its offset.
    api.on_list_request(39, deleting(5, 6))
    capsys.readouterr()

    assert sync(api, database_url) == 0

    assert last_run(engine).status == RunStatus.SUCCEEDED
    assert "1 shift(s), 1 re-read(s)" in capsys.readouterr().out
    after = database_catalog(engine)
    assert {pid: after[pid] for pid in after if pid not in (5, 6)} == served_catalog(api.url)
    assert sync(api, database_url) == 0  # the next run deletes 5 and 6
    assert database_catalog(engine) == served_catalog(api.url)


def test_strict_refuses_a_picture_the_re_reads_cannot_heal_and_changes_nothing(
    synced: tuple[FakeDummyJson, dict[int, Any]],
    database_url: str,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api, previous = synced
    capsys.readouterr()

    code, _, _ = busy_run(api, database_url, "--max-rereads", "0", "--strict")

    assert code == 1
    assert database_catalog(engine) == previous
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "extraction incomplete, nothing deleted or changed (--strict)" in err[0]
    assert last_run(engine).status == RunStatus.REFUSED


def test_a_page_that_fails_after_every_retry_on_a_moving_catalog_fails_and_changes_nothing(
    synced: tuple[FakeDummyJson, dict[int, Any]], database_url: str, engine: Engine
) -> None:
    api, previous = synced
    api.add_fault(Fault("status", skip=59, status=503, times=-1, retry_after="0"))

    code, _, _ = busy_run(api, database_url, "--max-rereads", "0")

    assert code == 1
    assert database_catalog(engine) == previous
    assert last_run(engine).status == RunStatus.FAILED


def test_the_mass_delete_guard_still_refuses_a_healed_run(
    synced: tuple[FakeDummyJson, dict[int, Any]], database_url: str, engine: Engine
) -> None:
    api, previous = synced
    for product_id in range(20, 40):  # with the three stale ones, 23 of 120 > 10%
        api.catalog.delete(product_id)
    api.on_list_request(39, deleting(5, 6))

    assert sync(api, database_url) == 1

    assert database_catalog(engine) == previous
    assert "refusing to delete" in (last_run(engine).error or "")
