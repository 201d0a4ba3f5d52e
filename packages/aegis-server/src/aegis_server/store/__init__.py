"""The persistence layer of the AEGIS server: SQLAlchemy 2 (async) on SQLite or PostgreSQL, with the
schema managed by Alembic migrations shipped in this package (`store/migrations`). `Store` (`store.py`)
is the façade; its table says which module owns which concern."""

from aegis_server.store.audit_append import ChainState
from aegis_server.store.chain import (
    GENESIS_HASH,
    AuditKeyError,
    AuditKeySource,
    ChainLinker,
    link_hash,
    link_hmac,
)
from aegis_server.store.cursors import MAX_PAGE_SIZE
from aegis_server.store.engine import normalise_url, redact_url
from aegis_server.store.errors import (
    AlreadyReported,
    AuditChainCut,
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
from aegis_server.store.filters import AuditFilters, DecisionFilters
from aegis_server.store.keys import API_KEY_PREFIX, UNSET, hash_api_key
from aegis_server.store.locations import default_audit_dir
from aegis_server.store.migrate import current_revision, head_revision, upgrade_database
from aegis_server.store.records import (
    ADMIN_SCOPE,
    SCOPES,
    ApiKey,
    DecisionBinding,
    IdempotencyEntry,
    NewDecision,
    StoredCapability,
    StoredPolicy,
)
from aegis_server.store.rows import format_timestamp
from aegis_server.store.store import Store, open_existing, verify_database

__all__ = [
    "ADMIN_SCOPE",
    "API_KEY_PREFIX",
    "GENESIS_HASH",
    "MAX_PAGE_SIZE",
    "SCOPES",
    "UNSET",
    "AlreadyReported",
    "ApiKey",
    "AuditChainCut",
    "AuditFilters",
    "AuditKeyError",
    "AuditKeySource",
    "ChainLinker",
    "ChainState",
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
    "default_audit_dir",
    "format_timestamp",
    "hash_api_key",
    "head_revision",
    "link_hash",
    "link_hmac",
    "normalise_url",
    "open_existing",
    "redact_url",
    "upgrade_database",
    "verify_database",
]
