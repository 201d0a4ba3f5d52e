"""`client.audit`: the hash-chained audit log.

The call builders (no I/O) and the two namespaces that send what they build: `Audit` for `AegisClient`,
`AsyncAudit` for `AsyncAegisClient`."""

from __future__ import annotations

from datetime import datetime

import httpx

from aegis_sdk._paging import AsyncPageIterator, Pager, SyncPageIterator, listing_pager
from aegis_sdk._parsing import model_from, model_parser
from aegis_sdk._request import AsyncSender, Call, Resource, SyncSender
from aegis_sdk._validation import path_segment
from aegis_sdk.models import AuditRecord, AuditTrail, AuditVerification


def _audit_record(obj: object, response: httpx.Response) -> AuditRecord:
    return model_from(AuditRecord, obj, response)


def audit_log_pager(
    actor_id: str | None,
    capability: str | None,
    outcome: str | None,
    session_id: str | None,
    decision_id: str | None,
    event_type: str | None,
    since: str | datetime | None,
    until: str | datetime | None,
    limit: int | None,
) -> Pager[AuditRecord]:
    """The listing behind `audit.log()` (its arguments in its order); bad filters raise now."""
    filters = {
        "actor_id": actor_id,
        "capability": capability,
        "outcome": outcome,
        "session_id": session_id,
        "decision_id": decision_id,
        "event_type": event_type,
    }
    return listing_pager("audit_log", "/audit/log", _audit_record, filters, since=since, until=until, limit=limit)


def audit_trail_call(decision_id: str) -> Call[AuditTrail]:
    return Call(
        "GET",
        f"/audit/log/{path_segment(decision_id, 'decision_id')}",
        model_parser(AuditTrail),
        operation="audit_trail",
    )


def audit_verify_call() -> Call[AuditVerification]:
    return Call("GET", "/audit/verify", model_parser(AuditVerification), operation="verify_audit")


class Audit(Resource[SyncSender]):
    """`client.audit`: the hash-chained audit log."""

    def log(
        self,
        *,
        actor_id: str | None = None,
        capability: str | None = None,
        outcome: str | None = None,
        session_id: str | None = None,
        decision_id: str | None = None,
        event_type: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        limit: int | None = None,
    ) -> SyncPageIterator[AuditRecord]:
        """Every matching audit record, fetched page by page as you iterate."""
        pager = audit_log_pager(actor_id, capability, outcome, session_id, decision_id, event_type, since, until, limit)
        return SyncPageIterator(self._client, pager)

    def trail(self, decision_id: str) -> AuditTrail:
        """Every record of one decision: proposal, decision, review, confirmation, execution."""
        return self._client._request(audit_trail_call(decision_id))

    def verify(self) -> AuditVerification:
        """Walk the hash chain and report the first broken link, if any."""
        return self._client._request(audit_verify_call())


class AsyncAudit(Resource[AsyncSender]):
    """`client.audit`: the hash-chained audit log."""

    def log(
        self,
        *,
        actor_id: str | None = None,
        capability: str | None = None,
        outcome: str | None = None,
        session_id: str | None = None,
        decision_id: str | None = None,
        event_type: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        limit: int | None = None,
    ) -> AsyncPageIterator[AuditRecord]:
        """Every matching audit record, fetched page by page as you iterate."""
        pager = audit_log_pager(actor_id, capability, outcome, session_id, decision_id, event_type, since, until, limit)
        return AsyncPageIterator(self._client, pager)

    async def trail(self, decision_id: str) -> AuditTrail:
        """Every record of one decision: proposal, decision, review, confirmation, execution."""
        return await self._client._request(audit_trail_call(decision_id))

    async def verify(self) -> AuditVerification:
        """Walk the hash chain and report the first broken link, if any."""
        return await self._client._request(audit_verify_call())


__all__ = ["AsyncAudit", "Audit", "audit_log_pager", "audit_trail_call", "audit_verify_call"]
