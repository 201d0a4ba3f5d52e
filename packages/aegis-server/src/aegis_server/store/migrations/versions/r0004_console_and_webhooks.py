"""The reviewer console's sessions, webhook endpoints, and the durable outbox of webhook events with their
deliveries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


# What Alembic reads of a revision script.
__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _row_id() -> sa.Column[int]:
    return sa.Column(
        "row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("endpoint_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("capability_glob", sa.String(200), nullable=True),
        sa.Column("min_risk", sa.Float(), nullable=True),
        sa.Column("body_format", sa.String(16), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("endpoint_id", name="pk_webhook_endpoints"),
    )
    op.create_table(
        "webhook_events",
        _row_id(),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("decision_id", sa.String(100), nullable=False),
        sa.Column("capability", sa.String(200), nullable=False),
        sa.Column("risk_score", sa.Float(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("row_id", name="pk_webhook_events"),
        sa.UniqueConstraint("event_id", name="uq_webhook_events_event_id"),
    )
    op.create_index("ix_webhook_events_dispatched_at_row_id", "webhook_events", ["dispatched_at", "row_id"])
    op.create_index("ix_webhook_events_decision_id", "webhook_events", ["decision_id"])
    op.create_table(
        "webhook_deliveries",
        _row_id(),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("row_id", name="pk_webhook_deliveries"),
        sa.ForeignKeyConstraint(
            ["event_id"], ["webhook_events.event_id"], name="fk_webhook_deliveries_event_id_webhook_events"
        ),
        sa.UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_id_endpoint_id"),
    )
    op.create_index(
        "ix_webhook_deliveries_status_next_attempt_at", "webhook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index("ix_webhook_deliveries_endpoint_id_row_id", "webhook_deliveries", ["endpoint_id", "row_id"])
    op.create_table(
        "console_sessions",
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_hash", name="pk_console_sessions"),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("console_sessions")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_events")
    op.drop_table("webhook_endpoints")
