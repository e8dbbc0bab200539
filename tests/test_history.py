"""Issue 14: product history, a type-2 slowly changing dimension, on SQLite and PostgreSQL.

Every insert, update and delete of a product closes its current version and opens a new one
(a delete only closes); the as-of view of the versions equals what the API served at each run.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import time
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import production_pipeline
from etl.bulk import VERSIONED_COLUMNS
from etl.history import versions_of
from models import PipelineRun, Product, ProductVersion
from tests.cli import exit_status
from tools.catalog_state import database_catalog, served_catalog, versioned_catalog
from tools.local_api import FakeDummyJson

# A review's date in a version: ISO-8601 in UTC.
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\+00:00")
FAST = ["--max-retries", "1", "--connect-timeout", "2", "--read-timeout", "5", "--rate-limit", "0"]


def sync(api: FakeDummyJson, database_url: str, *extra: str) -> int:
    args = ["--api-url", api.url, "--database-url", database_url, "--page-size", "10"]
    return production_pipeline.main([*args, *FAST, *extra])


def timed_sync(api: FakeDummyJson, database_url: str, *extra: str) -> tuple[dt.datetime, ...]:
    """A sync that must succeed, with an instant just before it and one just after it."""
    before = now()
    assert sync(api, database_url, *extra) == 0
    return before, now()


def now() -> dt.datetime:
    time.sleep(0.002)  # instants on either side of a run never equal the run's own
    return dt.datetime.now(dt.UTC)


def all_versions(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        query = select(ProductVersion.__table__).order_by(
            ProductVersion.product_id, ProductVersion.valid_from
        )
        return [tuple(row) for row in conn.execute(query)]


def run_ids(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return list(session.scalars(select(PipelineRun.id).order_by(PipelineRun.id)))


def test_the_version_chain_of_a_product_changed_three_times_then_deleted_is_exact(
    fake_api: Any, database_url: str, engine: Engine
) -> None:
    api = fake_api(products=30)
    served: list[tuple[dt.datetime, dict[int, Any]]] = []  # after each run, the source then
    first = timed_sync(api, database_url)
    served.append((first[1], served_catalog(api.url)))
    for _ in range(3):
        api.catalog.touch(5)
        _, after = timed_sync(api, database_url)
        served.append((after, served_catalog(api.url)))
    api.catalog.delete(5)
    deleted_between = timed_sync(api, database_url)
    served.append((deleted_between[1], served_catalog(api.url)))

    with engine.connect() as conn:
        chain = versions_of(conn, 5)
    runs = run_ids(engine)
    assert [version.run_id for version in chain] == runs[:4]  # insert, then three changes
    for earlier, later in itertools.pairwise(chain):
        assert earlier.valid_to == later.valid_from  # no gap, no overlap
    assert chain[0].valid_from > first[0]
    closed = chain[-1].valid_to
    assert closed is not None and deleted_between[0] < closed < deleted_between[1]  # kept
    assert [version.stock for version in chain] == [
        served[i][1][5]["stock"] for i in range(4)
    ]
    with engine.connect() as conn:
        assert len(versions_of(conn, 6)) == 1  # never changed: one version, still current
    # The as-of view, whole, at each instant between runs: what the API served at that run.
    for instant, catalog in served:
        assert versioned_catalog(engine, instant) == catalog
    assert 5 not in versioned_catalog(engine, served[-1][0])
    assert versioned_catalog(engine, first[0]) == {}  # before the first run: nothing yet


def test_a_sync_with_no_change_writes_no_version_and_a_deletion_only_closes(
    fake_api: Any, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    api = fake_api(products=30)
    assert sync(api, database_url) == 0
    before = all_versions(engine)
    capsys.readouterr()

    assert sync(api, database_url) == 0

    assert all_versions(engine) == before
    assert "history:" not in capsys.readouterr().out
    api.catalog.delete(7)
    assert sync(api, database_url) == 0
    after = all_versions(engine)
    assert len(after) == len(before)
    closed = [row for row in after if row[0] == 7]
    assert len(closed) == 1 and closed[0][2] is not None  # valid_to set, the version kept
    assert "history: 0 product version(s) opened, 1 closed" in capsys.readouterr().out


def test_no_history_writes_no_version_and_the_next_run_brings_history_in_step(
    fake_api: Any, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    api = fake_api(products=30)
    assert sync(api, database_url) == 0
    api.catalog.delete(7)
    api.catalog.touch(3)
    assert sync(api, database_url, "--no-history") == 0
    with engine.connect() as conn:
        assert versions_of(conn, 7)[-1].valid_to is None  # history did not see it go
        assert len(versions_of(conn, 3)) == 1
    api.catalog.add()  # product 31
    capsys.readouterr()

    _, after = timed_sync(api, database_url)

    assert "history: 1 product version(s) opened, 1 closed" in capsys.readouterr().out
    with engine.connect() as conn:
        assert versions_of(conn, 7)[-1].valid_to is not None  # closed by the next run
        assert len(versions_of(conn, 31)) == 1
        assert len(versions_of(conn, 3)) == 1  # changed unseen: it shows at its next change
    catalog = versioned_catalog(engine, after)
    assert set(catalog) == set(database_catalog(engine))


def test_a_run_without_history_that_swaps_products_is_caught_up_by_the_next(
    fake_api: Any, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # Product 7 leaves and 31 arrives in a run without history: as many current versions as
    # products, yet one belongs to no product and one product has none.
    api = fake_api(products=30)
    assert sync(api, database_url) == 0
    seven = api.catalog.get(7)
    assert seven is not None
    api.catalog.delete(7)
    api.catalog.add()  # product 31
    assert sync(api, database_url, "--no-history") == 0
    api.catalog.put(seven)  # and 7 comes back
    capsys.readouterr()

    _, after = timed_sync(api, database_url)

    assert "history: 2 product version(s) opened, 1 closed" in capsys.readouterr().out
    with engine.connect() as conn:
        first, second = versions_of(conn, 7)
        assert first.valid_to == second.valid_from and second.valid_to is None
        assert len(versions_of(conn, 31)) == 1
    assert versioned_catalog(engine, after) == served_catalog(api.url)


def test_the_catch_up_builds_the_same_versions_as_the_runs_that_wrote_the_products(
    fake_api: Any, database_url: str, engine: Engine
) -> None:
    # A run opens versions batch by batch as it writes; the catch-up after runs without
    # history opens them all at once. Both must hold the same document, in one stable form
    # whatever the session's time zone.
    api = fake_api(products=30)
    assert sync(api, in_another_time_zone(database_url)) == 0
    written_by_the_run = version_documents(engine)
    with engine.begin() as conn:
        conn.execute(delete(ProductVersion))

    assert sync(api, database_url) == 0  # every product unversioned: caught up

    assert version_documents(engine) == written_by_the_run
    reviews = [review for document in written_by_the_run.values() for review in document[-1]]
    assert reviews and all(ISO_UTC.fullmatch(review["date"]) for review in reviews)


def in_another_time_zone(database_url: str) -> str:
    """On PostgreSQL, the same database through sessions whose time zone is not UTC."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return database_url
    options = f"{url.query.get('options', '')} -ctimezone=Asia/Kolkata".strip()
    return url.update_query_dict({"options": options}).render_as_string(hide_password=False)


def version_documents(engine: Engine) -> dict[int, tuple[Any, ...]]:
    """Each product's current version, all but when it began and the run that wrote it."""
    versions = ProductVersion.__table__
    kept = [c for c in versions.columns if c.name not in ("product_id", "valid_from", "run_id")]
    with engine.connect() as conn:
        query = select(versions.c.product_id, *kept).where(versions.c.valid_to.is_(None))
        return {row[0]: tuple(row[1:]) for row in conn.execute(query)}


def test_history_begins_for_every_stored_product_at_the_first_run_that_keeps_it(
    fake_api: Any, database_url: str, engine: Engine
) -> None:
    api = fake_api(products=30)
    assert sync(api, database_url, "--no-history") == 0  # as a database before revision 0003
    assert all_versions(engine) == []

    _, after = timed_sync(api, database_url)

    assert versioned_catalog(engine, after) == served_catalog(api.url)
    before = all_versions(engine)
    assert sync(api, database_url) == 0  # in step now: nothing more to write
    assert all_versions(engine) == before


def test_a_rebuild_rewrites_products_but_opens_no_version(
    fake_api: Any, database_url: str, engine: Engine
) -> None:
    api = fake_api(products=30)
    assert sync(api, database_url) == 0
    before = all_versions(engine)
    assert sync(api, database_url, "--rebuild") == 0
    assert all_versions(engine) == before
    assert database_catalog(engine) == served_catalog(api.url)


def test_the_command_line_shows_a_product_as_of_an_instant_and_lists_its_versions(
    fake_api: Any, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    api = fake_api(products=30)
    _, first = timed_sync(api, database_url)
    old = api.catalog.get(5)
    api.catalog.touch(5)
    timed_sync(api, database_url)
    capsys.readouterr()

    assert sync(api, database_url, "--product", "5", "--as-of", first.isoformat()) == 0
    shown = json.loads(capsys.readouterr().out)
    assert old is not None
    assert shown["id"] == 5 and shown["title"] == old["title"]
    assert shown["stock"] == old["stock"] and shown["tags"] == old["tags"]
    assert shown["valid_to"] is not None

    assert sync(api, database_url, "--versions", "5") == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == "product 5: 2 version(s)"
    assert "current" in listing[-1] and str(api.catalog.get(5)["stock"]) in listing[-1]

    assert sync(api, database_url, "--product", "5", "--as-of", "2001-01-01") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "product 5 has no version at 2001-01-01" in err[0]
    assert exit_status(production_pipeline.main, ["--as-of", "2001-01-01"]) == 2
    args = ["--database-url", database_url, "--product", "5", "--as-of", "yesterday"]
    assert exit_status(production_pipeline.main, args) == 2


def test_a_version_repeats_every_product_column(engine: Engine) -> None:
    versions = ProductVersion.__table__.columns
    for name in VERSIONED_COLUMNS:
        column = Product.__table__.columns[name]
        assert type(versions[name].type) is type(column.type), name
        assert versions[name].nullable == column.nullable, name
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ProductVersion)).scalar_one() == 0
