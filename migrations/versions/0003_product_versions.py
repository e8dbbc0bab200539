"""Product history: every version of every product, as a type-2 slowly changing dimension.

``product_versions`` holds a product's columns and its tags, images and reviews (plain JSON on
both databases) as they were from ``valid_from`` until ``valid_to`` (NULL: current). The sync
writes it from this revision on; a product already stored gets its first version when it next
changes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    """JSON text on SQLite, JSONB on PostgreSQL (as ``products.extras``)."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Create the versions table, keyed by product and instant, one current version at most."""
    op.create_table(
        "product_versions",
        sa.Column("product_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("category", sa.String(length=100), nullable=True),
        sa.Column("price", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("discount_percentage", sa.Numeric(precision=5, scale=2), nullable=True),
        sa.Column("rating", sa.Numeric(precision=3, scale=2), nullable=True),
        sa.Column("stock", sa.Integer(), nullable=True),
        sa.Column("brand", sa.String(length=200), nullable=True),
        sa.Column("sku", sa.String(length=100), nullable=True),
        sa.Column("weight", sa.Numeric(precision=10, scale=2), nullable=True),
        sa.Column("width", sa.Numeric(precision=10, scale=2), nullable=True),
        sa.Column("height", sa.Numeric(precision=10, scale=2), nullable=True),
        sa.Column("depth", sa.Numeric(precision=10, scale=2), nullable=True),
        sa.Column("warranty_information", sa.Text(), nullable=True),
        sa.Column("shipping_information", sa.Text(), nullable=True),
        sa.Column("availability_status", sa.String(length=50), nullable=True),
        sa.Column("return_policy", sa.Text(), nullable=True),
        sa.Column("minimum_order_quantity", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("barcode", sa.String(length=64), nullable=True),
        sa.Column("qr_code", sa.Text(), nullable=True),
        sa.Column("thumbnail", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.BigInteger(), nullable=False),
        sa.Column("extras", _json(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("images", sa.JSON(), nullable=False),
        sa.Column("reviews", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", "valid_from"),
    )
    op.create_index(
        "ix_product_versions_current",
        "product_versions",
        ["product_id"],
        unique=True,
        sqlite_where=sa.text("valid_to IS NULL"),
        postgresql_where=sa.text("valid_to IS NULL"),
    )


def downgrade() -> None:
    """Drop the versions table (the history goes with it)."""
    op.drop_index("ix_product_versions_current", table_name="product_versions")
    op.drop_table("product_versions")
