"""Exercise 2-1: the production sync, on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import production_pipeline
from etl import bulk
from models import Base, PipelineRun, RejectedRecord
from tools.catalog_state import (
    database_catalog,
    products_written_since,
    row_counts,
    served_catalog,
    write_snapshot,
)
from tools.local_api import FakeDummyJson, Fault, make_product

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--max-retries", "1", "--connect-timeout", "2", "--read-timeout", "5", "--rate-limit", "0"]


def sync(api: FakeDummyJson, database_url: str, *extra: str) -> int:
    return production_pipeline.main(
        ["--api-url", api.url, "--database-url", database_url, "--page-size", "25", *FAST, *extra]
    )


def last_run(engine: Engine) -> PipelineRun:
    with Session(engine) as session:
        run = session.scalars(select(PipelineRun).order_by(PipelineRun.id.desc())).first()
        assert run is not None
        return run


def counts(run: PipelineRun) -> dict[str, int]:
    names = ("inserted", "updated", "unchanged", "deleted", "rejected")
    return {name: getattr(run, name) for name in names}


def test_two_syncs_equal_the_source_and_the_second_writes_no_catalog_row(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    assert sync(api, database_url) == 0
    assert counts(last_run(engine)) == dict(
        inserted=120, updated=0, unchanged=0, deleted=0, rejected=0
    )
    before = write_snapshot(engine)

    assert sync(api, database_url) == 0

    assert products_written_since(engine, before) == set()
    run = last_run(engine)
    assert counts(run) == dict(inserted=0, updated=0, unchanged=120, deleted=0, rejected=0)
    assert run.status == "succeeded"
    assert run.pages == 5
    assert database_catalog(engine) == served_catalog(api.url)


def test_a_changed_product_is_updated_with_its_children_and_the_others_are_untouched(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    assert sync(api, database_url) == 0
    before = write_snapshot(engine)
    api.catalog.touch(5)
    changed = {**make_product(77), "tags": ["only-one"], "reviews": []}
    api.catalog.put(changed)

    assert sync(api, database_url) == 0

    assert products_written_since(engine, before) == {5, 77}
    assert counts(last_run(engine)) == dict(
        inserted=0, updated=2, unchanged=118, deleted=0, rejected=0
    )
    assert database_catalog(engine) == served_catalog(api.url)
    assert database_catalog(engine)[77]["tags"] == ["only-one"]


def test_a_product_removed_from_the_api_is_deleted_with_its_children(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    assert sync(api, database_url) == 0
    api.catalog.delete(3)
    new_id = api.catalog.add()

    assert sync(api, database_url) == 0

    catalog = database_catalog(engine)
    assert 3 not in catalog
    assert new_id in catalog
    assert catalog == served_catalog(api.url)
    assert row_counts(engine)["reviews"] == sum(len(p["reviews"]) for p in catalog.values())
    assert counts(last_run(engine)) == dict(
        inserted=1, updated=0, unchanged=119, deleted=1, rejected=0
    )


def test_a_page_that_keeps_failing_deletes_nothing_and_exits_1(
    api: FakeDummyJson, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(api, database_url) == 0
    before = database_catalog(engine)
    for product_id in range(60, 120):
        api.catalog.delete(product_id)
    api.add_fault(Fault("status", skip=49, status=500, times=-1))

    assert sync(api, database_url, "--allow-mass-delete") == 1

    assert database_catalog(engine) == before
    assert "HTTP 500" in capsys.readouterr().err
    assert last_run(engine).status == "failed"


def test_a_total_that_changes_while_paging_still_syncs_when_no_product_was_skipped(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    assert sync(api, database_url) == 0
    api.catalog.touch(1)
    api.catalog.delete(3)
    api.on_list_request(49, lambda catalog: catalog.delete(10))

    assert sync(api, database_url) == 0

    catalog = database_catalog(engine)
    assert 3 not in catalog  # stale before the run: deleted
    assert 10 in catalog  # read before it went: the next run deletes it
    assert last_run(engine).status == "succeeded"
    assert sync(api, database_url) == 0
    assert database_catalog(engine) == served_catalog(api.url)


def test_a_mass_deletion_over_the_threshold_is_refused_unless_allowed(
    api: FakeDummyJson, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(api, database_url) == 0
    before = database_catalog(engine)
    for product_id in range(1, 21):  # 20 of 120 = 17% > 10%
        api.catalog.delete(product_id)

    assert sync(api, database_url) == 1
    assert database_catalog(engine) == before
    assert "refusing to delete 20 of 120 products" in capsys.readouterr().err

    assert sync(api, database_url, "--max-delete-fraction", "0.2") == 0
    assert database_catalog(engine) == served_catalog(api.url)


def test_allow_mass_delete_lets_a_shrunken_catalog_through(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    assert sync(api, database_url) == 0
    for product_id in range(1, 61):
        api.catalog.delete(product_id)
    assert sync(api, database_url, "--allow-mass-delete") == 0
    assert database_catalog(engine) == served_catalog(api.url)


def test_no_delete_keeps_stale_products(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    assert sync(api, database_url) == 0
    api.catalog.delete(7)
    assert sync(api, database_url, "--no-delete") == 0
    assert 7 in database_catalog(engine)
    assert last_run(engine).deleted == 0


def test_dry_run_reports_what_it_would_do_and_changes_nothing(
    api: FakeDummyJson, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(api, database_url) == 0
    before = database_catalog(engine)
    api.catalog.touch(4)
    api.catalog.delete(9)
    new_id = api.catalog.add()
    capsys.readouterr()

    assert sync(api, database_url, "--dry-run") == 0

    assert database_catalog(engine) == before
    out = capsys.readouterr().out
    assert "would be updated" in out
    assert f"inserted ids, first 1: {new_id}" in out
    assert "updated ids, first 1: 4" in out
    assert "deleted ids, first 1: 9" in out
    run = last_run(engine)
    assert run.status == "dry-run"
    assert counts(run) == dict(inserted=1, updated=1, unchanged=118, deleted=1, rejected=0)


def test_a_bad_product_is_set_aside_and_a_taken_sku_is_rejected(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    api.catalog.put({**make_product(8), "title": ""})
    assert sync(api, database_url) == 0
    api.catalog.put({**make_product(12), "sku": make_product(11)["sku"]})
    assert sync(api, database_url) == 0

    catalog = database_catalog(engine)
    assert 8 not in catalog
    assert catalog[12]["sku"] == make_product(12)["sku"]  # the row from the first run stays
    with Session(engine) as session:
        reasons = {r.source_id: r.reason for r in session.scalars(select(RejectedRecord))}
    assert reasons["8"] == "title: required, but it is empty"
    assert "already used by product 11" in reasons["12"]
    assert last_run(engine).rejected == 2  # 8 is still bad, 12 is rejected


def test_history_lists_the_last_runs(
    api: FakeDummyJson, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(api, database_url) == 0
    assert sync(api, database_url) == 0
    capsys.readouterr()
    assert production_pipeline.main(["--database-url", database_url, "--history", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["id", "pipeline", "started", "(UTC)"]
    assert len(lines) == 3
    assert all("production_pipeline" in line and "succeeded" in line for line in lines[1:])


# --- processes: killed runs and concurrent runs -----------------------------------------------


def start_sync_process(api: FakeDummyJson, database_url: str, *extra: str) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "production_pipeline.py",
        "--api-url",
        api.url,
        "--database-url",
        database_url,
        "--page-size",
        "10",
        "-v",
        *FAST,
        *extra,
    ]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float = 60) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if needle in line:
            return line
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"the sync never logged {needle!r}")


@pytest.mark.parametrize("moment", ["merging", "deleting"])
def test_a_sync_killed_mid_merge_leaves_the_previous_state(
    fake_api: Any, database_url: str, engine: Engine, moment: str
) -> None:
    api = fake_api(products=300)
    assert sync(api, database_url) == 0
    before = database_catalog(engine)
    for product_id in range(1, 301, 2):
        api.catalog.touch(product_id)
    api.catalog.delete(2)

    process = start_sync_process(api, database_url, "--allow-mass-delete")
    wait_for_line(process, moment)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    assert database_catalog(engine) == before
    assert sync(api, database_url) == 0  # the next run recovers
    assert database_catalog(engine) == served_catalog(api.url)


def test_two_concurrent_syncs_run_one_after_the_other(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    api.latency = 0.05  # 12 pages: the first sync holds the lock for at least 0.6 s
    first = start_sync_process(api, database_url, "--concurrency", "1")
    wait_for_line(first, "page at skip=0")
    second = start_sync_process(api, database_url)
    first_out, _ = first.communicate(timeout=120)
    second_out, _ = second.communicate(timeout=120)

    assert first.returncode == 0, first_out
    assert second.returncode == 0, second_out
    with Session(engine) as session:
        runs = list(session.scalars(select(PipelineRun).order_by(PipelineRun.finished_at)))
    assert [counts(run)["inserted"] for run in runs] == [120, 0]
    assert [counts(run)["unchanged"] for run in runs] == [0, 120]
    assert database_catalog(engine) == served_catalog(api.url)


def test_a_second_sync_gives_up_with_a_clear_message_after_the_lock_timeout(
    api: FakeDummyJson, postgres_url: str
) -> None:
    api.latency = 0.2
    first = start_sync_process(api, postgres_url, "--concurrency", "1")
    wait_for_line(first, "page at skip=0")
    second = start_sync_process(api, postgres_url, "--lock-timeout", "0.5")
    second_out, _ = second.communicate(timeout=60)
    first.communicate(timeout=120)
    assert second.returncode == 1
    assert "another sync is running against this database" in second_out
    assert first.returncode == 0


def test_copy_text_escapes_every_value_of_a_column_that_needs_it_and_writes_nulls() -> None:
    columns = [c for c in Base.metadata.tables["reviews"].columns if c.name != "loaded_at"]
    stamp = dt.datetime(2024, 5, 23, 8, 56, 21, 618000, tzinfo=dt.UTC)
    rows: list[dict[str, Any]] = [
        {"product_id": 1, "position": 0, "rating": Decimal("4.50"), "comment": "plain",
         "date": stamp, "reviewer_name": None, "reviewer_email": "a@example.test"},
        {"product_id": 1, "position": 1, "rating": None, "comment": "tab\there\\N\nnew\rline",
         "date": stamp, "reviewer_name": "Zoë", "reviewer_email": None},
        {"product_id": 2, "position": 0, "rating": Decimal(5), "comment": None,
         "date": None, "reviewer_name": "\\", "reviewer_email": "b@example.test"},
    ]  # fmt: skip

    lines = bulk.copy_text(rows, columns).split("\n")

    stamp_text = "2024-05-23 08:56:21.618000+00:00"
    assert [c.name for c in columns] == [
        "product_id", "position", "rating", "comment", "date", "reviewer_name", "reviewer_email"
    ]
    assert lines == [
        f"1\t0\t4.50\tplain\t{stamp_text}\t\\N\ta@example.test",
        f"1\t1\t\\N\ttab\\there\\\\N\\nnew\\rline\t{stamp_text}\tZoë\t\\N",
        "2\t0\t5\t\\N\t\\N\t\\\\\tb@example.test",
        "",
    ]
    assert bulk.copy_text([], columns) == ""
