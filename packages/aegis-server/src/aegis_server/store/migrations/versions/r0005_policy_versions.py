"""Policy-set versions, and on each decision the version it was made under and its shadow outcomes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# What Alembic reads of a revision script.
__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("cause", sa.String(32), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("rollback_of", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_policy_versions")),
    )
    op.create_index(op.f("ix_policy_versions_digest"), "policy_versions", ["digest"])
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("policy_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("shadow", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("shadow")
        batch.drop_column("policy_version")
    op.drop_index(op.f("ix_policy_versions_digest"), table_name="policy_versions")
    op.drop_table("policy_versions")
