"""Reliability, round 2: hostile servers, hostile numbers, signals and settings.

Each test pins one way a source or a user can break the promises "loses nothing", "a clear
error" and "a run ends", on a real SQLite file and a real PostgreSQL, against the local
DummyJSON-compatible server (its "body" and "trickle" faults serve what a hostile server would).
"""

from __future__ import annotations

import gzip
import json
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

import data_pipeline
import production_pipeline
from etl.runs import RunStatus, recorded_run
from models import PipelineRun, Product, RejectedRecord, mask_url
from tests.cli import exit_status
from tools.catalog_state import database_catalog, served_catalog
from tools.local_api import FakeDummyJson, Fault, make_product

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--max-retries", "0", "--connect-timeout", "2", "--read-timeout", "5", "--rate-limit", "0"]


def run(main: Any, api_url: str, database_url: str, *extra: str) -> int:
    args = ["--api-url", api_url, "--database-url", database_url, "--page-size", "10"]
    return int(main([*args, *FAST, *extra]))


def last_run(engine: Engine) -> PipelineRun:
    with Session(engine) as session:
        found = session.scalars(select(PipelineRun).order_by(PipelineRun.id.desc())).first()
        assert found is not None
        return found


def page_body(api: FakeDummyJson, replace: dict[str, str] | None = None) -> bytes:
    """The whole catalog as one list page, with literal text replaced (hostile numbers)."""
    products = list(api.catalog.products())
    text = json.dumps({"products": products, "total": len(products), "skip": 0, "limit": 0})
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new)
    return text.encode()


# --- 1. a product without a readable id defers deletions ------------------------------------------


@pytest.mark.parametrize("bad_id", ["5", 5.0, True, None], ids=["text", "float", "bool", "absent"])
def test_a_product_without_a_readable_id_is_never_deleted_and_deletions_wait(
    fake_api: Any, database_url: str, engine: Engine, bad_id: Any, capsys: Any
) -> None:
    api = fake_api(products=30)
    assert run(production_pipeline.main, api.url, database_url) == 0
    before = database_catalog(engine)
    unreadable = {key: value for key, value in make_product(5).items() if key != "id"}
    if bad_id is not None:
        unreadable["id"] = bad_id
    api.catalog.put(unreadable, at_id=5)
    api.catalog.delete(7)  # really gone: its deletion waits for a run that sees every id
    capsys.readouterr()

    assert run(production_pipeline.main, api.url, database_url) == 0

    after = database_catalog(engine)
    assert after[5] == before[5]  # kept whole, children included
    assert 7 in after
    recorded = last_run(engine)
    assert recorded.status == RunStatus.PARTIAL
    assert recorded.deleted == 0
    assert "without a readable id" in (recorded.error or "")
    out = capsys.readouterr().out
    assert "deletions deferred" in out
    with Session(engine) as session:
        reasons = [r.reason for r in session.scalars(select(RejectedRecord))]
    assert any(reason.startswith("id: expected a positive integer") for reason in reasons)

    # The full refresh would drop product 5 with its children: it refuses and changes nothing.
    assert run(data_pipeline.main, api.url, database_url) == 1
    assert database_catalog(engine) == after
    assert last_run(engine).status == RunStatus.FAILED


# --- 2. a total the API cannot mean ---------------------------------------------------------------


def test_an_absurd_total_fails_at_once_in_one_line_without_planning_its_pages(
    fake_api: Any, database_url: str, engine: Engine, capsys: Any
) -> None:
    api = fake_api(products=20)
    assert run(production_pipeline.main, api.url, database_url) == 0
    before = database_catalog(engine)
    huge = page_body(api).replace(b'"total": 20', b'"total": 1000000000000')
    api.add_fault(Fault("body", skip=0, times=-1, body=huge))
    capsys.readouterr()

    started = time.monotonic()
    assert run(production_pipeline.main, api.url, database_url) == 1

    assert time.monotonic() - started < 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-pages" in err[0] and "1000000000000" in err[0]
    assert database_catalog(engine) == before
    assert last_run(engine).status == RunStatus.FAILED


# --- 3. deadlines ---------------------------------------------------------------------------------


def test_a_body_that_trickles_is_abandoned_at_the_request_deadline(
    fake_api: Any, database_url: str, engine: Engine, capsys: Any
) -> None:
    api = fake_api(products=30)
    api.add_fault(Fault("trickle", skip=9, times=-1, seconds=0.2))  # the second page

    started = time.monotonic()
    code = run(production_pipeline.main, api.url, database_url, "--request-deadline", "1.5")

    assert code == 1
    assert time.monotonic() - started < 15
    err = capsys.readouterr().err
    assert "--request-deadline" in err and "Traceback" not in err
    assert database_catalog(engine) == {}
    assert last_run(engine).status == RunStatus.FAILED


def test_a_run_that_outlives_max_run_seconds_stops_and_changes_nothing(
    fake_api: Any, database_url: str, engine: Engine, capsys: Any
) -> None:
    api = fake_api(products=60, latency=0.5)

    started = time.monotonic()
    code = run(
        production_pipeline.main,
        api.url,
        database_url,
        *("--max-run-seconds", "1", "--concurrency", "1"),
    )

    assert code == 1
    assert time.monotonic() - started < 10
    assert "--max-run-seconds" in capsys.readouterr().err
    assert database_catalog(engine) == {}


# --- 4 and 5. signals, and every ending recorded --------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "code", "concurrency"),
    [(signal.SIGINT, 130, "4"), (signal.SIGINT, 130, "1"), (signal.SIGTERM, 143, "4")],
    ids=["sigint-parallel", "sigint-sequential", "sigterm-parallel"],
)
def test_a_signal_stops_the_run_within_seconds_rolls_back_and_is_recorded(
    fake_api: Any, database_url: str, engine: Engine, signum: int, code: int, concurrency: str
) -> None:
    api = fake_api(products=60)
    # Every page after the first stalls for a minute: the workers are stuck in a read.
    for skip in range(9, 60, 10):
        api.add_fault(Fault("stall", skip=skip, times=-1, seconds=60))
    command = [sys.executable, "production_pipeline.py", "--api-url", api.url]
    command += ["--database-url", database_url, "--page-size", "10", "--read-timeout", "50"]
    command += ["--max-retries", "0", "--rate-limit", "0", "--concurrency", concurrency]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 30
    while len(api.list_requests()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the run is inside a stalled read now

    process.send_signal(signum)
    sent = time.monotonic()
    _, err = process.communicate(timeout=30)

    assert time.monotonic() - sent < 5, err
    assert process.returncode == code, err
    assert "Traceback" not in err, err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "database unchanged" in error_lines[0], err
    assert database_catalog(engine) == {}
    recorded = last_run(engine)
    assert recorded.status == RunStatus.INTERRUPTED
    assert recorded.finished_at is not None


def test_an_unexpected_error_is_recorded_as_failed_not_left_running(engine: Engine) -> None:
    class Paging:
        pages = 3

    with pytest.raises(ZeroDivisionError), recorded_run(engine, "test", Paging()):
        _ = 1 / 0

    recorded = last_run(engine)
    assert recorded.status == RunStatus.FAILED
    assert recorded.error == "ZeroDivisionError: division by zero"
    assert recorded.pages == 3


# --- 6 and 7. numbers -----------------------------------------------------------------------------


def test_a_price_too_large_for_any_context_sets_aside_one_product(
    fake_api: Any, database_url: str, engine: Engine
) -> None:
    api = fake_api(products=12)
    api.catalog.put({**make_product(5), "price": 123456.5})
    api.add_fault(Fault("body", skip=0, times=-1, body=page_body(api, {"123456.5": "1e1000000"})))

    assert run(production_pipeline.main, api.url, database_url, "--page-size", "100") == 0

    catalog = database_catalog(engine)
    assert set(catalog) == set(range(1, 13)) - {5}
    with Session(engine) as session:
        reasons = {r.source_id: r.reason for r in session.scalars(select(RejectedRecord))}
    assert reasons == {"5": "price: 1E+1000000 is too large (at most 10 integer digits)"}


def test_a_number_the_decoder_refuses_fails_the_page_cleanly(
    fake_api: Any, database_url: str, engine: Engine, capsys: Any
) -> None:
    api = fake_api(products=12)
    api.catalog.put({**make_product(5), "price": 123456.5})
    body = page_body(api, {"123456.5": "1e99999999999999999999"})
    api.add_fault(Fault("body", skip=0, times=-1, body=body))

    assert run(production_pipeline.main, api.url, database_url, "--page-size", "100") == 1

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        line for line in err.splitlines() if "expected a JSON document" in line
    ]
    assert database_catalog(engine) == {}


def test_float_noise_in_money_is_that_money_and_real_extra_precision_is_refused(
    fake_api: Any, database_url: str, engine: Engine, capsys: Any
) -> None:
    api = fake_api(products=12)
    assert run(production_pipeline.main, api.url, database_url) == 0
    api.catalog.put({**make_product(3), "price": 397.34999999999997})
    api.catalog.put({**make_product(4), "price": 9.999})
    capsys.readouterr()

    assert run(production_pipeline.main, api.url, database_url) == 0

    with Session(engine) as session:
        prices = {pid: price for pid, price in session.execute(select(Product.id, Product.price))}
    assert prices[3] == Decimal("397.35")
    assert prices[4] == Decimal(str(make_product(4)["price"]))  # the previous version stays
    out = capsys.readouterr().out
    assert "float noise rounded to cents in 1 product(s)" in out
    assert "1 stored product(s) keep their previous version" in out

    # The full refresh agrees: 397.35 is loaded, 9.999 is set aside.
    assert run(data_pipeline.main, api.url, database_url) == 0
    with Session(engine) as session:
        assert session.get(Product, 3).price == Decimal("397.35")  # type: ignore[union-attr]
        assert session.get(Product, 4) is None


# --- 8. bodies that inflate -----------------------------------------------------------------------


def test_a_gzip_bomb_fails_the_page_at_the_size_cap(
    fake_api: Any, database_url: str, engine: Engine, capsys: Any
) -> None:
    api = fake_api(products=12)
    bomb = gzip.compress(b'{"products": [' + b" " * (64 * 2**20) + b'], "total": 1}')
    api.add_fault(Fault("body", skip=0, times=-1, body=bomb, content_encoding="gzip"))

    code = run(production_pipeline.main, api.url, database_url, "--max-response-mb", "8")

    assert code == 1
    err = capsys.readouterr().err
    assert "larger than 8 MiB" in err and "Traceback" not in err
    assert database_catalog(engine) == {}


# --- 9. servers that cap their pages --------------------------------------------------------------


def test_a_server_that_caps_its_page_size_is_paged_through_completely(
    fake_api: Any, database_url: str, engine: Engine, capsys: Any
) -> None:
    api = fake_api(products=95, max_limit=20)

    assert run(production_pipeline.main, api.url, database_url, "--page-size", "50") == 0

    uncapped = fake_api(catalog=api.catalog)  # the same catalog, served whole for the comparison
    assert len(database_catalog(engine)) == 95
    assert database_catalog(engine) == served_catalog(uncapped.url)
    assert "extraction: complete" in capsys.readouterr().out
    assert last_run(engine).status == RunStatus.SUCCEEDED


# --- 10. secrets in URLs --------------------------------------------------------------------------


def test_credentials_in_the_api_url_are_never_printed_or_stored(
    fake_api: Any, database_url: str, engine: Engine, capsys: Any
) -> None:
    api = fake_api(products=12)
    api.add_fault(Fault("status", skip=0, status=404, times=-1))
    secret_url = api.url.replace("http://", "http://user:s3cr3t-token@")

    assert run(production_pipeline.main, secret_url, database_url, "-v") == 1
    assert production_pipeline.main(["--database-url", database_url, "--history"]) == 0

    captured = capsys.readouterr()
    assert "user:***@" in captured.err
    assert "s3cr3t-token" not in captured.out + captured.err
    assert "s3cr3t-token" not in (last_run(engine).error or "")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://etl:p@ss@word@db.example/cat", "postgresql://etl:***@db.example/cat"),
        ("https://token@api.example/products", "https://***@api.example/products"),
        ("https://api.example/products?email=a@b", "https://api.example/products?email=a@b"),
        ("sqlite:///products.db", "sqlite:///products.db"),
    ],
)
def test_mask_url_hides_everything_between_the_scheme_and_the_last_at(url: str, shown: str) -> None:
    assert mask_url(url) == shown


# --- 11. settings that are not numbers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--read-timeout", "nan"),
        ("--connect-timeout", "inf"),
        ("--rate-limit", "nan"),
        ("--lock-timeout", "nan"),
        ("--max-delete-fraction", "nan"),
        ("--request-deadline", "-1"),
        ("--max-run-seconds", "inf"),
        ("--max-response-mb", "0"),
        ("--max-pages", "0"),
    ],
)
def test_a_setting_that_is_not_a_finite_number_in_range_exits_2_naming_it(
    flag: str, value: str, sqlite_url: str, capsys: Any
) -> None:
    argv = ["--api-url", "http://127.0.0.1:9", "--database-url", sqlite_url, flag, value]
    assert exit_status(production_pipeline.main, argv) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err


# --- 14. no network -------------------------------------------------------------------------------


def test_a_host_name_that_does_not_resolve_fails_at_once_and_points_to_the_offline_demo(
    sqlite_url: str, capsys: Any
) -> None:
    started = time.monotonic()
    argv = ["--api-url", "http://no-such-host.invalid", "--database-url", sqlite_url]

    assert production_pipeline.main([*argv, "--max-retries", "5"]) == 1

    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert "no-such-host.invalid" in err and "python -m tools.local_api" in err


# --- 13. unique values that move ------------------------------------------------------------------


def test_products_that_exchange_or_hand_on_skus_converge_in_one_run(
    fake_api: Any, database_url: str, engine: Engine
) -> None:
    api = fake_api(products=20)
    assert run(production_pipeline.main, api.url, database_url) == 0
    sku = {pid: make_product(pid)["sku"] for pid in (3, 4, 8, 9)}
    api.catalog.put({**make_product(3), "sku": sku[4]})  # 3 and 4 exchange their skus
    api.catalog.put({**make_product(4), "sku": sku[3]})
    api.catalog.put({**make_product(9), "sku": "handed-on-" + sku[9]})  # 9 hands its sku on
    new_id = api.catalog.add()
    api.catalog.put({**make_product(new_id), "sku": sku[9]})  # ... to a new product
    api.catalog.delete(8)  # 8 is gone: its sku is free for product 10
    api.catalog.put({**make_product(10), "sku": sku[8]})

    assert run(production_pipeline.main, api.url, database_url) == 0

    assert database_catalog(engine) == served_catalog(api.url)
    recorded = last_run(engine)
    assert (recorded.rejected, recorded.inserted, recorded.deleted) == (0, 1, 1)


def test_a_sku_its_owner_keeps_is_refused_to_the_claimant_and_both_stay_as_they_were(
    fake_api: Any, database_url: str, engine: Engine
) -> None:
    api = fake_api(products=12)
    assert run(production_pipeline.main, api.url, database_url) == 0
    before = database_catalog(engine)
    api.catalog.put({**make_product(5), "sku": make_product(6)["sku"]})  # 6 keeps it
    api.catalog.touch(6)  # 6 changes, but not its sku

    assert run(production_pipeline.main, api.url, database_url) == 0

    after = database_catalog(engine)
    assert after[5] == before[5]
    assert after[6]["sku"] == before[6]["sku"] and after[6] != before[6]
    with Session(engine) as session:
        reasons = {r.source_id: r.reason for r in session.scalars(select(RejectedRecord))}
    assert reasons == {"5": f"sku: {make_product(6)['sku']!r} is already used by product 6"}


# --- 5. runs whose process died ------------------------------------------------------------------


def test_a_run_killed_outright_is_shown_and_then_recorded_as_abandoned(
    fake_api: Any, database_url: str, engine: Engine, capsys: Any
) -> None:
    api = fake_api(products=30)
    api.add_fault(Fault("stall", skip=9, times=-1, seconds=60))
    command = [sys.executable, "production_pipeline.py", "--api-url", api.url]
    command += ["--database-url", database_url, "--page-size", "10", "--read-timeout", "50"]
    command += ["--max-retries", "0", "--rate-limit", "0", "--concurrency", "1"]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(api.list_requests()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert last_run(engine).status == RunStatus.RUNNING  # alive: its lock is held

    assert production_pipeline.main(["--database-url", database_url, "--history"]) == 0
    assert " running " in capsys.readouterr().out
    process.kill()
    process.wait(timeout=10)

    assert production_pipeline.main(["--database-url", database_url, "--history"]) == 0
    assert " abandoned " in capsys.readouterr().out
    api.clear_faults()
    assert run(production_pipeline.main, api.url, database_url) == 0
    with Session(engine) as session:
        statuses = list(session.scalars(select(PipelineRun.status).order_by(PipelineRun.id)))
    assert statuses == [RunStatus.ABANDONED, RunStatus.SUCCEEDED]
