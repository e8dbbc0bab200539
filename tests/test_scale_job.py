"""The Spark job end to end, in local Spark on real Iceberg tables, real SQLite and PostgreSQL.

One module fixture runs the job the way a user does: three generated sources, run 1 through
the CLI, run 2, then run 2 again; the tests read what each step did, down to Iceberg's snapshot
summaries. The serving database is fed by the change set only, and must equal golden products
computed from scratch.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from models import make_engine
from scale import generate, reconcile
from scale.session import use_catalog
from scale.snapshots import MANIFEST, Snapshot, find_snapshots

# The module fixture runs the job three times; on a busy 2-core machine that takes minutes.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parent.parent
PRODUCTS = 200  # offers per source in run 1
COMPARED = (
    "golden_key",
    "gtin",
    "title",
    "description",
    "brand",
    "category",
    "best_price",
    "currency",
    "best_price_source",
    "price_outliers",
    "total_stock",
    "availability",
    "offer_count",
    "source_count",
    "content_hash",
)


@dataclass
class Reconciled:
    """What the module fixture did, for the tests to read."""

    sources: Path
    warehouse: Path
    sqlite: Engine
    postgres: Engine
    cli_output: str = ""
    run2: Any = None
    rerun: Any = None
    state: dict[str, Any] = field(default_factory=dict)


def snapshots_of(sources: Path, run: int) -> list[Path]:
    return sorted(sources.glob(f"source=*/run={run}"))


def table_snapshots(spark: Any, table: str) -> list[dict[str, Any]]:
    """A table's Iceberg snapshots, oldest first, with their summaries."""
    rows = spark.sql(
        f"SELECT snapshot_id, operation, summary FROM {table}.snapshots ORDER BY committed_at"
    ).collect()
    return [row.asDict() for row in rows]


def retired_offers(spark: Any) -> dict[tuple[str, str], Any]:
    rows = spark.sql(
        "SELECT source_id, source_key, deleted_at FROM silver.offers WHERE deleted_at IS NOT NULL"
    ).collect()
    return {(row[0], row[1]): row[2] for row in rows}


def active_gold(spark: Any) -> list[dict[str, Any]]:
    rows = spark.sql("SELECT * FROM gold.products WHERE status = 'active'").collect()
    return sorted(({k: row[k] for k in COMPARED} for row in rows), key=lambda r: r["golden_key"])


def served(engine: Engine) -> list[dict[str, Any]]:
    from scale.serving import read_served

    rows = [{k: row[k] for k in COMPARED} for row in read_served(engine)]
    return sorted(rows, key=lambda r: r["golden_key"])


def publish_to(engine: Engine, spark: Any, reconcile_run: int) -> Any:
    """The same change set, sent to a second serving database."""
    from scale import gold, serving

    return serving.publish(
        engine,
        reconcile_run,
        lambda since: reconcile.row_batches(gold.changed_since(spark, since)),
    )


@contextlib.contextmanager
def postgres_schema(server_url: str) -> Iterator[Engine]:
    """An engine on a fresh schema of the test PostgreSQL server, dropped afterwards."""
    from sqlalchemy.engine import make_url

    schema = f"scale_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(server_url).set(drivername="postgresql+psycopg2"))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(server_url).set(drivername="postgresql+psycopg2")
    url = url.set(query={**url.query, "options": f"-csearch_path={schema}"})
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module")
def job(
    spark: Any, postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reconciled]:
    """Run 1 (through the CLI), run 2, and run 2 again, publishing to SQLite and PostgreSQL."""
    root = tmp_path_factory.mktemp("scale-job")
    sources = root / "sources"
    generate.generate(sources, PRODUCTS, runs=2, seed=7)
    sqlite_url = f"sqlite:///{root / 'golden.db'}"
    with postgres_schema(postgres_server_url) as postgres:
        state = Reconciled(sources, root / "warehouse", make_engine(sqlite_url), postgres)
        argv = ["--snapshots", *map(str, snapshots_of(sources, 1))]
        argv += ["--warehouse", str(state.warehouse), "--database-url", sqlite_url]
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            assert reconcile.main(argv, spark=spark) == 0
        state.cli_output = output.getvalue()
        publish_to(postgres, spark, 1)
        state.state["silver_after_1"] = table_snapshots(spark, "silver.offers")
        run2 = find_snapshots(snapshots_of(sources, 2))
        state.run2 = reconcile.reconcile(spark, run2, engine=state.sqlite)
        publish_to(postgres, spark, state.run2.reconcile_run)
        state.state["silver_after_2"] = table_snapshots(spark, "silver.offers")
        state.state["gold_after_2"] = table_snapshots(spark, "gold.products")
        state.state["retired_after_2"] = retired_offers(spark)
        state.state["served_after_2"] = served(state.sqlite)
        state.rerun = reconcile.reconcile(spark, run2, engine=state.sqlite)
        yield state
        state.sqlite.dispose()


def test_the_cli_reconciles_three_sources_and_prints_a_summary(job: Reconciled) -> None:
    lines = job.cli_output.splitlines()
    assert lines[0] == "reconcile run 1:"
    for source in ("brand_owner", "distributor", "marketplace"):
        assert any(line.strip().startswith(f"{source} run 1 (complete): ") for line in lines)
    assert re.search(r"gold: [\d,]+ golden products \([\d,]+ new, 0 changed", job.cli_output)
    assert "changes since run 0" in job.cli_output


def test_run_two_inserts_updates_and_retires_offers_and_writes_only_those(
    job: Reconciled,
) -> None:
    counts = job.run2.offers
    assert all(c.unchanged > c.updated > 0 for c in counts)
    assert sum(c.retired for c in counts) > 0
    assert sum(c.inserted for c in counts) > 0
    distributor = next(c for c in counts if c.source_id == "distributor")
    assert distributor.records == distributor.duplicates + sum(
        (distributor.inserted, distributor.updated, distributor.unchanged)
    )
    # Iceberg's own record of the run-2 commits: rows written = rows changed, never the
    # unchanged ones (copy-on-write would have rewritten them with every file they share).
    before = {s["snapshot_id"] for s in job.state["silver_after_1"]}
    commits = [s for s in job.state["silver_after_2"] if s["snapshot_id"] not in before]
    assert len(commits) == len(counts)
    written = sum(int(s["summary"]["added-records"]) for s in commits)
    assert written == sum(c.inserted + c.updated + c.retired for c in counts)
    assert written < sum(c.unchanged for c in counts)


def test_a_rerun_of_the_same_snapshots_changes_nothing(spark: Any, job: Reconciled) -> None:
    use_catalog(spark, job.warehouse)
    assert all(c.inserted == c.updated == c.retired == 0 for c in job.rerun.offers)
    assert [c.unchanged for c in job.rerun.offers] == [
        c.unchanged + c.updated + c.inserted for c in job.run2.offers
    ]
    assert job.rerun.gold.inserted == job.rerun.gold.updated == job.rerun.gold.retired == 0
    assert job.rerun.gold.recomputed == 0  # no offer changed: no golden product recomputed
    assert job.rerun.published.upserted == job.rerun.published.retired == 0
    # No new Iceberg snapshot in silver or gold: nothing was committed, no file written.
    assert table_snapshots(spark, "silver.offers") == job.state["silver_after_2"]
    assert table_snapshots(spark, "gold.products") == job.state["gold_after_2"]
    assert served(job.sqlite) == job.state["served_after_2"]


def test_retired_offers_keep_their_first_soft_delete_stamp(spark: Any, job: Reconciled) -> None:
    use_catalog(spark, job.warehouse)
    retired = job.state["retired_after_2"]
    assert len(retired) == sum(c.retired for c in job.run2.offers)
    assert retired_offers(spark) == retired  # the re-run (a later run start) stamped nothing


def test_the_served_catalog_equals_golden_products_computed_from_scratch(
    spark: Any, job: Reconciled, tmp_path: Path
) -> None:
    from scale.lake import create_tables

    use_catalog(spark, job.warehouse)
    incremental = active_gold(spark)
    use_catalog(spark, tmp_path / "scratch", f"scratch_{uuid.uuid4().hex[:8]}")
    create_tables(spark)
    reconcile.reconcile(spark, find_snapshots(snapshots_of(job.sources, 2)))
    from_scratch = active_gold(spark)
    assert len(from_scratch) > PRODUCTS
    assert incremental == from_scratch
    assert served(job.sqlite) == from_scratch
    assert served(job.postgres) == from_scratch


def silver_rows(spark: Any, rows: list[dict[str, Any]]) -> None:
    """Append offers to ``silver.offers``, defaults filled in (a source's own key, a GTIN...)."""
    import datetime as dt
    from decimal import Decimal

    schema = spark.table("silver.offers").schema
    defaults = {
        "source_id": "s1", "priority": 1, "gtin": None, "mpn": None, "brand": "Acme",
        "title": "A thing", "description": "", "category": "tools", "price": Decimal("9.99"),
        "currency": "USD", "stock": 5, "source_updated_at": dt.datetime(2026, 12, 1),
        "content_hash": 1, "run_id": 1, "deleted_at": None,
    }  # fmt: skip
    full = [{**defaults, **row} for row in rows]
    spark.createDataFrame([tuple(r[f.name] for f in schema) for r in full], schema).writeTo(
        "silver.offers"
    ).append()


def test_gold_recomputes_only_the_clusters_whose_offers_changed_or_moved(
    spark: Any, tmp_path: Path
) -> None:
    from scale.gold import build_gold
    from scale.lake import create_tables

    use_catalog(spark, tmp_path / "warehouse", f"touch_{uuid.uuid4().hex[:8]}")
    create_tables(spark)
    gtins = [generate.gtin13(n) for n in range(1, 14)]
    silver_rows(
        spark,
        [
            # o2 has no GTIN: it joins o1's golden product through brand + MPN (R-M3).
            {"source_key": "o1", "gtin": gtins[0], "brand": "Colombo", "mpn": "CB-250"},
            {"source_key": "o2", "source_id": "s2", "brand": "colombo", "mpn": "cb 250"},
            {"source_key": "o3", "gtin": gtins[1]},
            *({"source_key": f"x{n}", "gtin": gtins[n]} for n in range(3, 13)),
        ],
    )
    first = build_gold(spark, 1)
    assert (first.golden, first.inserted, first.recomputed) == (12, 12, 12)
    # Run 2: o1's GTIN changes (o2 moves with it, itself unchanged), o3 is retired.
    spark.sql(
        f"UPDATE silver.offers SET gtin = '{gtins[2]}', content_hash = 2, run_id = 2 "
        "WHERE source_key = 'o1'"
    )
    spark.sql("UPDATE silver.offers SET deleted_at = now(), run_id = 2 WHERE source_key = 'o3'")
    second = build_gold(spark, 2)
    # Touched: o1's old and new keys, and o3's; the ten others stay as they were.
    assert (second.recomputed, second.inserted, second.retired) == (3, 1, 2)
    assert (second.golden, second.unchanged) == (11, 10)
    summary = table_snapshots(spark, "gold.products")[-1]["summary"]
    assert int(summary["added-records"]) == 3  # one new golden product, two retired
    moved = spark.sql("SELECT * FROM gold.products WHERE changed_run = 2 AND status = 'active'")
    assert [(r["gtin"], r["offer_count"]) for r in moved.collect()] == [(f"0{gtins[2]}", 2)]
    incremental = active_gold(spark)
    offers = spark.table("silver.offers").collect()
    use_catalog(spark, tmp_path / "scratch", f"scratch_{uuid.uuid4().hex[:8]}")
    create_tables(spark)
    silver_rows(spark, [row.asDict() for row in offers])
    build_gold(spark, 1)
    assert incremental == active_gold(spark)


def test_a_source_that_vanishes_mid_run_changes_nothing(
    spark: Any, job: Reconciled, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    use_catalog(spark, job.warehouse)
    snapshots = tmp_path / "run3"
    for folder in snapshots_of(job.sources, 2):
        shutil.copytree(folder, snapshots / folder.parent.name)
    for manifest_path in snapshots.rglob(MANIFEST):
        manifest = json.loads(manifest_path.read_text())
        manifest_path.write_text(json.dumps({**manifest, "run_id": 3}))
    part = next((snapshots / "source=marketplace").glob("part-*.jsonl"))
    lines = part.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[: len(lines) // 2]))  # the source stopped half-way
    argv = ["--snapshots", str(snapshots), "--warehouse", str(job.warehouse)]
    sqlite_url = job.sqlite.url.render_as_string(hide_password=False)
    before = (table_snapshots(spark, "bronze.snapshots"), table_snapshots(spark, "silver.offers"))
    assert reconcile.main([*argv, "--database-url", sqlite_url], spark=spark) == 1
    assert "marketplace run 3: the manifest announces" in capsys.readouterr().err
    part.unlink()  # and now its files are gone altogether
    assert reconcile.main([*argv, "--database-url", sqlite_url], spark=spark) == 1
    assert "holds no part-*.jsonl" in capsys.readouterr().err
    after = (table_snapshots(spark, "bronze.snapshots"), table_snapshots(spark, "silver.offers"))
    assert after == before
    assert served(job.sqlite) == job.state["served_after_2"]


def test_bad_usage_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reconcile.main(["--snapshots", str(tmp_path), "--warehouse", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: --snapshots: no {MANIFEST} in or under {tmp_path}\n"


# --------------------------------------------------------------------------- the silver MERGE


def design_doc_merge() -> str:
    """The silver MERGE as ``data_at_scale_design.md`` quotes it."""
    document = (ROOT / "data_at_scale_design.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", document, flags=re.DOTALL)
    quoted = [block for block in blocks if "MERGE INTO silver.offers" in block]
    assert len(quoted) == 1, "the design doc quotes the silver MERGE exactly once"
    return str(quoted[0])


def test_the_design_doc_quotes_the_jobs_silver_merge_verbatim() -> None:
    from scale.lake import sql_text

    assert design_doc_merge() == sql_text("merge_offers")


@pytest.fixture
def small_lake(spark: Any, tmp_path: Path) -> Iterator[list[Snapshot]]:
    """A catalog of its own holding brand_owner's run 1 (in bronze and silver); yields both
    runs of that source's snapshots."""
    import datetime as dt

    from scale.lake import create_tables, land_snapshots
    from scale.silver import merge_snapshot

    generate.generate(tmp_path / "sources", 300, runs=2, seed=3, sources=1)
    use_catalog(spark, tmp_path / "warehouse", f"small_{uuid.uuid4().hex[:8]}")
    create_tables(spark)
    runs = find_snapshots([tmp_path / "sources"])
    land_snapshots(spark, runs)
    merge_snapshot(spark, runs[0], dt.datetime(2026, 12, 1))
    yield runs


def test_an_incomplete_snapshot_retires_nothing(
    spark: Any, small_lake: list[Snapshot], tmp_path: Path
) -> None:
    import dataclasses
    import datetime as dt

    from scale.silver import merge_snapshot

    run2 = small_lake[1]
    incomplete = dataclasses.replace(
        run2, manifest=dataclasses.replace(run2.manifest, complete=False)
    )
    counts = merge_snapshot(spark, incomplete, dt.datetime(2026, 12, 2))
    assert counts.retired == 0
    assert counts.updated > 0
    assert retired_offers(spark) == {}
    complete = merge_snapshot(spark, run2, dt.datetime(2026, 12, 3))
    assert complete.retired > 0  # the same offers are gone: only a complete snapshot says so
    assert complete.inserted == complete.updated == 0
    assert len(retired_offers(spark)) == complete.retired


def test_the_quoted_merge_runs_on_the_jobs_tables_and_writes_only_its_source(
    spark: Any, small_lake: list[Snapshot]
) -> None:
    import datetime as dt

    from pyspark.sql import functions as F

    from scale.silver import OFFER_COLUMNS

    offers = spark.table("silver.offers")
    live = offers.orderBy("source_key").limit(3).collect()
    changed = (
        spark.createDataFrame(live[:1], offers.schema)
        .withColumn("price", F.col("price") + 1)
        .withColumn("content_hash", F.col("content_hash") + 1)
        .select(*OFFER_COLUMNS, F.lit("upsert").alias("op"))
    )
    gone = spark.createDataFrame(live[1:2], offers.schema).select(
        *OFFER_COLUMNS, F.lit("retire").alias("op")
    )
    changed.unionByName(gone).createOrReplaceTempView("offer_changes")
    before = offers.count()
    args = {"source_id": "brand_owner", "run_id": 2, "run_started_at": dt.datetime(2026, 12, 2)}
    spark.sql(design_doc_merge(), args=args)
    after = {row["source_key"]: row for row in spark.table("silver.offers").collect()}
    assert len(after) == before
    assert after[live[0]["source_key"]]["price"] == live[0]["price"] + 1
    assert after[live[0]["source_key"]]["run_id"] == 2
    assert after[live[1]["source_key"]]["deleted_at"] == dt.datetime(2026, 12, 2)
    assert after[live[2]["source_key"]]["run_id"] == 1  # untouched
    summary = table_snapshots(spark, "silver.offers")[-1]["summary"]
    assert int(summary["added-records"]) == 2  # the two rows it changed, nothing else
    # A second application changes nothing: the update is not newer than the stored run, and
    # the retired offer is not stamped again.
    spark.sql(design_doc_merge(), args={**args, "run_started_at": dt.datetime(2026, 12, 9)})
    again = {row["source_key"]: row for row in spark.table("silver.offers").collect()}
    assert again == after


def test_not_matched_by_source_rewrites_other_sources_files_under_copy_on_write(
    spark: Any, tmp_path: Path
) -> None:
    """Why retirements enter the silver MERGE as rows of its source (§3.2 of the design): a
    ``WHEN NOT MATCHED BY SOURCE`` clause restricted to one source still rewrites the data
    files of the others, on Spark 3.5 + Iceberg 1.10 copy-on-write (the format's default)."""
    use_catalog(spark, tmp_path / "cow", f"cow_{uuid.uuid4().hex[:8]}")
    spark.sql("CREATE NAMESPACE IF NOT EXISTS t")
    spark.sql(
        "CREATE TABLE t.offers (k STRING, src STRING, v INT) USING iceberg PARTITIONED BY (src)"
    )
    spark.sql("INSERT INTO t.offers VALUES ('a', 'x', 1), ('b', 'x', 2), ('c', 'y', 3)")
    spark.createDataFrame([("a", "x", 1)], "k string, src string, v int").createOrReplaceTempView(
        "same"
    )
    spark.sql(
        """MERGE INTO t.offers AS t USING same AS s ON t.k = s.k AND t.src = s.src
        WHEN MATCHED AND s.v <> t.v THEN UPDATE SET t.v = s.v
        WHEN NOT MATCHED BY SOURCE AND t.src = 'x' THEN UPDATE SET t.v = -1"""
    )
    summary = table_snapshots(spark, "t.offers")[-1]["summary"]
    assert summary["deleted-data-files"] == "2"  # source y's file too, with nothing changed in it
    assert summary["added-records"] == "3"
    rows = {row["k"]: row["v"] for row in spark.table("t.offers").collect()}
    assert rows == {"a": 1, "b": -1, "c": 3}
