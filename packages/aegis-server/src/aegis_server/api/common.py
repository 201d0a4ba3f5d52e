"""Shared pieces of the routers: the service and principal dependencies, the paging parameters, and the
documented error answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request

from aegis_sdk.models import ErrorEnvelope
from aegis_server.governance.service import GovernanceService
from aegis_server.security import (
    SCOPE_ADMIN,
    SCOPE_AUDIT,
    SCOPE_POLICIES,
    SCOPE_PROPOSE,
    SCOPE_READ,
    SCOPE_REVIEW,
    Principal,
    RequireScope,
)


async def get_service(request: Request) -> GovernanceService:
    """The service (async: FastAPI runs a plain-def dependency in a worker thread, a hop per request)."""
    service: GovernanceService = request.app.state.service
    return service


ServiceDep = Annotated[GovernanceService, Depends(get_service)]

# The principal of a route's key, checked for the route's scope (401 / 429 / 403 otherwise).
require_propose = RequireScope(SCOPE_PROPOSE)
Proposer = Annotated[Principal, Depends(require_propose)]
Reader = Annotated[Principal, Depends(RequireScope(SCOPE_READ))]
Reviewer = Annotated[Principal, Depends(RequireScope(SCOPE_REVIEW))]
Auditor = Annotated[Principal, Depends(RequireScope(SCOPE_AUDIT))]
Manager = Annotated[Principal, Depends(RequireScope(SCOPE_POLICIES))]
Admin = Annotated[Principal, Depends(RequireScope(SCOPE_ADMIN))]

# A listing's page: at most 200 items, 50 by default; the cursor is the previous page's `next_cursor`.
PageLimit = Annotated[int, Query(ge=1, le=200)]
PageCursor = Annotated[str | None, Query(max_length=1024)]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the error statuses a route can answer (always with the envelope)."""
    descriptions = {
        400: "Invalid JSON or duplicate keys (validation_error).",
        401: "Missing or unknown API key (authentication_error).",
        403: "The key lacks the route's scope (permission_error: missing_scope), or the key may not do this "
        "(governance_error: actor_not_allowed, self_review, not_proposer).",
        404: "Not found (not_found), or an unknown capability (governance_error: unknown_capability).",
        409: "Conflict (governance_error): token used/expired/mismatched, not pending, idempotency, policy.",
        413: "Body too large (validation_error: body_too_large).",
        415: "Content-Type is not application/json (validation_error: unsupported_media_type).",
        422: "Invalid request, too deep, parameters too large or invalid, invalid policy.",
        429: "Rate limited (rate_limit_error), with Retry-After.",
        503: "Not ready (server_error: unavailable), with Retry-After.",
    }
    statuses = (401, 403, 429, *statuses)
    return {s: {"model": ErrorEnvelope, "description": descriptions[s]} for s in sorted(set(statuses))}


def created_or_replaced(model: type[Any], replaced: str, *statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` of a write that answers 201 when it created, 200 when it replaced (`replaced`
    says what existed), and the error statuses."""
    return {
        200: {"model": model, "description": replaced},
        201: {"model": model, "description": "Created."},
        **errors(*statuses),
    }


BODY_ERRORS = (400, 413, 415, 422)

__all__ = [
    "BODY_ERRORS",
    "Admin",
    "Auditor",
    "Manager",
    "PageCursor",
    "PageLimit",
    "Proposer",
    "Reader",
    "Reviewer",
    "ServiceDep",
    "created_or_replaced",
    "errors",
    "get_service",
    "require_propose",
]
