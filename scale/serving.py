"""The serving database's golden products, fed only what changed (PostgreSQL or SQLite).

``publish`` applies gold's change set the way the sync applies a run (``etl.bulk``): in one
transaction under the writer's lock, the changed rows are written into a staging table (COPY on
PostgreSQL, batched inserts on SQLite), a guard refuses retirements beyond the allowed fraction
of the served products, then one set-based upsert and one delete apply them, and the published
run number moves by compare-and-set. A publish that fails leaves the database as it was; the
next one sends everything changed since the last run that was published.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    delete,
    false,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from etl.bulk import RowWriter, take_writer_lock
from etl.errors import SyncAborted
from models import write_transaction

log = logging.getLogger(__name__)

metadata = MetaData()
golden_products = Table(
    "golden_products",
    metadata,
    Column("golden_id", BigInteger, primary_key=True, autoincrement=False),
    Column("golden_key", String(300), nullable=False, unique=True),
    Column("gtin", String(14)),
    Column("title", Text),
    Column("description", Text),
    Column("brand", Text),
    Column("category", Text),
    Column("best_price", Numeric(12, 2)),
    Column("currency", String(3)),
    Column("best_price_source", String(64)),
    Column("price_outliers", Integer),
    Column("total_stock", Integer),
    Column("availability", String(16)),
    Column("offer_count", Integer),
    Column("source_count", Integer),
    Column("content_hash", BigInteger, nullable=False),
    Column("reconcile_run", BigInteger, nullable=False),
    Column("loaded_at", DateTime(timezone=True), server_default=func.now()),
)
publish_state = Table(
    "golden_publish_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("reconcile_run", BigInteger, nullable=False),
)
PUBLISHED_COLUMNS = [c.name for c in golden_products.columns if c.name != "loaded_at"]
STAGED_COLUMNS = [*PUBLISHED_COLUMNS, "retired"]


@dataclass(frozen=True)
class PublishCounts:
    """What one publish sent."""

    since_run: int
    upserted: int
    retired: int

    def line(self) -> str:
        """One summary line."""
        return (
            f"serving: {self.upserted:,} golden products upserted, {self.retired:,} retired "
            f"(changes since run {self.since_run})"
        )


def create_serving_tables(engine: Engine) -> None:
    """Create the serving tables that are missing."""
    metadata.create_all(engine, checkfirst=True)


def published_run(conn: Connection) -> int:
    """The last reconcile run the serving database has applied (0 before the first)."""
    value = conn.execute(select(publish_state.c.reconcile_run)).scalar()
    return int(value or 0)


def _staging_table(conn: Connection) -> Table:
    """A temporary table shaped like ``golden_products`` plus a ``retired`` flag, without keys."""
    postgres = conn.dialect.name == "postgresql"
    options: dict[str, Any] = {"postgresql_on_commit": "DROP"} if postgres else {}
    columns = [Column(name, golden_products.c[name].type) for name in PUBLISHED_COLUMNS]
    stage = Table(
        "stage_golden_products",
        MetaData(),
        *columns,
        Column("retired", Boolean, nullable=False),
        prefixes=["TEMPORARY"],
        **options,
    )
    stage.drop(conn, checkfirst=True)
    stage.create(conn)
    return stage


def _apply_staged(conn: Connection, stage: Table) -> None:
    """Upsert the staged active rows, then delete the staged retired ones: set-based, two
    statements (the idiom of ``etl.bulk``)."""
    upsert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    # "WHERE retired = false" also lets SQLite tell the upsert's ON CONFLICT from a join's ON.
    rows = select(*(stage.c[name] for name in PUBLISHED_COLUMNS)).where(stage.c.retired == false())
    statement = upsert(golden_products).from_select(PUBLISHED_COLUMNS, rows)
    statement = statement.on_conflict_do_update(
        index_elements=[golden_products.c.golden_id],
        set_={
            **{name: statement.excluded[name] for name in PUBLISHED_COLUMNS if name != "golden_id"},
            "loaded_at": func.current_timestamp(),
        },
    )
    conn.execute(statement)
    retired = select(stage.c.golden_id).where(stage.c.retired == true())
    conn.execute(delete(golden_products).where(golden_products.c.golden_id.in_(retired)))


def _advance(conn: Connection, since_run: int, to_run: int) -> None:
    """Move the published run from ``since_run`` to ``to_run``, or fail if another publisher
    moved it first (compare-and-set)."""
    if since_run == 0 and conn.execute(select(func.count()).select_from(publish_state)).scalar():
        raise SyncAborted("another publisher wrote golden_publish_state meanwhile; nothing changed")
    if since_run == 0:
        conn.execute(insert(publish_state).values(id=1, reconcile_run=to_run))
        return
    moved = conn.execute(
        update(publish_state)
        .where(publish_state.c.id == 1, publish_state.c.reconcile_run == since_run)
        .values(reconcile_run=to_run)
    )
    if moved.rowcount != 1:
        raise SyncAborted("another publisher moved golden_publish_state meanwhile; nothing changed")


def publish(
    engine: Engine,
    reconcile_run: int,
    changes_since: Callable[[int], Iterable[Sequence[dict[str, Any]]]],
    *,
    max_retire_fraction: float = 0.1,
    allow_mass_retire: bool = False,
    lock_timeout: float = 30.0,
) -> PublishCounts:
    """Apply the golden products changed since the last published run, in one transaction.

    ``changes_since(run)`` yields batches of gold rows (dicts with ``status``) changed after
    ``run``. Retiring more than ``max_retire_fraction`` of the served products refuses the
    publish (``SyncAborted``; nothing changes) unless ``allow_mass_retire``.
    """
    create_serving_tables(engine)
    with write_transaction(engine) as conn:
        take_writer_lock(conn, lock_timeout)
        since = published_run(conn)
        stage = _staging_table(conn)
        writer = RowWriter(conn)
        upserted = 0
        try:
            for batch in changes_since(since):
                rows = [_staged_row(row, reconcile_run) for row in batch]
                upserted += sum(not row["retired"] for row in rows)
                writer.write(stage, rows)
        finally:
            writer.close(raise_errors=False)
        writer.close()
        served = conn.execute(select(func.count()).select_from(golden_products)).scalar() or 0
        retiring = _served_retirements(conn, stage)
        if retiring and not allow_mass_retire and retiring > max_retire_fraction * served:
            raise SyncAborted(
                f"{retiring:,} of {served:,} served golden products would be retired (more than "
                f"{max_retire_fraction:.0%}); nothing changed (allow it with --allow-mass-retire)"
            )
        _apply_staged(conn, stage)
        _advance(conn, since, reconcile_run)
    return PublishCounts(since_run=since, upserted=upserted, retired=retiring)


def _served_retirements(conn: Connection, stage: Table) -> int:
    """How many served golden products the staged retirements remove."""
    retired = select(stage.c.golden_id).where(stage.c.retired == true())
    query = select(func.count()).where(golden_products.c.golden_id.in_(retired))
    return int(conn.execute(query).scalar() or 0)


def _staged_row(row: dict[str, Any], reconcile_run: int) -> dict[str, Any]:
    """A gold row as a staging row: the published columns, the run, and whether it retires."""
    staged = {name: row.get(name) for name in PUBLISHED_COLUMNS}
    staged["reconcile_run"] = row.get("changed_run", reconcile_run)
    staged["retired"] = row["status"] != "active"
    return staged


def read_served(engine: Engine) -> list[dict[str, Any]]:
    """Every served golden product, by id (for tests and checks)."""
    query = select(*(golden_products.c[name] for name in PUBLISHED_COLUMNS))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(golden_products.c.golden_id)).mappings()
        return [dict(row) for row in rows]
