"""The error answer of the v1 contract: `ApiError` and the `{"error": {...}}` envelope it renders as.

One definition for `aegis-server` and the SDK's fake platform: either raises an `ApiError` anywhere while
answering a request, and its front door renders `error_body(...)` with the status and headers the error
carries. The SDK's client reads the same envelope back (`aegis_sdk.errors`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ApiError", "error_body", "governance_error", "name_mismatch", "not_found", "validation_error"]


class ApiError(Exception):
    """An error answer: raise it anywhere in a request and the handler renders the envelope."""

    def __init__(
        self,
        status: int,
        type: str,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.headers: dict[str, str] = dict(headers or {})


def not_found(what: str, ident: str) -> ApiError:
    """404 `not_found` for a named resource (`what`: "decision", "policy"...) that does not exist."""
    return ApiError(
        404,
        "not_found",
        "not_found",
        f"No {what} {ident!r} exists. Check the {what} name or id (list them with GET on the collection).",
        {"resource": what, "id": ident},
    )


def governance_error(status: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> ApiError:
    """An error of type `governance_error` (a token, review or idempotency refusal...)."""
    return ApiError(status, "governance_error", code, message, details)


def validation_error(status: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> ApiError:
    """An error of type `validation_error` (a malformed body, header or query parameter)."""
    return ApiError(status, "validation_error", code, message, details)


def name_mismatch(what: str, body_name: str, path_name: str) -> ApiError:
    """422 `invalid_request` for a PUT whose body names another `what` ("policy") than its path."""
    return validation_error(
        422,
        "invalid_request",
        f"The body names {what} {body_name!r} but the path names {path_name!r}. Make them equal.",
        {"errors": [{"loc": ["body", "name"], "msg": "must equal the name in the path", "type": "value_error"}]},
    )


def error_body(
    type: str, code: str, message: str, details: Mapping[str, Any] | None, request_id: str | None
) -> dict[str, Any]:
    """The JSON body of every non-2xx answer: `{"error": {type, code, message, request_id, details}}`."""
    return {
        "error": {
            "type": type,
            "code": code,
            "message": message,
            "request_id": request_id,
            "details": dict(details or {}),
        }
    }
