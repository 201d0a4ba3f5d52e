"""From an HTTP error answer to the SDK's exception tree (`aegis_sdk.errors`).

The platform's envelope (`{"error": {"type", "code", "message", "request_id", "details"}}`) picks the class
by type and, for governance errors, by code; an answer without it (a proxy's page) by status, with a hint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from aegis_sdk import errors
from aegis_sdk._parsing import request_id as header_request_id
from aegis_sdk._parsing import where
from aegis_sdk._retry import retry_after

_GOVERNANCE_CODES: dict[str, type[errors.GovernanceError]] = {
    "unknown_capability": errors.UnknownCapabilityError,
    "invalid_parameters": errors.ParameterValidationError,
    "confirmation_used": errors.ConfirmationUsedError,
    "confirmation_expired": errors.ConfirmationExpiredError,
    "confirmation_mismatch": errors.ConfirmationMismatchError,
    "confirmation_invalid": errors.ConfirmationError,
    "not_pending": errors.ReviewError,
    "self_review": errors.ReviewError,
    "already_reported": errors.ExecutionReportError,
    "not_allowed": errors.ExecutionReportError,
    "not_proposer": errors.ExecutionReportError,
    "idempotency_conflict": errors.IdempotencyConflictError,
    "invalid_policy": errors.PolicyError,
    "policy_conflict": errors.PolicyError,
}
_TYPES: dict[str, type[errors.AegisError]] = {
    "validation_error": errors.InvalidRequestError,
    "authentication_error": errors.AuthenticationError,
    "permission_error": errors.PermissionDeniedError,
    "not_found": errors.NotFoundError,
    "rate_limit_error": errors.RateLimitError,
    "server_error": errors.ServerError,
}
_HINTS: dict[type[errors.AegisError], str] = {
    errors.AuthenticationError: "check api_key= / AEGIS_API_KEY",
    errors.PermissionDeniedError: "use a key with the required scope",
    errors.NotFoundError: "check the id or name, and that endpoint= points at the platform root",
    errors.RateLimitError: "slow down or raise the platform's rate limit",
    errors.ServerError: "the platform failed; retry later or check its logs",
}


def class_for_status(status: int) -> type[errors.AegisError]:
    """The error class of an HTTP status when the answer carries no AEGIS error envelope."""
    if status == 401:
        return errors.AuthenticationError
    if status == 403:
        return errors.PermissionDeniedError
    if status == 404:
        return errors.NotFoundError
    if status == 429:
        return errors.RateLimitError
    if status >= 500:
        return errors.ServerError
    if status in (400, 413, 415, 422):
        return errors.InvalidRequestError
    return errors.APIStatusError


def _envelope(response: httpx.Response) -> Mapping[str, Any] | None:
    """The `error` object of an AEGIS error body, or None when the body is not one."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        candidate: Mapping[str, Any] = body["error"]
        if isinstance(candidate.get("code"), str) and isinstance(candidate.get("message"), str):
            return candidate
    return None


def error_from_response(response: httpx.Response, *, attempts: int = 1) -> errors.AegisError:
    """Map an error answer (the platform's envelope, or anything a proxy sent) to the exception tree."""
    status = response.status_code
    header_id = header_request_id(response)
    envelope = _envelope(response)
    details: dict[str, Any] = {}
    if envelope is not None:
        error_type = envelope.get("type") if isinstance(envelope.get("type"), str) else None
        code: str = envelope["code"]
        message: str = envelope["message"]
        request_id = envelope.get("request_id") if isinstance(envelope.get("request_id"), str) else header_id
        if isinstance(envelope.get("details"), dict):
            details = dict(envelope["details"])
        if error_type == "governance_error":
            cls: type[errors.AegisError] = _GOVERNANCE_CODES.get(code, errors.GovernanceError)
        else:
            cls = _TYPES.get(error_type or "", class_for_status(status))
    else:
        error_type = None
        code = f"http_{status}"
        cls = class_for_status(status)
        kind = response.headers.get("content-type", "no content type")
        hint = _HINTS.get(cls, "is endpoint= the AEGIS platform root?")
        message = (
            f"{where(response)} failed with HTTP {status} {response.reason_phrase} and no AEGIS error body "
            f"({kind}); {hint}"
        )
        request_id = header_id
    if attempts > 1:
        message = f"{message} (after {attempts} attempts)"
    common: dict[str, Any] = {
        "status_code": status,
        "code": code,
        "request_id": request_id,
        "details": details,
        "error_type": error_type,
    }
    if cls is errors.RateLimitError or cls is errors.ServerError:
        return cls(message, retry_after=retry_after(response, details), **common)
    if cls is errors.UnknownCapabilityError:
        suggestions = details.get("suggestions")
        names = [s for s in suggestions if isinstance(s, str)] if isinstance(suggestions, list) else []
        return errors.UnknownCapabilityError(message, suggestions=names, **common)
    if cls is errors.ParameterValidationError:
        problems = details.get("errors")
        listed = [e for e in problems if isinstance(e, dict)] if isinstance(problems, list) else []
        bad_field = details.get("field") if isinstance(details.get("field"), str) else None
        return errors.ParameterValidationError(message, field=bad_field, errors=listed, **common)
    return cls(message, **common)


__all__ = ["class_for_status", "error_from_response"]
