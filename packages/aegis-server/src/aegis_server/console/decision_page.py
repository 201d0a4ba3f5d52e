"""The decision page: one decision as it stands (outcome, reason, risk, constraints, rules, the policy
version it was made under, what the rules in shadow mode would have decided, review), the state of its
confirmation/approval token (never the token itself), its execution report and its whole audit trail. Keys
with governance:read or governance:review see the decision; the trail needs audit:read, as
`GET /api/v1/audit/log/{id}` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from aegis_sdk.models import AuditRecord, Decision
from aegis_server.console.inbox import Parameter, parameters_of
from aegis_server.console.rendering import error_page, render
from aegis_server.console.sessions import ConsoleUser, signed_in
from aegis_server.governance.errors import NotFound
from aegis_server.governance.service import GovernanceService
from aegis_server.security import SCOPE_AUDIT, SCOPE_READ, SCOPE_REVIEW
from aegis_server.store import Store

__all__ = ["ExecutionView", "TokenState", "router"]

router = APIRouter()
_MAX_ID = 100


@dataclass(frozen=True)
class TokenState:
    """What can be said about a decision's token without showing it."""

    issued: bool
    used: bool
    used_by: str | None
    expires_at: datetime | None


@dataclass(frozen=True)
class ExecutionView:
    """The execution report, without its result (which may hold what the action returned)."""

    status: str
    error: Any
    duration_ms: float | None
    recorded_at: str
    audit_ref: str
    has_result: bool


def _token_state(decision: Decision, used: bool, used_by: str | None, expires_at: datetime | None) -> TokenState:
    issued = decision.confirmation_token is not None or expires_at is not None
    return TokenState(issued=issued, used=used, used_by=used_by, expires_at=expires_at)


def _proposal_parameters(trail: list[AuditRecord]) -> list[Parameter] | None:
    for record in trail:
        if record.event_type == "proposal":
            return parameters_of(record.payload)
    return None


@router.get("/decisions/{decision_id}")
async def decision_page(
    request: Request,
    decision_id: str,
    user: Annotated[ConsoleUser, Depends(signed_in(SCOPE_READ, SCOPE_REVIEW))],
) -> Response:
    service: GovernanceService = request.app.state.service
    store: Store = request.app.state.store
    missing = f"There is no decision {decision_id[:_MAX_ID]!r}. Check the id, or find it in the audit log."
    if len(decision_id) > _MAX_ID:
        return error_page(request, 404, missing, user=user)
    try:
        decision = await service.get_decision(decision_id)  # expires an overdue review first, as the API does
    except NotFound:
        return error_page(request, 404, missing, user=user)
    escalated = decision.review is not None
    if not escalated and not user.has_scope(SCOPE_READ):
        # A reviewer's key sees what it may review, as in the inbox; any other decision needs the scope the
        # API's GET /governance/decisions/{id} needs.
        return error_page(
            request,
            403,
            f"Your API key {user.name!r} lacks the scope 'governance:read' this decision needs (it was never "
            "escalated for review). Sign in with a key that has it (or admin).",
            user=user,
        )
    binding = await store.get_decision_binding(decision_id)
    trail = (await service.audit_trail(decision_id)).records
    stored_execution = await store.get_execution(decision_id)
    execution = None
    if stored_execution is not None:
        execution = ExecutionView(
            status=str(stored_execution["status"]),
            error=stored_execution.get("error"),
            duration_ms=stored_execution.get("duration_ms"),
            recorded_at=str(stored_execution["recorded_at"]),
            audit_ref=str(stored_execution["audit_ref"]),
            has_result=stored_execution.get("result") is not None,
        )
    token = _token_state(
        decision,
        binding.token_used if binding is not None else False,
        binding.token_used_by if binding is not None else None,
        binding.token_expires_at if binding is not None else None,
    )
    pending = decision.review is not None and decision.review.status == "pending"
    context = {
        "decision": decision,
        "binding": binding,
        "token": token,
        "execution": execution,
        "trail": trail if user.has_scope(SCOPE_AUDIT) else None,
        # The parameters (sensitive ones redacted) as the inbox shows them: of escalations, or to audit readers.
        "parameters_hidden": not (escalated or user.has_scope(SCOPE_AUDIT)),
        "parameters": _proposal_parameters(trail),
        "pending": pending,
        "review_deadline": decision.expires_at if pending else None,
    }
    return render(request, "decision.html", context, user=user)
