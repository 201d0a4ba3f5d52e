"""`/api/v1/audit/...`: the hash-chained audit log, one decision's trail, and chain verification (the chain,
the latest signed checkpoint and the decisions table, as `aegis-server audit verify` checks them)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from aegis_sdk.models import AuditPage, AuditTrail, AuditVerification
from aegis_server.api.common import Auditor, PageCursor, PageLimit, ServiceDep, errors
from aegis_server.store import AuditFilters

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("/log", response_model=AuditPage, summary="The audit log, in chain order", responses=errors(422))
async def audit_log(
    service: ServiceDep,
    _: Auditor,
    actor_id: str | None = None,
    capability: str | None = None,
    outcome: str | None = None,
    session_id: str | None = None,
    decision_id: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> AuditPage:
    filters = AuditFilters(
        actor_id=actor_id,
        capability=capability,
        outcome=outcome,
        session_id=session_id,
        decision_id=decision_id,
        event_type=event_type,
        since=since,
        until=until,
    )
    return await service.audit_log(filters, limit=limit, cursor=cursor)


@router.get(
    "/log/{decision_id}",
    response_model=AuditTrail,
    summary="Every audit record of one decision",
    responses=errors(404),
)
async def audit_trail(decision_id: str, service: ServiceDep, _: Auditor) -> AuditTrail:
    return await service.audit_trail(decision_id)


@router.get(
    "/verify",
    response_model=AuditVerification,
    summary="Verify the audit: the hash chain, the latest signed checkpoint and the decisions table",
    responses=errors(),
)
async def verify(service: ServiceDep, _: Auditor) -> AuditVerification:
    return await service.verify_audit()


__all__ = ["router"]
