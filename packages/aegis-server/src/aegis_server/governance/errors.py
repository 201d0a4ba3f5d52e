"""The refusals of the governance use cases, in their own terms (no HTTP here).

Every use case raises one of these; `aegis_server.api.error_mapping` is the one place that turns each
class into an HTTP status and an error envelope type. A refusal carries what the envelope shows: its
`code`, a `message` that says what was wrong and how to fix it, and `details`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ActorNotAllowed",
    "Conflict",
    "Forbidden",
    "GovernanceError",
    "IdempotencyConflict",
    "InvalidInput",
    "InvalidRequest",
    "NotFound",
    "SelfReview",
    "TokenInvalid",
    "Unavailable",
    "UnknownCapability",
]


class GovernanceError(Exception):
    """A refusal: `code` names it (the envelope's code), `message` explains it, `details` add the facts."""

    code: str = "governance_error"

    def __init__(self, message: str, details: Mapping[str, Any] | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class NotFound(GovernanceError):
    """No such decision, policy or capability."""

    code = "not_found"

    def __init__(self, resource: str, identifier: str) -> None:
        super().__init__(
            f"No {resource} {identifier!r} exists. Check the {resource} name or id (list them with GET on the "
            "collection).",
            {"resource": resource, "id": identifier},
        )
        self.resource = resource
        self.identifier = identifier


class UnknownCapability(GovernanceError):
    """A proposal for a capability that no policy file or API call registered."""

    code = "unknown_capability"


class Forbidden(GovernanceError):
    """The caller may not do this: the key is valid, the act is not theirs (e.g. `not_proposer`)."""


class ActorNotAllowed(Forbidden):
    """A proposal for an actor outside the proposing key's actor patterns."""

    code = "actor_not_allowed"


class SelfReview(Forbidden):
    """A review by whoever proposed the action (separation of duties)."""

    code = "self_review"


class Conflict(GovernanceError):
    """The request is well formed but conflicts with what is stored: `policy_conflict`, `not_pending` (a
    review of a decision not awaiting one), `not_allowed` and `already_reported` (execution reports)."""


class IdempotencyConflict(Conflict):
    """An Idempotency-Key reused with a different request."""

    code = "idempotency_conflict"


class TokenInvalid(Conflict):
    """A confirmation token refused: `confirmation_invalid`, `_used`, `_expired` or `_mismatch`."""

    code = "confirmation_invalid"


class InvalidInput(GovernanceError):
    """Input that is well formed but breaks a governance rule (`invalid_parameters`, `invalid_policy`)."""


class InvalidRequest(GovernanceError):
    """A request field that is not valid at all (a foreign cursor, parameters over the size limit)."""

    code = "invalid_request"


class Unavailable(GovernanceError):
    """The server is not ready to govern yet (starting: no token secret or policy set loaded)."""

    code = "unavailable"
