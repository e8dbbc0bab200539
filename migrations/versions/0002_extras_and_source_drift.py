"""Keep what the mapping does not know, and record how the source drifts.

``products.extras`` holds the values of source fields the mapping does not map (JSON text on
SQLite, JSONB on PostgreSQL; NULL when there are none). ``source_drift`` records, per run, each
field that appeared, vanished or changed type. Existing products get their extras on the next
sync: this release's mapping version differs, so each product is rewritten once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the extras column (nullable: no rewrite of the table) and the drift table."""
    op.add_column(
        "products",
        sa.Column("extras", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    )
    op.create_table(
        "source_drift",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(length=20), nullable=False),
        sa.Column("field", sa.Text(), nullable=False),
        sa.Column("expected", sa.String(length=100), nullable=True),
        sa.Column("seen", sa.String(length=100), nullable=True),
        sa.Column("products", sa.Integer(), nullable=False),
        sa.Column("example_id", sa.Integer(), nullable=True),
        sa.Column(
            "seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(["run_id"], ["pipeline_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_source_drift_run_id"), "source_drift", ["run_id"], unique=False)


def downgrade() -> None:
    """Drop both (the extras' values go with the column)."""
    op.drop_index(op.f("ix_source_drift_run_id"), table_name="source_drift")
    op.drop_table("source_drift")
    op.drop_column("products", "extras")
