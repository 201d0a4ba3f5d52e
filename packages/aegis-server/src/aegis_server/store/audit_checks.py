"""Checks of the decisions table against the audit: every decision row agrees with its "decision" record
(and the review that followed), every "decision" record has its row, and no decision confirms a parent
that was never open to confirmation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from aegis_sdk.models import AuditProblem
from aegis_server.store.database import Room
from aegis_server.store.schema import audit_records, decisions

__all__ = ["VERIFY_BATCH", "DecisionAuditCheck"]

VERIFY_BATCH = 2000


class DecisionAuditCheck(Room):
    """`verify_decisions`: the decisions of one database compared with their audit records."""

    async def verify_decisions(self, *, batch_size: int = VERIFY_BATCH, max_problems: int = 20) -> list[AuditProblem]:
        """Compare the decisions table with the audit: every decision row needs its "decision" audit record
        (same audit_ref, actor, capability, params_hash, and an outcome the audit explains: the recorded
        one, or DENY after a denied or expired review), and every "decision" record its decision row.
        Returns at most `max_problems` problems (an empty list: they agree). Batched, constant memory."""
        problems: list[AuditProblem] = []
        last = 0
        audit_columns = (
            audit_records.c.decision_id,
            audit_records.c.event_type,
            audit_records.c.audit_ref,
            audit_records.c.actor_id,
            audit_records.c.capability,
            audit_records.c.outcome,
            audit_records.c.sequence,
            sa.cast(audit_records.c.payload, sa.Text).label("payload_text"),
        )
        audited_events = ("decision", "review", "review_expired")
        while len(problems) < max_problems:
            async with self._db.read() as conn:
                rows = (
                    await conn.execute(
                        sa.select(
                            decisions.c.row_id,
                            decisions.c.decision_id,
                            decisions.c.outcome,
                            decisions.c.audit_ref,
                            decisions.c.actor_id,
                            decisions.c.capability,
                            decisions.c.params_hash,
                            decisions.c.reason,
                            decisions.c.risk_score,
                            decisions.c.constraints,
                            decisions.c.policy_ids,
                            decisions.c.parent_decision_id,
                            decisions.c.api_key_id,
                            decisions.c.review_status,
                            decisions.c.reviewer,
                            decisions.c.policy_version,
                            decisions.c.shadow,
                        )
                        .where(decisions.c.row_id > last)
                        .order_by(decisions.c.row_id)
                        .limit(batch_size)
                    )
                ).all()
                if not rows:
                    break
                records = (
                    await conn.execute(
                        sa.select(*audit_columns)
                        .where(
                            audit_records.c.decision_id.in_([row.decision_id for row in rows]),
                            audit_records.c.event_type.in_(audited_events),
                        )
                        .order_by(audit_records.c.sequence)
                    )
                ).all()
            by_decision: dict[str, list[Any]] = {}
            for record in records:
                by_decision.setdefault(str(record.decision_id), []).append(record)
            for row in rows:
                problem = _decision_disagreement(row, by_decision.get(str(row.decision_id), []))
                if problem is not None:
                    problems.append(problem)
            last = int(rows[-1].row_id)
            if len(rows) < batch_size:
                break
        if len(problems) < max_problems:
            async with self._db.read() as conn:
                orphans = (
                    await conn.execute(
                        sa.select(audit_records.c.sequence, audit_records.c.decision_id)
                        .where(
                            audit_records.c.event_type == "decision",
                            ~sa.exists().where(decisions.c.decision_id == audit_records.c.decision_id),
                        )
                        .order_by(audit_records.c.sequence)
                        .limit(max_problems - len(problems))
                    )
                ).all()
            problems.extend(
                AuditProblem(
                    code="audit_without_decision",
                    message=f"audit record #{orphan.sequence} records decision {orphan.decision_id}, which the "
                    "decisions table does not hold (its row was deleted)",
                    sequence=int(orphan.sequence),
                    decision_id=orphan.decision_id,
                )
                for orphan in orphans
            )
        if len(problems) < max_problems:
            problems.extend(await self._unearned_confirmations(max_problems - len(problems)))
        return problems[:max_problems]

    async def _unearned_confirmations(self, limit: int) -> list[AuditProblem]:
        """ALLOW decisions confirmed from a parent no token is issued for (neither REQUIRE_CONFIRMATION nor
        an approved ESCALATE): a token minted with the secret. The parents' own rows are checked against
        their audit records by the caller."""
        parent = decisions.alias("parent")
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(decisions.c.decision_id, parent.c.decision_id.label("parent_id"), parent.c.outcome)
                    .join(parent, parent.c.decision_id == decisions.c.parent_decision_id)
                    .where(
                        ~sa.or_(
                            parent.c.outcome == "REQUIRE_CONFIRMATION",
                            sa.and_(parent.c.outcome == "ESCALATE", parent.c.review_status == "approved"),
                        )
                    )
                    .order_by(decisions.c.row_id)
                    .limit(limit)
                )
            ).all()
        return [
            AuditProblem(
                code="confirmation_without_approval",
                message=f"decision {row.decision_id} confirms decision {row.parent_id}, which is {row.outcome} and "
                "was never open to confirmation (a token minted outside the server, or an edited row)",
                decision_id=row.decision_id,
            )
            for row in rows
        ]


def _decision_disagreement(row: Any, records: Sequence[Any]) -> AuditProblem | None:
    """How a decision row disagrees with its audit records (in chain order), or None. Every column fixed
    when the decision was made is compared with its "decision" record; the review columns with its last
    "review" / "review_expired" record."""
    decision_record = next((record for record in records if record.event_type == "decision"), None)
    if decision_record is None:
        return AuditProblem(
            code="decision_unaudited",
            message=f"decision {row.decision_id} has no 'decision' audit record (it was deleted, or the row was "
            "inserted outside the server)",
            decision_id=row.decision_id,
        )
    payload = _payload_of(decision_record)
    review_record = next(
        (record for record in reversed(records) if record.event_type in ("review", "review_expired")), None
    )
    outcome = "DENY" if review_record is not None and review_record.outcome == "DENY" else decision_record.outcome
    review = _payload_of(review_record) if review_record is not None else {}
    expected: list[tuple[str, Any, Any]] = [
        ("outcome", row.outcome, outcome),
        ("audit_ref", row.audit_ref, decision_record.audit_ref),
        ("actor_id", row.actor_id, decision_record.actor_id),
        ("capability", row.capability, decision_record.capability),
    ]
    # Payload fields: those a 0.1 record lacks are not compared (it did not name its key, for instance).
    for column, field in (
        ("params_hash", "params_hash"),
        ("reason", "reason"),
        ("risk_score", "risk_score"),
        ("constraints", "constraints"),
        ("policy_ids", "policy_ids"),
        ("parent_decision_id", "parent_decision_id"),
        ("api_key_id", "api_key_id"),
        ("policy_version", "policy_version"),
        ("shadow", "shadow"),
    ):
        if column == "reason" and review_record is not None:
            continue  # an expired review rewrites the reason; its record holds what happened
        # `shadow` is left out of a record when empty; records that name their policy version would carry it.
        if field in payload or column == "params_hash" or (column == "shadow" and "policy_version" in payload):
            stored = getattr(row, column)
            if column in ("constraints", "policy_ids", "shadow"):
                stored = _as_json_value(stored)
            expected.append((column, stored, payload.get(field)))
    if review_record is not None:
        status = "expired" if review_record.event_type == "review_expired" else review.get("status")
        expected.append(("review_status", row.review_status, status))
        if review_record.event_type == "review":
            expected.append(("reviewer", row.reviewer, review.get("reviewer")))
    elif row.review_status not in (None, "pending"):
        expected.append(("review_status", row.review_status, "pending" if row.outcome == "ESCALATE" else None))
    different = [name for name, stored, audited in expected if stored != audited]
    if not different:
        return None
    return AuditProblem(
        code="decision_mismatch",
        message=f"decision {row.decision_id} differs from its audit record #{decision_record.sequence} in "
        f"{', '.join(different)} (the decisions table was edited)",
        sequence=int(decision_record.sequence),
        decision_id=row.decision_id,
    )


def _payload_of(record: Any) -> dict[str, Any]:
    try:
        payload = json.loads(record.payload_text)
    except (TypeError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _as_json_value(value: Any) -> Any:
    """A JSON column's value as it reads back from JSON (a driver may hand it back as text)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
