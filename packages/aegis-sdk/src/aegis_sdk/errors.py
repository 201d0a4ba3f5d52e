"""Every error the SDK raises, in one tree.

```
AegisError                              anything that went wrong talking to AEGIS
├── ConfigurationError (+ ValueError)   bad constructor argument or environment variable
├── APIConnectionError                  the platform could not be reached (after the retries)
│   └── APITimeoutError                 a request timed out (after the retries)
├── APIStatusError                      an HTTP error answer not covered below
│   ├── AuthenticationError             401: missing or unknown API key
│   ├── PermissionDeniedError           403: the key lacks the scope
│   ├── NotFoundError                   404: no such decision, policy, capability or route
│   ├── RateLimitError                  429 (after the retries), with `retry_after`
│   └── ServerError                     5xx (after the retries)
├── MalformedResponseError              the platform answered something the SDK cannot read
├── ReviewTimeoutError                  wait_for_review() gave up; carries the last `decision`
└── GovernanceError                     the request cannot be governed as it is (not a transport failure)
    ├── InvalidRequestError (+ ValueError)  bad input caught before sending, or 400/413/415/422 validation_error
    ├── UnknownCapabilityError          404 unknown_capability, with `suggestions`
    ├── ParameterValidationError        422 invalid_parameters, with `field` and `errors`
    ├── ConfirmationError               409 confirmation_* (token misuse), or confirm() cannot proceed
    │   ├── ConfirmationUsedError       409 confirmation_used
    │   ├── ConfirmationExpiredError    409 confirmation_expired
    │   └── ConfirmationMismatchError   409 confirmation_mismatch
    ├── ReviewError                     409 not_pending, 403 self_review, or wait_for_review() on a non-ESCALATE
    ├── ExecutionReportError            409 already_reported / not_allowed, 403 not_proposer
    ├── IdempotencyConflictError        409 idempotency_conflict
    └── PolicyError                     422 invalid_policy / 409 policy_conflict
```

Every error carries `status_code` (None when no HTTP answer was involved), `code` (the platform's
machine-readable code, or the SDK's own), `message`, `request_id` (from the error body or the
`X-Request-ID` header) and `details`. `str(error)` is the message followed by those identifiers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aegis_sdk.models import Decision


class AegisError(Exception):
    """Base class of every error raised by aegis-sdk."""

    status_code: int | None
    code: str | None
    message: str
    request_id: str | None
    details: dict[str, Any]
    error_type: str | None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        details: dict[str, Any] | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.details = dict(details) if details else {}
        self.error_type = error_type

    def __str__(self) -> str:
        parts = []
        if self.code:
            parts.append(f"code={self.code}")
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return f"{self.message} [{', '.join(parts)}]" if parts else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status_code={self.status_code!r}, "
            f"code={self.code!r}, request_id={self.request_id!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not pickle by default; keep errors picklable (multiprocessing, Celery).
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[AegisError], message: str, state: dict[str, Any]) -> AegisError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ConfigurationError(AegisError, ValueError):
    """A constructor argument or environment variable is missing or invalid."""


class APIConnectionError(AegisError):
    """The platform could not be reached (connection refused, DNS, TLS, reset), after the retries."""


class APITimeoutError(APIConnectionError):
    """A request to the platform timed out, after the retries."""


class APIStatusError(AegisError):
    """The platform (or a proxy in front of it) answered with an HTTP error status."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or unknown. Check `api_key` / `AEGIS_API_KEY`."""


class PermissionDeniedError(APIStatusError):
    """403: the API key is valid but lacks the scope (`details["required_scope"]`)."""


class NotFoundError(APIStatusError):
    """404: no such decision, policy, capability or route."""


class RateLimitError(APIStatusError):
    """429: too many requests, still limited after the retries. `retry_after` is in seconds."""

    retry_after: float | None

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """5xx: the platform failed or is unavailable, still after the retries. `retry_after` is in seconds, when
    the answer said when to come back (a 503's `Retry-After`)."""

    retry_after: float | None

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class MalformedResponseError(AegisError):
    """The platform's answer could not be read: not JSON, missing fields, or an outcome this SDK version
    does not know (upgrade aegis-sdk)."""


class ReviewTimeoutError(AegisError):
    """`wait_for_review()` timed out before a reviewer decided. `decision` is the last state seen (still
    ESCALATE, review pending); call `wait_for_review()` again to keep waiting."""

    decision: Decision

    def __init__(self, message: str, *, decision: Decision, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.decision = decision


class GovernanceError(AegisError):
    """The request cannot be governed as it is: the platform refused it on governance grounds, or it is
    invalid (caught before sending, or by the platform). Not a transport failure: change the request."""


class InvalidRequestError(GovernanceError, ValueError):
    """The request is invalid: caught by the SDK before sending (status_code None), or answered by the
    platform with a `validation_error` (400, 413, 415, 422). `details["errors"]` lists the problems.

    A `GovernanceError`, like an unknown capability: resending it cannot help, the request must change,
    so the SDK page's `except GovernanceError` branch (not the transport branch) handles it."""


class UnknownCapabilityError(GovernanceError):
    """The capability is not registered. `suggestions` lists near names that do exist."""

    suggestions: list[str]

    def __init__(self, message: str, *, suggestions: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.suggestions = list(suggestions or [])


class ParameterValidationError(GovernanceError):
    """The action's parameters fail the capability's parameter schema. `field` names the first bad
    parameter; `errors` lists every problem."""

    field: str | None
    errors: list[dict[str, Any]]

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.field = field
        self.errors = list(errors or [])


class ConfirmationError(GovernanceError):
    """A confirmation token was refused (used, expired, bound to another proposal, invalid), or
    `confirm()` cannot resubmit this decision."""


class ConfirmationUsedError(ConfirmationError):
    """409 confirmation_used: the token was already used; tokens are single-use."""


class ConfirmationExpiredError(ConfirmationError):
    """409 confirmation_expired: the token expired; propose again to get a fresh decision."""


class ConfirmationMismatchError(ConfirmationError):
    """409 confirmation_mismatch: the token belongs to another actor, capability or parameters."""


class ReviewError(GovernanceError):
    """The review cannot happen: the decision is not a pending ESCALATE (already reviewed, expired), or the
    reviewer is its proposer (403 self_review: the proposing key, or a key named like the actor)."""


class ExecutionReportError(GovernanceError):
    """The execution report was refused: already reported, the decision was not an ALLOW, or another key
    proposed it (403 not_proposer)."""


class IdempotencyConflictError(GovernanceError):
    """The Idempotency-Key was already used with a different request body."""


class PolicyError(GovernanceError):
    """A policy was rejected (does not compile: `details["errors"]`) or conflicts with another."""


__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AegisError",
    "AuthenticationError",
    "ConfigurationError",
    "ConfirmationError",
    "ConfirmationExpiredError",
    "ConfirmationMismatchError",
    "ConfirmationUsedError",
    "ExecutionReportError",
    "GovernanceError",
    "IdempotencyConflictError",
    "InvalidRequestError",
    "MalformedResponseError",
    "NotFoundError",
    "ParameterValidationError",
    "PermissionDeniedError",
    "PolicyError",
    "RateLimitError",
    "ReviewError",
    "ReviewTimeoutError",
    "ServerError",
    "UnknownCapabilityError",
]
