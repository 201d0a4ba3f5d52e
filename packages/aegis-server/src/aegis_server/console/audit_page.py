"""`/console/audit` (scope audit:read): the audit log, newest first, with the filters of `GET /api/v1/audit/log`
read by the same parser (`aegis_sdk._wire.listing.read_listing_query`, which the fake platform uses too), so
a bad value gets the API's message, shown as an alert. `POST /console/audit/verify` runs the verification
of `GET /api/v1/audit/verify` (chain, latest signed checkpoint, decisions table) and shows its result."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aegis_sdk._wire.envelope import ApiError
from aegis_sdk._wire.listing import read_listing_query
from aegis_sdk.models import AuditPage, AuditVerification
from aegis_server.console.rendering import render
from aegis_server.console.sessions import ConsoleUser, csrf_protected, signed_in
from aegis_server.governance.errors import InvalidRequest
from aegis_server.governance.service import GovernanceService
from aegis_server.security import SCOPE_AUDIT

__all__ = ["FILTER_FIELDS", "audit_page", "router", "verify_page"]

router = APIRouter()

FILTER_FIELDS = ("actor_id", "capability", "outcome", "session_id", "decision_id", "event_type", "since", "until")
"""The filters of the audit log, in the order the form shows them (those of `GET /api/v1/audit/log`)."""
_MAX_CURSOR = 1024  # as the API's `cursor` query parameter
_MAX_VALUE = 1000


def _given(request: Request) -> dict[str, str]:
    """The filters the form sent (an empty field is no filter), and the page size if given."""
    params = request.query_params
    return {name: params[name] for name in (*FILTER_FIELDS, "limit") if params.get(name, "").strip()}


async def _listing(service: GovernanceService, given: dict[str, str], cursor: str | None) -> AuditPage:
    """The page the filters select, newest first; `ApiError` / `InvalidRequest` for a bad value."""
    too_long = next((name for name, value in given.items() if len(value) > _MAX_VALUE), None)
    if too_long is not None:
        raise InvalidRequest(f"The request is invalid — {too_long}: must be at most {_MAX_VALUE} characters.")
    if cursor is not None and len(cursor) > _MAX_CURSOR:
        raise InvalidRequest(f"The request is invalid — cursor: must be at most {_MAX_CURSOR} characters.")
    filters, limit = read_listing_query(given, audit=True)
    return await service.audit_log(dataclasses.replace(filters, order="desc"), limit=limit, cursor=cursor)


async def _page(
    request: Request, user: ConsoleUser, *, verification: AuditVerification | None = None, status_code: int = 200
) -> HTMLResponse:
    service: GovernanceService = request.app.state.service
    given = _given(request)
    cursor = request.query_params.get("cursor") or None
    context: dict[str, Any] = {
        "fields": FILTER_FIELDS,
        "values": given,
        "verification": verification,
        "problem": None,
        "records": [],
        "older": None,
        "newest": None,
        "filtered": any(name in given for name in FILTER_FIELDS),
        "paged": cursor is not None,
    }
    try:
        page = await _listing(service, given, cursor)
    except (ApiError, InvalidRequest) as error:
        context["problem"] = error.message
        return render(request, "audit.html", context, user=user, status_code=400)
    context["records"] = page.items
    if page.next_cursor is not None:
        context["older"] = "/console/audit?" + urlencode({**given, "cursor": page.next_cursor})
    if cursor is not None:
        context["newest"] = "/console/audit" + (f"?{urlencode(given)}" if given else "")
    return render(request, "audit.html", context, user=user, status_code=status_code)


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, user: Annotated[ConsoleUser, Depends(signed_in(SCOPE_AUDIT))]) -> HTMLResponse:
    return await _page(request, user)


@router.post("/audit/verify", response_class=HTMLResponse)
async def verify_page(
    request: Request, user: Annotated[ConsoleUser, Depends(csrf_protected(SCOPE_AUDIT))]
) -> HTMLResponse:
    """Verify the audit and show the result above the newest records (verifying changes nothing, so the
    answer is the page itself rather than a redirect)."""
    service: GovernanceService = request.app.state.service
    verification = await service.verify_audit()
    return await _page(request, user, verification=verification)
