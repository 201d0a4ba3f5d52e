"""Reading the audit: the log (paged, filtered), one decision's trail, and the verification of the chain
against its latest signed checkpoint and the decisions table.
"""

from __future__ import annotations

from aegis_sdk.models import AuditPage, AuditTrail, AuditVerification
from aegis_server.audit.anchor import AuditAnchor
from aegis_server.audit.verification import verify_audit
from aegis_server.governance.errors import NotFound
from aegis_server.governance.queries import checked_cursor, utc_filters
from aegis_server.store import AuditFilters, Store

__all__ = ["AuditReads"]


class AuditReads:
    """The audit as the auditors read it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def audit_log(self, filters: AuditFilters, *, limit: int, cursor: str | None) -> AuditPage:
        with checked_cursor():
            items, next_cursor = await self.store.audit_log(utc_filters(filters), limit, cursor)
        return AuditPage(items=items, next_cursor=next_cursor)

    async def audit_trail(self, decision_id: str) -> AuditTrail:
        records = await self.store.audit_trail(decision_id)
        if not records and await self.store.get_decision(decision_id) is None:
            raise NotFound("decision", decision_id)
        return AuditTrail(decision_id=decision_id, records=records)

    async def verify_audit(self, anchor: AuditAnchor | None) -> AuditVerification:
        """The chain, the latest signed checkpoint of `anchor` (None: nothing anchored) and the decisions
        table (`audit.verification.verify_audit`)."""
        checkpoint = await anchor.latest() if anchor is not None else None
        return await verify_audit(
            self.store,
            checkpoint=checkpoint,
            public_key=anchor.public_key if anchor is not None else None,
            checkpoint_directory=anchor.directory.path if anchor is not None else None,
        )
