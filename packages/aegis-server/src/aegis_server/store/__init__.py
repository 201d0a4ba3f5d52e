"""The persistence layer of the AEGIS server: SQLAlchemy 2 (async) on SQLite or PostgreSQL, with the
schema managed by Alembic migrations shipped in this package (`store/migrations`)."""

from aegis_server.store.chain import GENESIS_HASH, link_hash
from aegis_server.store.engine import normalise_url, redact_url
from aegis_server.store.errors import (
    AlreadyReported,
    IdempotencyConflict,
    InvalidCursor,
    NotAllowed,
    NotFound,
    NotPending,
    NotProposer,
    SchemaNotReady,
    StoreError,
    TokenAlreadyUsed,
)
from aegis_server.store.migrate import current_revision, head_revision, upgrade_database
from aegis_server.store.records import (
    ADMIN_SCOPE,
    SCOPES,
    ApiKey,
    AuditFilters,
    DecisionBinding,
    DecisionFilters,
    IdempotencyEntry,
    NewDecision,
    StoredCapability,
    StoredPolicy,
)
from aegis_server.store.repository import (
    API_KEY_PREFIX,
    MAX_PAGE_SIZE,
    Store,
    format_timestamp,
    hash_api_key,
    verify_database,
)

__all__ = [
    "ADMIN_SCOPE",
    "API_KEY_PREFIX",
    "GENESIS_HASH",
    "MAX_PAGE_SIZE",
    "SCOPES",
    "AlreadyReported",
    "ApiKey",
    "AuditFilters",
    "DecisionBinding",
    "DecisionFilters",
    "IdempotencyConflict",
    "IdempotencyEntry",
    "InvalidCursor",
    "NewDecision",
    "NotAllowed",
    "NotFound",
    "NotPending",
    "NotProposer",
    "SchemaNotReady",
    "Store",
    "StoreError",
    "StoredCapability",
    "StoredPolicy",
    "TokenAlreadyUsed",
    "current_revision",
    "format_timestamp",
    "hash_api_key",
    "head_revision",
    "link_hash",
    "normalise_url",
    "redact_url",
    "upgrade_database",
    "verify_database",
]
