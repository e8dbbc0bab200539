"""Schema evolution end to end: a real SQLite file and a real PostgreSQL, the real local server.

Our schema changes (``python models.py`` upgrades, refuses what it must not touch; the pipelines
refuse an older revision), our mapping changes (each product rewritten once), the API's schema
changes (new, vanished and retyped fields reported; unknown values kept in ``products.extras``;
``--on-drift refuse`` changes nothing).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, delete, func, inspect, select, text
from sqlalchemy.orm import Session

import data_pipeline
import models
import production_pipeline
from models import PipelineRun, Product, RejectedRecord, SourceDrift, alembic_config, make_engine
from tests.cli import exit_status
from tools.catalog_state import (
    database_catalog,
    products_written_since,
    row_counts,
    served_catalog,
    write_snapshot,
)
from tools.local_api import FakeDummyJson, SchemaChange

FAST = ["--max-retries", "0", "--connect-timeout", "2", "--read-timeout", "5", "--rate-limit", "0"]


def sync(api: FakeDummyJson, database_url: str, *extra: str) -> int:
    return production_pipeline.main(
        ["--api-url", api.url, "--database-url", database_url, "--page-size", "25", *FAST, *extra]
    )


def refresh(api: FakeDummyJson, database_url: str, *extra: str) -> int:
    return data_pipeline.main(
        ["--api-url", api.url, "--database-url", database_url, "--page-size", "25", *FAST, *extra]
    )


def last_run(engine: Engine) -> PipelineRun:
    with Session(engine) as session:
        run = session.scalars(select(PipelineRun).order_by(PipelineRun.id.desc())).first()
        assert run is not None
        return run


def drift_rows(engine: Engine, run_id: int) -> set[tuple[Any, ...]]:
    """(change, field, expected, seen, products) of each drift row of a run."""
    query = select(
        SourceDrift.change,
        SourceDrift.field,
        SourceDrift.expected,
        SourceDrift.seen,
        SourceDrift.products,
    ).where(SourceDrift.run_id == run_id)
    with engine.connect() as conn:
        return {tuple(row) for row in conn.execute(query)}


def extras_of(engine: Engine) -> dict[int, Any]:
    """Each product's extras; None only for SQL NULL (never the JSON text 'null')."""
    with engine.connect() as conn:
        stored: dict[int, Any] = dict(conn.execute(select(Product.id, Product.extras)).all())
        nulls = set(conn.scalars(select(Product.id).where(text("extras IS NULL"))))
    assert {i for i, extras in stored.items() if extras is None} == nulls
    return stored


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@pytest.fixture
def first_revision_engine(database_url: str) -> Engine:
    """A database at the first revision, as the releases before migrations left it."""
    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
    return engine


def fill_as_first_release(engine: Engine, api: FakeDummyJson) -> None:
    """The catalog as a first-release sync wrote it: every product, no extras column."""
    batch = []
    for raw in api.catalog.products():
        rows = data_pipeline.transform_product(raw)
        del rows.product["extras"]
        batch.append(rows)
    with engine.begin() as conn:
        data_pipeline.insert_rows(conn, batch)


# --- our schema: migrations --------------------------------------------------------------------


def test_a_first_revision_database_with_data_upgrades_then_syncs_to_equal_the_source(
    api: FakeDummyJson, database_url: str, first_revision_engine: Engine
) -> None:
    engine = first_revision_engine
    fill_as_first_release(engine, api)
    before = row_counts(engine)

    assert models.main(["--database-url", database_url]) == 0

    assert revision_of(engine) == models.head_revision()
    assert row_counts(engine) == before  # the upgrade kept every row
    assert sync(api, database_url) == 0
    assert last_run(engine).updated == 120  # the new mapping rewrites each product once
    assert database_catalog(engine) == served_catalog(api.url)
    assert sync(api, database_url) == 0
    assert last_run(engine).unchanged == 120


def test_a_database_made_before_migrations_is_adopted_and_upgraded(
    api: FakeDummyJson, database_url: str, first_revision_engine: Engine
) -> None:
    engine = first_revision_engine
    fill_as_first_release(engine, api)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))

    assert models.main(["--database-url", database_url]) == 0

    assert revision_of(engine) == models.head_revision()
    assert row_counts(engine)["products"] == 120


def test_the_pipelines_refuse_an_older_revision_and_name_the_upgrade_command(
    api: FakeDummyJson,
    database_url: str,
    first_revision_engine: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for run in (sync, refresh):
        assert run(api, database_url) == 1
        error = capsys.readouterr().err
        assert "revision 0001" in error
        assert "python models.py" in error
    assert revision_of(first_revision_engine) == "0001"
    with first_revision_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(PipelineRun)) == 0


def test_a_database_with_tables_we_did_not_make_is_refused_and_left_alone(
    api: FakeDummyJson, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"))

    assert models.main(["--database-url", database_url]) == 1
    assert "tables this code did not make (customers)" in capsys.readouterr().err
    assert sync(api, database_url) == 1
    assert "customers" in capsys.readouterr().err
    with engine.connect() as conn:
        assert inspect(conn).get_table_names() == ["customers"]


def test_a_products_table_of_another_shape_is_refused_naming_its_columns(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE products (id INTEGER PRIMARY KEY, title TEXT)"))

    assert models.main(["--database-url", database_url]) == 1
    error = capsys.readouterr().err
    assert "table products is not the one any release of this code made" in error
    assert "content_hash" in error


def test_a_revision_newer_than_the_code_is_refused(
    api: FakeDummyJson, engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    assert models.main(["--database-url", database_url]) == 1
    assert "revision 9999, which this code does not know" in capsys.readouterr().err
    assert sync(api, database_url) == 1
    assert revision_of(engine) == "9999"


def test_models_on_a_current_database_does_nothing(
    engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert models.main(["--database-url", database_url]) == 0
    assert "already at the latest revision" in capsys.readouterr().out


# --- our mapping: a new version rewrites each product once ---------------------------------------


def test_a_mapping_change_rewrites_each_product_exactly_once(
    api: FakeDummyJson, database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sync(api, database_url) == 0
    monkeypatch.setattr(data_pipeline, "MAPPING_VERSION", data_pipeline.MAPPING_VERSION + 1)
    before = write_snapshot(engine)

    assert sync(api, database_url) == 0
    assert last_run(engine).updated == 120
    assert len(products_written_since(engine, before)) == 120

    assert sync(api, database_url) == 0
    assert last_run(engine).unchanged == 120


def test_rebuild_rewrites_every_product_and_changes_nothing_else(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    assert sync(api, database_url) == 0
    before = write_snapshot(engine)

    assert sync(api, database_url, "--rebuild") == 0

    assert last_run(engine).updated == 120
    assert len(products_written_since(engine, before)) == 120
    assert database_catalog(engine) == served_catalog(api.url)


# --- the API's schema: drift --------------------------------------------------------------------


def test_new_vanished_and_retyped_fields_are_reported_with_their_counts(
    api: FakeDummyJson,
    database_url: str,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api.catalog.evolve(
        SchemaChange(add=("color", "meta.batch"), drop=("meta.qrCode",), retype=("stock",))
    )

    assert sync(api, database_url) == 0

    run = last_run(engine)
    assert drift_rows(engine, run.id) == {
        ("new", "color", None, "string", 120),
        ("new", "meta.batch", None, "string", 120),
        ("vanished", "meta.qrCode", "string", None, 120),
        ("retyped", "stock", "number", "string", 120),
    }
    assert run.rejected == 120  # a stock of "37" is not a quantity: set aside, as before
    out = capsys.readouterr().out
    assert "new field color (string): 120 product(s), e.g. product 1" in out
    assert "field stock is string, expected number: 120 product(s)" in out


def test_under_keep_a_new_fields_values_are_in_the_json_column_and_queryable(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    assert sync(api, database_url) == 0
    assert set(extras_of(engine).values()) == {None}
    api.catalog.evolve(SchemaChange(add=("color", "meta.batch", "reviews[].likes")))

    assert sync(api, database_url) == 0

    assert last_run(engine).updated == 120
    extras = extras_of(engine)
    product = api.catalog.get(3)
    assert product is not None
    assert extras[3] == {
        "color": "color-3",
        "meta": {"batch": "batch-3"},
        "reviews": [{"likes": "likes-3"} for _ in product["reviews"]],
    }
    color = Product.extras["color"].as_string()  # ->> on PostgreSQL, json_extract on SQLite
    with engine.connect() as conn:
        red = conn.scalars(select(Product.id).where(color == "color-3").order_by(Product.id))
        assert list(red) == [i for i in range(1, 121) if i % 7 == 3]
    assert database_catalog(engine) == served_catalog(api.url)


def test_under_refuse_a_drifting_source_exits_1_and_writes_nothing(
    api: FakeDummyJson, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(api, database_url) == 0
    api.catalog.evolve(SchemaChange(add=("color",)))
    api.catalog.touch(5)
    before = write_snapshot(engine)

    assert sync(api, database_url, "--on-drift", "refuse") == 1

    assert "--on-drift refuse" in capsys.readouterr().err
    assert products_written_since(engine, before) == set()
    run = last_run(engine)
    assert run.status == "refused"
    assert drift_rows(engine, run.id) == {("new", "color", None, "string", 120)}
    assert refresh(api, database_url, "--on-drift", "refuse") == 1
    assert products_written_since(engine, before) == set()


def test_under_ignore_nothing_is_recorded_and_unknown_values_are_dropped(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    api.catalog.evolve(SchemaChange(add=("color",)))

    assert sync(api, database_url, "--on-drift", "ignore") == 0

    assert drift_rows(engine, last_run(engine).id) == set()
    assert set(extras_of(engine).values()) == {None}


def test_switching_the_policy_from_ignore_to_keep_fills_the_extras_once(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    api.catalog.evolve(SchemaChange(add=("color",)))
    assert sync(api, database_url, "--on-drift", "ignore") == 0

    assert sync(api, database_url) == 0

    assert last_run(engine).updated == 120
    assert extras_of(engine)[1] == {"color": "color-1"}


def test_the_full_refresh_keeps_unknown_fields_and_records_drift_too(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    api.catalog.evolve(SchemaChange(add=("reviews[].likes",), drop=("dimensions.depth",)))

    assert refresh(api, database_url) == 0

    run = last_run(engine)
    with_reviews = sum(1 for product in api.catalog.products() if product["reviews"])
    assert drift_rows(engine, run.id) == {
        ("new", "reviews[].likes", None, "string", with_reviews),
        ("vanished", "dimensions.depth", "number", None, 120),
    }
    assert extras_of(engine)[1] == {
        "reviews": [{"likes": "likes-1"} for _ in api.catalog.get(1)["reviews"]]  # type: ignore[index]
    }


def test_an_unknown_field_a_database_cannot_store_sets_the_product_aside(
    api: FakeDummyJson, database_url: str, engine: Engine
) -> None:
    product = api.catalog.get(4)
    assert product is not None
    api.catalog.put({**product, "note": "a\x00b"})
    deep: Any = "bottom"
    for _ in range(40):
        deep = [deep]
    api.catalog.put({**api.catalog.get(5), "nested": deep})  # type: ignore[dict-item]
    api.catalog.put({**api.catalog.get(6), "inf": math.inf, "exact": 0.1 + 0.2})  # type: ignore[dict-item]

    assert sync(api, database_url) == 0

    with engine.connect() as conn:
        reasons = dict(conn.execute(select(RejectedRecord.source_id, RejectedRecord.reason)).all())
    assert reasons.keys() == {"4", "5"}
    nul = "extras.note: contains a NUL character, which a database text cannot hold"
    assert reasons["4"] == nul
    assert reasons["5"] == "extras.nested" + "[0]" * 32 + ": nested deeper than 32 levels"
    # Numbers are kept exactly: as JSON numbers where a float holds them, else as their text.
    assert extras_of(engine)[6] == {"inf": "Infinity", "exact": 0.30000000000000004}


def test_drift_policy_is_validated_and_named(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--on-drift", "evolve", "--database-url", "sqlite:///:memory:"]
    assert exit_status(production_pipeline.main, argv) == 2
    expected = "--on-drift: expected one of keep, refuse, ignore, got 'evolve'"
    assert expected in capsys.readouterr().err


def test_drift_rows_are_deleted_with_their_run(
    api: FakeDummyJson, engine: Engine, database_url: str
) -> None:
    api.catalog.evolve(SchemaChange(add=("color",)))
    assert sync(api, database_url) == 0
    with engine.begin() as conn:
        assert conn.scalar(select(func.count()).select_from(SourceDrift)) == 1
        conn.execute(delete(PipelineRun))
        assert conn.scalar(select(func.count()).select_from(SourceDrift)) == 0
