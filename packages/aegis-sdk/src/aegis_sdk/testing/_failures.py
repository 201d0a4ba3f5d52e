"""Failures injected into the fake (`fail_next`, `fail_with_connect_error`, `fail_with_timeout`)."""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Literal

from aegis_sdk._wire.envelope import ApiError
from aegis_sdk.testing._state import FakeState

__all__ = ["Failure", "add_failure", "injected_error", "take_failure"]

# The type, code and message of an injected status, as the platform answers it.
_STATUS_DEFAULTS: dict[int, tuple[str, str, str]] = {
    400: ("validation_error", "invalid_json", "The request was rejected (injected by FakePlatform.fail_next)."),
    401: ("authentication_error", "invalid_api_key", "The API key is unknown or revoked (injected)."),
    403: ("permission_error", "missing_scope", "The API key lacks the scope this route needs (injected)."),
    404: ("not_found", "not_found", "Not found (injected by FakePlatform.fail_next)."),
    409: ("governance_error", "policy_conflict", "Conflict (injected by FakePlatform.fail_next)."),
    413: ("validation_error", "body_too_large", "The body is too large (injected by FakePlatform.fail_next)."),
    422: ("validation_error", "invalid_request", "The request is invalid (injected by FakePlatform.fail_next)."),
    429: ("rate_limit_error", "rate_limited", "Too many requests; retry later (injected by FakePlatform.fail_next)."),
    500: ("server_error", "internal_error", "The server failed (injected by FakePlatform.fail_next)."),
    503: (
        "server_error",
        "unavailable",
        "The platform is unavailable; retry later (injected by FakePlatform.fail_next).",
    ),
}


@dataclasses.dataclass
class Failure:
    """The next `remaining` requests to paths matching `path` (a glob; None: all) fail this way."""

    kind: Literal["status", "connect", "timeout"]
    remaining: int
    path: str | None = None
    status: int = 503
    retry_after: float | None = None
    code: str | None = None
    message: str | None = None

    def matches(self, path: str) -> bool:
        return self.path is None or fnmatch.fnmatchcase(path, self.path)


def add_failure(state: FakeState, failure: Failure) -> None:
    with state.lock:
        state.failures.append(failure)


def take_failure(state: FakeState, path: str) -> Failure | None:
    """The failure this request to `path` meets (counting it down), or None."""
    with state.lock:
        for failure in state.failures:
            if failure.matches(path):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    state.failures.remove(failure)
                return failure
        return None


def injected_error(failure: Failure) -> ApiError:
    """The error answer of an injected `status` failure."""
    status = failure.status
    type_, default_code, default_message = _STATUS_DEFAULTS.get(
        status,
        (
            "server_error" if status >= 500 else "validation_error",
            "internal_error" if status >= 500 else "invalid_request",
            f"Injected failure {status} (FakePlatform.fail_next).",
        ),
    )
    details: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if status in (429, 503) or failure.retry_after is not None:
        seconds = 0.0 if failure.retry_after is None else failure.retry_after
        headers["Retry-After"] = f"{seconds:g}" if seconds != int(seconds) else str(int(seconds))
        details["retry_after"] = seconds
    if status == 403:
        details["required_scope"] = "admin"
    return ApiError(status, type_, failure.code or default_code, failure.message or default_message, details, headers)
