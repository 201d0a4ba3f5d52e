"""Execution reports in a batch: many reports of ALLOW decisions, each checked as `Executions.record_execution`
checks one, written in one transaction with one append to the audit chain (an "execution" record per report).

A report that cannot be recorded (unknown decision, another key's decision, not an ALLOW, already reported) is
that report's answer; it does not stop the others."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from aegis_sdk._wire.canonical import canonical_hash, normalise_json
from aegis_sdk.models import ExecutionBatchItem
from aegis_server.ids import new_audit_ref
from aegis_server.store.database import Database
from aegis_server.store.rows import audit_entry, format_timestamp
from aegis_server.store.schema import decisions, executions

__all__ = ["BatchOutcome", "record_execution_batch"]


@dataclass
class BatchOutcome:
    """What happened to one report: `recorded` (with `record`), or `refused` with the reason (`not_found`,
    `not_proposer`, `not_allowed` with `outcome`, `already_reported` with the stored report in `stored`,
    `invalid_result`)."""

    decision_id: str
    recorded: bool
    reason: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None
    stored: dict[str, Any] | None = None


async def record_execution_batch(
    db: Database, items: Sequence[ExecutionBatchItem], now: datetime | None = None, *, api_key_id: str | None
) -> list[BatchOutcome]:
    """Record every report of `items` that may be recorded, in one transaction; one outcome per item, in order.
    `api_key_id`: the reporting key, which must be the one that proposed each decision (None skips the check)."""
    moment = now or db.now()
    recorded_at = format_timestamp(moment)
    prepared: list[tuple[ExecutionBatchItem, Any, Any] | None] = []
    outcomes: list[BatchOutcome] = []
    for item in items:
        try:
            result = normalise_json(item.result) if item.result is not None else None
        except ValueError:
            prepared.append(None)
            outcomes.append(BatchOutcome(item.decision_id, False, "invalid_result"))
            continue
        error = item.error.model_dump(mode="json") if item.error is not None else None
        prepared.append((item, result, error))
        outcomes.append(BatchOutcome(item.decision_id, False))
    written: list[int] = []

    def write(conn: sa.Connection) -> None:
        ids = sorted({entry[0].decision_id for entry in prepared if entry is not None})
        rows = {
            row.decision_id: row
            for row in conn.execute(
                sa.select(
                    decisions.c.decision_id,
                    decisions.c.outcome,
                    decisions.c.actor_id,
                    decisions.c.capability,
                    decisions.c.session_id,
                    decisions.c.api_key_id,
                ).where(decisions.c.decision_id.in_(ids))
            )
        }
        entries: list[dict[str, Any]] = []
        for index, entry in enumerate(prepared):
            if entry is None:
                continue
            item, result, error = entry
            outcome = outcomes[index]
            row = rows.get(item.decision_id)
            if row is None:
                outcome.reason = "not_found"
                continue
            if api_key_id is not None and row.api_key_id is not None and row.api_key_id != api_key_id:
                outcome.reason = "not_proposer"
                continue
            if row.outcome != "ALLOW":
                outcome.reason, outcome.outcome = "not_allowed", row.outcome
                continue
            audit_ref = new_audit_ref()
            inserted = conn.execute(
                db.upsert(executions)
                .values(
                    decision_id=item.decision_id,
                    status=item.status,
                    result=result,
                    error=error,
                    duration_ms=item.duration_ms,
                    recorded_at=recorded_at,
                    audit_ref=audit_ref,
                )
                .on_conflict_do_nothing(index_elements=["decision_id"])
            )
            if inserted.rowcount != 1:
                outcome.reason = "already_reported"
                stored = conn.execute(
                    sa.select(executions.c.status, executions.c.recorded_at, executions.c.audit_ref).where(
                        executions.c.decision_id == item.decision_id
                    )
                ).first()
                if stored is not None:
                    outcome.stored = {
                        "decision_id": item.decision_id,
                        "status": stored.status,
                        "recorded_at": stored.recorded_at,
                        "audit_ref": stored.audit_ref,
                    }
                continue
            payload = {
                "status": item.status,
                "error": error,
                "duration_ms": item.duration_ms,
                "result_sha256": canonical_hash(result) if result is not None else None,
                "api_key_id": api_key_id,
            }
            entries.append(
                audit_entry(
                    "execution", row, payload, decision_id=item.decision_id, audit_ref=audit_ref, outcome=item.status
                )
            )
            outcome.recorded = True
            outcome.record = {
                "decision_id": item.decision_id,
                "status": item.status,
                "recorded_at": recorded_at,
                "audit_ref": audit_ref,
            }
        if entries:
            written.append(db.append_sync(conn, entries, moment))

    await db.write_sync(write)
    if written:
        db.raise_chain_floor(written[-1])
    return outcomes
