"""Initial schema: API keys, server settings, decisions, idempotency keys, executions, the audit chain,
API-managed policies and capabilities.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# What Alembic reads of a revision script.
__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "audit_records",
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("audit_ref", sa.String(length=100), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("decision_id", sa.String(length=100), nullable=True),
        sa.Column("actor_id", sa.String(length=256), nullable=True),
        sa.Column("capability", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("session_id", sa.String(length=256), nullable=True),
        sa.Column("timestamp", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("previous_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_audit_records")),
        sa.UniqueConstraint("audit_ref", name=op.f("uq_audit_records_audit_ref")),
    )
    op.create_index(op.f("ix_audit_records_actor_id_sequence"), "audit_records", ["actor_id", "sequence"], unique=False)
    op.create_index(
        op.f("ix_audit_records_capability_sequence"), "audit_records", ["capability", "sequence"], unique=False
    )
    op.create_index(op.f("ix_audit_records_created_at"), "audit_records", ["created_at"], unique=False)
    op.create_index(
        op.f("ix_audit_records_decision_id_sequence"), "audit_records", ["decision_id", "sequence"], unique=False
    )
    op.create_index(
        op.f("ix_audit_records_event_type_sequence"), "audit_records", ["event_type", "sequence"], unique=False
    )
    op.create_index(op.f("ix_audit_records_outcome_sequence"), "audit_records", ["outcome", "sequence"], unique=False)
    op.create_index(
        op.f("ix_audit_records_session_id_sequence"), "audit_records", ["session_id", "sequence"], unique=False
    )

    op.create_table(
        "capabilities",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_capabilities")),
    )
    op.create_table(
        "decisions",
        sa.Column("row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("decision_id", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("risk_score", sa.Float(), nullable=False),
        sa.Column("constraints", sa.JSON(), nullable=False),
        sa.Column("policy_ids", sa.JSON(), nullable=False),
        sa.Column("timestamp", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("audit_ref", sa.String(length=100), nullable=False),
        sa.Column("actor_id", sa.String(length=256), nullable=False),
        sa.Column("actor_type", sa.String(length=32), nullable=False),
        sa.Column("capability", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=256), nullable=True),
        sa.Column("params_hash", sa.String(length=64), nullable=False),
        sa.Column("parent_decision_id", sa.String(length=100), nullable=True),
        sa.Column("confirmation_token", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.String(length=64), nullable=True),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_used_by", sa.String(length=100), nullable=True),
        sa.Column("review_status", sa.String(length=16), nullable=True),
        sa.Column("review_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewer", sa.String(length=200), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.Column("review_resolved_at", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_decision_id"], ["decisions.decision_id"], name=op.f("fk_decisions_parent_decision_id_decisions")
        ),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_decisions")),
        sa.UniqueConstraint("decision_id", name=op.f("uq_decisions_decision_id")),
    )
    op.create_index(op.f("ix_decisions_actor_id_row_id"), "decisions", ["actor_id", "row_id"], unique=False)
    op.create_index(op.f("ix_decisions_capability_row_id"), "decisions", ["capability", "row_id"], unique=False)
    op.create_index(op.f("ix_decisions_created_at"), "decisions", ["created_at"], unique=False)
    op.create_index(op.f("ix_decisions_outcome_row_id"), "decisions", ["outcome", "row_id"], unique=False)
    op.create_index(op.f("ix_decisions_parent_decision_id"), "decisions", ["parent_decision_id"], unique=False)
    op.create_index(
        op.f("ix_decisions_review_status_review_deadline"),
        "decisions",
        ["review_status", "review_deadline"],
        unique=False,
    )
    op.create_index(op.f("ix_decisions_session_id_row_id"), "decisions", ["session_id", "row_id"], unique=False)

    op.create_table(
        "policies",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_policies")),
    )
    op.create_table(
        "server_settings",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_settings")),
    )
    op.create_table(
        "executions",
        sa.Column("decision_id", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("recorded_at", sa.String(length=64), nullable=False),
        sa.Column("audit_ref", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.decision_id"], name=op.f("fk_executions_decision_id_decisions")
        ),
        sa.PrimaryKeyConstraint("decision_id", name=op.f("pk_executions")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("api_key_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("decision_id", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.decision_id"], name=op.f("fk_idempotency_keys_decision_id_decisions")
        ),
        sa.PrimaryKeyConstraint("api_key_id", "key", name=op.f("pk_idempotency_keys")),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("executions")
    op.drop_table("server_settings")
    op.drop_table("policies")
    op.drop_index(op.f("ix_decisions_session_id_row_id"), table_name="decisions")
    op.drop_index(op.f("ix_decisions_review_status_review_deadline"), table_name="decisions")
    op.drop_index(op.f("ix_decisions_parent_decision_id"), table_name="decisions")
    op.drop_index(op.f("ix_decisions_outcome_row_id"), table_name="decisions")
    op.drop_index(op.f("ix_decisions_created_at"), table_name="decisions")
    op.drop_index(op.f("ix_decisions_capability_row_id"), table_name="decisions")
    op.drop_index(op.f("ix_decisions_actor_id_row_id"), table_name="decisions")

    op.drop_table("decisions")
    op.drop_table("capabilities")
    op.drop_index(op.f("ix_audit_records_session_id_sequence"), table_name="audit_records")
    op.drop_index(op.f("ix_audit_records_outcome_sequence"), table_name="audit_records")
    op.drop_index(op.f("ix_audit_records_event_type_sequence"), table_name="audit_records")
    op.drop_index(op.f("ix_audit_records_decision_id_sequence"), table_name="audit_records")
    op.drop_index(op.f("ix_audit_records_created_at"), table_name="audit_records")
    op.drop_index(op.f("ix_audit_records_capability_sequence"), table_name="audit_records")
    op.drop_index(op.f("ix_audit_records_actor_id_sequence"), table_name="audit_records")

    op.drop_table("audit_records")
    op.drop_table("api_keys")
