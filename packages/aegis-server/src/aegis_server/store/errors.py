"""Typed errors of the store. The API maps each one to an error envelope code (see docs/api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aegis_sdk.models import Decision

__all__ = [
    "AlreadyReported",
    "AuditChainCut",
    "IdempotencyConflict",
    "InvalidCursor",
    "NotAllowed",
    "NotFound",
    "NotPending",
    "NotProposer",
    "SchemaNotReady",
    "StoreError",
    "TokenAlreadyUsed",
]


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class _DecisionError(StoreError):
    """An error about one decision: `decision_id` names it, the message says what to do."""

    def __init__(self, decision_id: str, message: str) -> None:
        self.decision_id = decision_id
        super().__init__(message)


class NotFound(StoreError):
    """The object does not exist (API: 404 not_found)."""

    def __init__(self, kind: str, identifier: str) -> None:
        self.kind = kind
        self.identifier = identifier
        super().__init__(f"{kind} {identifier!r} does not exist; check the id")


class TokenAlreadyUsed(_DecisionError):
    """The confirmation/approval token of `decision_id` was already consumed (API: 409 confirmation_used)."""

    def __init__(self, decision_id: str) -> None:
        super().__init__(
            decision_id,
            f"the confirmation token of decision {decision_id!r} was already used; "
            "a token allows one action: propose again to get a new decision",
        )


class IdempotencyConflict(StoreError):
    """The Idempotency-Key was used before with a different request (API: 409 idempotency_conflict).

    Raised by `Store.record_decision` with what the key holds, so the caller answers without reading it
    again: `request_hash`, the hash of the request that claimed the key, and `decision`, the decision
    stored for it (`decision_id` is its id). Both are None when the raiser did not read them."""

    def __init__(
        self,
        key: str,
        decision_id: str | None = None,
        *,
        request_hash: str | None = None,
        decision: Decision | None = None,
    ) -> None:
        self.key = key
        self.decision_id = decision_id if decision_id is not None or decision is None else decision.decision_id
        self.request_hash = request_hash
        self.decision = decision
        super().__init__(
            "this Idempotency-Key was already used for a different request; "
            "use a new key for a new proposal and the same key only to retry the same one"
        )


class NotPending(_DecisionError):
    """The decision is not an ESCALATE awaiting review (API: 409 not_pending). `status` is its current state:
    "approved", "denied", "expired", or "not_escalated" for a decision that never needed a review."""

    def __init__(self, decision_id: str, status: str) -> None:
        self.status = status
        super().__init__(
            decision_id,
            f"decision {decision_id!r} is not pending review (status: {status}); "
            "only a pending ESCALATE within its review deadline can be approved or denied",
        )


class AlreadyReported(_DecisionError):
    """An execution report was already recorded for the decision (API: 409 already_reported)."""

    def __init__(self, decision_id: str) -> None:
        super().__init__(
            decision_id, f"the execution of decision {decision_id!r} was already reported; it can be reported once"
        )


class NotAllowed(_DecisionError):
    """An execution report for a decision whose outcome is not ALLOW (API: 409 not_allowed)."""

    def __init__(self, decision_id: str, outcome: str) -> None:
        self.outcome = outcome
        super().__init__(
            decision_id,
            f"decision {decision_id!r} has outcome {outcome}, so nothing may have run; "
            "report executions only for ALLOW decisions",
        )


class NotProposer(_DecisionError):
    """An execution report from an API key other than the one that proposed the decision (API: 403
    not_proposer). Decisions recorded before migration 0002 (no proposing key) accept any key."""

    def __init__(self, decision_id: str, api_key_id: str) -> None:
        self.api_key_id = api_key_id
        super().__init__(
            decision_id,
            f"decision {decision_id!r} was proposed by another API key; "
            "only the proposing key may report its execution",
        )


class InvalidCursor(StoreError, ValueError):
    """A listing cursor that this store did not issue, or issued for another listing (API: 422)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid cursor ({detail}); pass the next_cursor of the previous page unchanged")


class SchemaNotReady(StoreError):
    """The database schema is missing or older than this server (run `aegis-server db upgrade`)."""


class AuditChainCut(StoreError):
    """The chain head in the database is below a record this process saw or checkpointed: records were
    deleted under the running server. Nothing is appended (API: 503 audit_chain_cut), so the chain is
    not forked from the shortened head."""

    def __init__(self, head_sequence: int, floor: int) -> None:
        self.head_sequence = head_sequence
        self.floor = floor
        super().__init__(
            f"the audit chain in the database ends at record #{head_sequence}, but this server already saw "
            f"record #{floor}: records #{head_sequence + 1}..#{floor} were deleted. Nothing is written until an "
            "operator investigates (`aegis-server audit verify`) and restarts the server"
        )
