"""Shared pieces of the routers: the service dependency and the documented error answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request

from aegis_sdk.models import ErrorEnvelope

if TYPE_CHECKING:
    from aegis_server.governance.service import GovernanceService


async def get_service(request: Request) -> GovernanceService:
    """The service (async: FastAPI runs a plain-def dependency in a worker thread, a hop per request)."""
    service: GovernanceService = request.app.state.service
    return service


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


BODY_ERRORS = (400, 413, 415, 422)

__all__ = ["BODY_ERRORS", "errors", "get_service"]
