"""How a governed request that may not run is answered: one exception, one body shape, one renderer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.responses import Response

from aegis_sdk import Decision

RefusalCode = Literal[
    "governance_denied",
    "confirmation_required",
    "review_pending",
    "review_denied",
    "review_expired",
    "confirmation_invalid",
    "confirmation_mismatch",
    "confirmation_used",
    "confirmation_expired",
    "invalid_parameters",
    "actor_required",
    "route_not_governed",
    "body_too_large",
    "governance_unavailable",
    "governance_misconfigured",
    "decision_not_found",
]
"""Every `detail.code` a governed route (or the status route) can answer with (see docs/fastapi.md for each)."""

DECISION_HEADER = "AEGIS-Decision-Id"
"""Response header naming the decision behind an answer (allowed or refused), when there is one."""

STATUS_LINK_RELATION = "status"
"""The RFC 8288 relation (registered by RFC 8631) of the `Link` header pointing a waiting client to the
decision's status route: `Link: <https://app.example/aegis/decisions/dec_...>; rel="status"`."""


class AegisErrorDetail(BaseModel):
    """The `detail` of a refused governed request. Fields that do not apply are null."""

    code: RefusalCode = Field(description="What happened; stable, for programs.")
    message: str = Field(description="What happened and what to do next; for people.")
    decision_id: str | None = Field(default=None, description="The platform's decision behind this answer.")
    outcome: str | None = Field(default=None, description="ALLOW, DENY, ESCALATE or REQUIRE_CONFIRMATION.")
    reason: str | None = Field(default=None, description="The platform's reason for the decision.")
    review_status: str | None = Field(default=None, description="ESCALATE: pending, approved, denied or expired.")
    expires_at: str | None = Field(default=None, description="Confirmation deadline, or the review deadline.")
    confirmation_header: str | None = Field(
        default=None,
        description="Repeat the same request with this header set to `decision_id` to continue "
        "(after the user consented, or once a reviewer approved).",
    )
    status_url: str | None = Field(
        default=None,
        description="`review_pending`: where to poll (or long-poll with `?wait=N`) how the review went, also "
        'sent as `Link: <url>; rel="status"`. Null when the app mounts no status route.',
    )
    request_id: str | None = Field(default=None, description="Quote it when reporting a problem.")


class AegisRefusal(HTTPException):
    """Raised by a governed route that may not run. A FastAPI `HTTPException`, so by default the app
    answers `{"detail": {...AegisErrorDetail...}}` with the status and headers below; register an
    exception handler for `AegisRefusal` (or pass `error_response=` to `Aegis`) to answer differently.

    `code`, `decision` (None when no decision was made or fetched) and `error_detail` describe it."""

    def __init__(
        self,
        status_code: int,
        detail: AegisErrorDetail,
        *,
        decision: Decision | None = None,
        retry_after: int | None = None,
    ) -> None:
        headers: dict[str, str] = {}
        if detail.decision_id:
            headers[DECISION_HEADER] = detail.decision_id
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if detail.status_url:
            headers["Link"] = f'<{detail.status_url}>; rel="{STATUS_LINK_RELATION}"'
        super().__init__(status_code=status_code, detail=detail.model_dump(mode="json"), headers=headers or None)
        self.error_detail = detail
        self.code: RefusalCode = detail.code
        self.decision = decision

    def __repr__(self) -> str:
        decision_id = self.error_detail.decision_id
        return f"AegisRefusal(status_code={self.status_code}, code={self.code!r}, decision_id={decision_id!r})"


ErrorResponse = Callable[[AegisRefusal], Response]
"""Renders a refusal as the app's answer (`Aegis(error_response=...)`)."""


def default_error_response(refusal: AegisRefusal) -> Response:
    """FastAPI's error convention: `{"detail": {...}}` with the refusal's status and headers."""
    return JSONResponse({"detail": refusal.detail}, status_code=refusal.status_code, headers=refusal.headers)


def _schema() -> dict[str, Any]:
    detail = AegisErrorDetail.model_json_schema()
    return {
        "title": "AegisError",
        "type": "object",
        "properties": {"detail": detail},
        "required": ["detail"],
    }


def openapi_responses(confirmation_header: str) -> dict[int, dict[str, Any]]:
    """The responses a governed route adds to its OpenAPI operation."""
    content = {"application/json": {"schema": _schema()}}
    retry = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}
    decision = {DECISION_HEADER: {"description": "The decision behind the answer.", "schema": {"type": "string"}}}
    waiting = {
        **decision,
        "Retry-After": {
            "description": "`review_pending`: seconds to wait before polling the status link or repeating the request.",
            "schema": {"type": "integer"},
        },
        "Link": {
            "description": '`review_pending`, when the app mounts the status route: `<url>; rel="status"`, the '
            "decision's status to poll (`?wait=N` long-polls).",
            "schema": {"type": "string"},
        },
    }
    return {
        403: {
            "description": "AEGIS governance refused the action: DENY (`governance_denied`), or an escalation "
            f"awaiting or refused by a reviewer (`review_pending`, `review_denied`, `review_expired`). Once a "
            f"reviewer approved, repeat the request with `{confirmation_header}: <decision_id>`.",
            "headers": waiting,
            "content": content,
        },
        409: {
            "description": f"The decision named in `{confirmation_header}` cannot confirm this request: another "
            "actor or other parameters (`confirmation_mismatch`), already used, expired, or not a decision "
            "awaiting confirmation (`confirmation_invalid`).",
            "headers": decision,
            "content": content,
        },
        428: {
            "description": "The action needs the user's confirmation (`confirmation_required`): repeat the same "
            f"request with `{confirmation_header}: <decision_id>` once the user consented.",
            "headers": decision,
            "content": content,
        },
        503: {
            "description": "AEGIS governance could not decide (`governance_unavailable`, "
            "`governance_misconfigured`); nothing was run. Try again after `Retry-After` seconds.",
            "headers": retry,
            "content": content,
        },
    }


__all__ = [
    "DECISION_HEADER",
    "STATUS_LINK_RELATION",
    "AegisErrorDetail",
    "AegisRefusal",
    "ErrorResponse",
    "RefusalCode",
    "default_error_response",
    "openapi_responses",
]
