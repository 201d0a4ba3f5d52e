"""Execution reports: the one report of an ALLOW decision, from the key that proposed it, audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from aegis_sdk._wire.canonical import canonical_hash, normalise_json
from aegis_sdk.models import ExecutionRecord, ExecutionReport
from aegis_server.ids import new_audit_ref
from aegis_server.store.database import Room
from aegis_server.store.errors import AlreadyReported, NotAllowed, NotFound, NotProposer
from aegis_server.store.rows import audit_entry, format_timestamp
from aegis_server.store.schema import decisions, executions

__all__ = ["Executions"]


class Executions(Room):
    """The execution reports of one database."""

    async def record_execution(
        self,
        decision_id: str,
        report: ExecutionReport,
        now: datetime | None = None,
        *,
        api_key_id: str | None = None,
    ) -> ExecutionRecord:
        """Record the one execution report of an ALLOW decision (audited as "execution": status, error,
        duration, the canonical hash of the result and the reporting key; the result itself stays in
        `executions`). `api_key_id`: the reporting key; when given, it must be the key that proposed the
        decision (decisions from before migration 0002 have none and accept any key).
        Raises `NotFound`, `NotProposer`, `NotAllowed` (outcome is not ALLOW), `AlreadyReported`;
        `ValueError` when the result is not JSON data (e.g. NaN)."""
        db = self._db
        moment = now or db.now()
        result = normalise_json(report.result) if report.result is not None else None
        error = report.error.model_dump(mode="json") if report.error is not None else None
        recorded_at = format_timestamp(moment)
        audit_ref = new_audit_ref()
        written: list[int] = []

        def write(conn: sa.Connection) -> None:
            row = conn.execute(
                sa.select(
                    decisions.c.outcome,
                    decisions.c.actor_id,
                    decisions.c.capability,
                    decisions.c.session_id,
                    decisions.c.api_key_id,
                ).where(decisions.c.decision_id == decision_id)
            ).first()
            if row is None:
                raise NotFound("decision", decision_id)
            if api_key_id is not None and row.api_key_id is not None and row.api_key_id != api_key_id:
                raise NotProposer(decision_id, api_key_id)
            if row.outcome != "ALLOW":
                raise NotAllowed(decision_id, row.outcome)
            inserted = conn.execute(
                db.upsert(executions)
                .values(
                    decision_id=decision_id,
                    status=report.status,
                    result=result,
                    error=error,
                    duration_ms=report.duration_ms,
                    recorded_at=recorded_at,
                    audit_ref=audit_ref,
                )
                .on_conflict_do_nothing(index_elements=["decision_id"])
            )
            if inserted.rowcount != 1:
                raise AlreadyReported(decision_id)
            payload = {
                "status": report.status,
                "error": error,
                "duration_ms": report.duration_ms,
                "result_sha256": canonical_hash(result) if result is not None else None,
                "api_key_id": api_key_id,
            }
            entry = audit_entry(
                "execution", row, payload, decision_id=decision_id, audit_ref=audit_ref, outcome=report.status
            )
            written.append(db.append_sync(conn, [entry], moment))

        await db.write_sync(write)
        db.raise_chain_floor(written[-1])
        return ExecutionRecord(
            decision_id=decision_id, status=report.status, recorded_at=recorded_at, audit_ref=audit_ref
        )

    async def get_execution(self, decision_id: str) -> dict[str, Any] | None:
        """The stored execution report of a decision (status, result, error, duration_ms, recorded_at,
        audit_ref), or None."""
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(executions).where(executions.c.decision_id == decision_id))).first()
        return dict(row._mapping) if row is not None else None
