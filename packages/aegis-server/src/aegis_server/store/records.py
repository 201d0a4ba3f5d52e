"""The plain data the store takes and returns besides the wire models of `aegis_sdk.models`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aegis_sdk.models import Capability, Decision, Policy

__all__ = [
    "ADMIN_SCOPE",
    "SCOPES",
    "ApiKey",
    "DecisionBinding",
    "IdempotencyEntry",
    "NewDecision",
    "StoredCapability",
    "StoredPolicy",
]

ADMIN_SCOPE = "admin"
SCOPES: tuple[str, ...] = (
    "governance:propose",
    "governance:read",
    "governance:review",
    "audit:read",
    "policies:manage",
    "metrics",
    ADMIN_SCOPE,
)
"""Every scope an API key can hold. `admin` grants all of them."""


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """An API key as stored: its id, name and scopes, the actor patterns it may propose for (None: a key
    made before 0.2, bound to no actor) and its own requests-per-minute limit (None: the server-wide
    default). The key itself is never stored, only its SHA-256."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None
    actors: tuple[str, ...] | None = None
    rate_limit_per_minute: int | None = None

    @property
    def bound(self) -> bool:
        """False when the key may propose for no actor (actors NULL or empty)."""
        return bool(self.actors)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def has_scope(self, scope: str) -> bool:
        """True when the key holds `scope`, or `admin` (which grants every scope)."""
        return scope in self.scopes or ADMIN_SCOPE in self.scopes


@dataclasses.dataclass(frozen=True)
class IdempotencyEntry:
    """The `Idempotency-Key` of a proposal: unique per API key, with the hash of the request it named."""

    api_key_id: str
    key: str
    request_hash: str


@dataclasses.dataclass(frozen=True)
class NewDecision:
    """Everything `Store.record_decision` writes in its one transaction.

    - `decision`: the wire decision as answered. If its `audit_ref` is empty the store makes one; the
      returned `Decision` carries the audit_ref of its "decision" audit record either way.
    - `actor_id`, `actor_type`, `capability`, `session_id`, `params_hash` (canonical hash of the
      parameters): what tokens are bound to and what listings filter on.
    - `proposal_audit`: the proposal as the audit keeps it (sensitive parameters already replaced by
      hashes). It becomes the payload of the "proposal" audit record.
    - `review_deadline`: required for an ESCALATE (the review becomes "pending" until then).
    - `token_expires_at`: expiry of `decision.confirmation_token` (REQUIRE_CONFIRMATION); defaults to
      `decision.expires_at` parsed.
    - `idempotency`: the proposal's Idempotency-Key, stored with the decision (None: no key).
    - `consumes_token_of`: the parent decision whose confirmation/approval token this proposal used;
      the token is marked used in the same transaction (`TokenAlreadyUsed` if it already was).
    - `created_at`: the decision time for filtering; defaults to `decision.timestamp` parsed.
    - `api_key_id`: the API key that proposed it; a confirmation token of this decision is accepted
      from that key only (None: from any key — decisions recorded before migration 0002).
    """

    decision: Decision
    actor_id: str
    capability: str
    params_hash: str
    actor_type: str = "ai-agent"
    session_id: str | None = None
    proposal_audit: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    review_deadline: datetime | None = None
    token_expires_at: datetime | None = None
    idempotency: IdempotencyEntry | None = None
    consumes_token_of: str | None = None
    created_at: datetime | None = None
    api_key_id: str | None = None


@dataclasses.dataclass(frozen=True)
class DecisionBinding:
    """What a confirmation token of a decision is checked against."""

    decision_id: str
    actor_id: str
    actor_type: str
    capability: str
    params_hash: str
    outcome: str
    session_id: str | None
    review_status: str | None
    token_used: bool
    token_used_by: str | None
    token_expires_at: datetime | None
    api_key_id: str | None = None


@dataclasses.dataclass(frozen=True)
class StoredPolicy:
    """A policy managed through the API, with when it was created and last changed."""

    policy: Policy
    created_at: datetime
    updated_at: datetime


@dataclasses.dataclass(frozen=True)
class StoredCapability:
    """A capability registered through the API, with when it was created and last changed."""

    capability: Capability
    created_at: datetime
    updated_at: datetime
