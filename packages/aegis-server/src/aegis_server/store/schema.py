"""The tables of the store (SQLAlchemy Core). The DDL itself lives in the Alembic migrations beside this
module; `tests/server/store` checks that a migrated database matches these definitions exactly."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "api_keys",
    "audit_records",
    "capabilities",
    "console_sessions",
    "decisions",
    "executions",
    "idempotency_keys",
    "metadata",
    "policies",
    "policy_versions",
    "server_settings",
    "webhook_deliveries",
    "webhook_endpoints",
    "webhook_events",
]

# Stable constraint names, so migrations can refer to them on every backend.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores `timestamptz`; SQLite stores naive UTC text of fixed width, so comparisons and
    ordering in SQL stay correct. Naive datetimes are refused: say which zone a time is in.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to the store; pass a timezone-aware time")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _row_id() -> sa.Column[int]:
    # INTEGER PRIMARY KEY is SQLite's rowid alias (autoincrementing); BIGINT identity on PostgreSQL.
    return sa.Column(
        "row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )


api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    # Actor patterns the key may propose for (JSON list of globs); NULL: a key made before 0.2, bound to none.
    sa.Column("actors", sa.JSON(), nullable=True),
    # The key's own requests-per-minute limit; NULL: the server-wide default.
    sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True),
)

server_settings = sa.Table(
    "server_settings",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

decisions = sa.Table(
    "decisions",
    metadata,
    _row_id(),
    sa.Column("decision_id", sa.String(100), nullable=False, unique=True),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("risk_score", sa.Float(), nullable=False),
    sa.Column("constraints", sa.JSON(), nullable=False),
    sa.Column("policy_ids", sa.JSON(), nullable=False),
    sa.Column("timestamp", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("audit_ref", sa.String(100), nullable=False),
    sa.Column("actor_id", sa.String(256), nullable=False),
    sa.Column("actor_type", sa.String(32), nullable=False),
    sa.Column("capability", sa.String(200), nullable=False),
    sa.Column("session_id", sa.String(256), nullable=True),
    sa.Column("params_hash", sa.String(64), nullable=False),
    sa.Column("api_key_id", sa.String(64), nullable=True),  # the proposer; its token works for this key only
    sa.Column("parent_decision_id", sa.String(100), sa.ForeignKey("decisions.decision_id"), nullable=True),
    sa.Column("confirmation_token", sa.Text(), nullable=True),
    sa.Column("expires_at", sa.String(64), nullable=True),
    sa.Column("token_expires_at", UTCDateTime(), nullable=True),
    sa.Column("token_used_at", UTCDateTime(), nullable=True),
    sa.Column("token_used_by", sa.String(100), nullable=True),
    sa.Column("review_status", sa.String(16), nullable=True),
    sa.Column("review_deadline", UTCDateTime(), nullable=True),
    sa.Column("reviewer", sa.String(200), nullable=True),
    sa.Column("review_note", sa.Text(), nullable=True),
    sa.Column("review_resolved_at", sa.String(64), nullable=True),
    # The policy-set version the decision was made under (NULL: made before 0.3 recorded versions).
    sa.Column("policy_version", sa.Integer(), nullable=True),
    # What the matching rules in shadow mode would have decided: a JSON list of {policy_id, outcome, reason}.
    sa.Column("shadow", sa.JSON(), nullable=True),
    sa.Index(None, "actor_id", "row_id"),
    sa.Index(None, "capability", "row_id"),
    sa.Index(None, "outcome", "row_id"),
    sa.Index(None, "session_id", "row_id"),
    sa.Index(None, "review_status", "review_deadline"),
    sa.Index(None, "created_at"),
    sa.Index(None, "parent_decision_id"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("api_key_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("decision_id", sa.String(100), sa.ForeignKey("decisions.decision_id"), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("decision_id", sa.String(100), sa.ForeignKey("decisions.decision_id"), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("result", sa.JSON(), nullable=True),
    sa.Column("error", sa.JSON(), nullable=True),
    sa.Column("duration_ms", sa.Float(), nullable=True),
    sa.Column("recorded_at", sa.String(64), nullable=False),
    sa.Column("audit_ref", sa.String(100), nullable=False),
)

audit_records = sa.Table(
    "audit_records",
    metadata,
    # The chain position is the primary key: two appends can never share a sequence number.
    sa.Column("sequence", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("audit_ref", sa.String(100), nullable=False, unique=True),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("decision_id", sa.String(100), nullable=True),
    sa.Column("actor_id", sa.String(256), nullable=True),
    sa.Column("capability", sa.String(200), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.Column("session_id", sa.String(256), nullable=True),
    sa.Column("timestamp", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("previous_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index(None, "decision_id", "sequence"),
    sa.Index(None, "actor_id", "sequence"),
    sa.Index(None, "capability", "sequence"),
    sa.Index(None, "outcome", "sequence"),
    sa.Index(None, "session_id", "sequence"),
    sa.Index(None, "event_type", "sequence"),
    sa.Index(None, "created_at"),
)

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("document", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

capabilities = sa.Table(
    "capabilities",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("document", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Every change of the active policy set is a version holding the whole set: what was loaded from files and
# what the API stored, each item with where it came from. Decisions record the version they were made under.
policy_versions = sa.Table(
    "policy_versions",
    metadata,
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),  # 1, 2, 3, ...
    sa.Column("digest", sa.String(80), nullable=False),  # the compiled set's digest (`PolicySet.digest`)
    # {"policies": [...], "capabilities": [...], "sources": {name or "capability:<name>": "api" or a file}}
    sa.Column("content", sa.JSON(), nullable=False),
    sa.Column("cause", sa.String(32), nullable=False),  # what made it: see `store.policy_versions.CAUSES`
    sa.Column("summary", sa.Text(), nullable=False),  # what changed, in words
    sa.Column("rollback_of", sa.Integer(), nullable=True),  # the version a rollback restored
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=True),  # the API key id, "cli", or NULL for the server itself
    sa.Index(None, "digest"),
)

# -- notifications: webhook endpoints and the durable outbox -------------------------------------------

webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("endpoint_id", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("event_types", sa.JSON(), nullable=False),  # a list of event types; ["*"]: every type
    sa.Column("capability_glob", sa.String(200), nullable=True),  # only events of matching capabilities
    sa.Column("min_risk", sa.Float(), nullable=True),  # only events whose decision scored at least this
    sa.Column("body_format", sa.String(16), nullable=False),  # "standard" or "slack"
    # The Standard Webhooks signing secret (`whsec_...`). Kept as is: the server must sign with it.
    sa.Column("secret", sa.Text(), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=True),  # the admin key that made it
)

# The outbox: one row per event, written in the transaction that made the event happen (a decision
# recorded, a review resolved or expired). The dispatcher fans each event out to the endpoints that
# want it (`dispatched_at` set in the same transaction as its deliveries), then delivers those.
webhook_events = sa.Table(
    "webhook_events",
    metadata,
    _row_id(),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),  # the `webhook-id` of every delivery
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("decision_id", sa.String(100), nullable=False),
    sa.Column("capability", sa.String(200), nullable=False),
    sa.Column("risk_score", sa.Float(), nullable=False),
    sa.Column("data", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("dispatched_at", UTCDateTime(), nullable=True),
    sa.Index(None, "dispatched_at", "row_id"),
    sa.Index(None, "decision_id"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    _row_id(),
    sa.Column("event_id", sa.String(64), sa.ForeignKey("webhook_events.event_id"), nullable=False),
    sa.Column("endpoint_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # "pending", "delivered" or "failed"
    sa.Column("attempts", sa.Integer(), nullable=False),
    # When the next attempt is due; a worker claims a delivery by moving this past its attempt's timeout.
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("last_status_code", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("event_id", "endpoint_id"),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "endpoint_id", "row_id"),
)

# -- the reviewer console -------------------------------------------------------------------------------

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("session_hash", sa.String(64), primary_key=True),  # SHA-256 of the cookie's value, never the value
    sa.Column("key_id", sa.String(64), nullable=False),  # the API key the reviewer signed in with
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index(None, "expires_at"),
)
