"""Reviews of ESCALATE decisions: approval or denial before the deadline, and expiry after it (the final
DENY), each audited in the transaction that changes the decision."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis_sdk.models import Decision
from aegis_server.store.database import Room
from aegis_server.store.errors import NotFound, NotPending
from aegis_server.store.outbox import REVIEW_EXPIRED, REVIEW_RESOLVED, review_event_row
from aegis_server.store.rows import audit_entry, decision_from_row, format_timestamp
from aegis_server.store.schema import decisions, webhook_events

__all__ = ["Reviews"]

# What the review audit records name of a decision.
_REVIEWED_COLUMNS = (
    decisions.c.decision_id,
    decisions.c.actor_id,
    decisions.c.capability,
    decisions.c.session_id,
    decisions.c.review_deadline,
)


def _expired_entry(row: Any) -> dict[str, Any]:
    """The "review_expired" audit entry of the decision in `row` (of `_REVIEWED_COLUMNS`)."""
    deadline = format_timestamp(row.review_deadline) if row.review_deadline else None
    payload = {"status": "expired", "final_outcome": "DENY", "review_deadline": deadline}
    return audit_entry("review_expired", row, payload, decision_id=row.decision_id, outcome="DENY")


class Reviews(Room):
    """The reviews of one database's ESCALATE decisions."""

    async def resolve_review(
        self,
        decision_id: str,
        *,
        approve: bool,
        reviewer: str,
        note: str | None,
        now: datetime,
        token: str | None = None,
        token_expires_at: datetime | None = None,
        reviewer_key_id: str | None = None,
    ) -> Decision:
        """Approve or deny a pending ESCALATE before its deadline. `reviewer_key_id`: the reviewing API key
        (audited; None: a review through the CLI, audited as `reviewer_via: "cli"`). On approval `token`
        (and its expiry) become the decision's confirmation_token / expires_at and the outcome stays
        ESCALATE (the proposer resubmits with the token); a denial makes the outcome the final DENY.
        Raises `NotFound`, or `NotPending` with the current status; a review attempted after the deadline
        marks the decision expired (audited, final DENY) and raises `NotPending(status="expired")`."""
        if approve and (token is None or token_expires_at is None):
            raise ValueError("approving a review needs the approval token and its expiry")
        async with self._db.write() as conn:
            row = (
                await conn.execute(
                    sa.select(decisions.c.outcome, decisions.c.review_status, *_REVIEWED_COLUMNS).where(
                        decisions.c.decision_id == decision_id
                    )
                )
            ).first()
            if row is None:
                raise NotFound("decision", decision_id)
            if row.review_status is None:
                raise NotPending(decision_id, "not_escalated")
            if row.review_status != "pending":
                raise NotPending(decision_id, row.review_status)
            audit = self._db.audit(conn, now)
            if row.review_deadline is not None and row.review_deadline <= now:
                if not await self._mark_expired(conn, decision_id, now):
                    raise NotPending(decision_id, "resolved concurrently")
                await audit.append_many([_expired_entry(row)])
                await self._write_events(conn, REVIEW_EXPIRED, [decision_id], now)
                expired = True
            else:
                expired = False
                status = "approved" if approve else "denied"
                resolved_at = format_timestamp(now)
                values: dict[str, Any] = {
                    "outcome": "ESCALATE" if approve else "DENY",
                    "review_status": status,
                    "reviewer": reviewer,
                    "review_note": note,
                    "review_resolved_at": resolved_at,
                }
                if approve:
                    assert token_expires_at is not None
                    values.update(
                        confirmation_token=token,
                        token_expires_at=token_expires_at,
                        expires_at=format_timestamp(token_expires_at),
                    )
                else:
                    values["reason"] = decisions.c.reason + f"; final DENY: the reviewer {reviewer} denied it"
                pending = sa.and_(decisions.c.decision_id == decision_id, decisions.c.review_status == "pending")
                changed = await conn.execute(sa.update(decisions).where(pending).values(**values))
                if changed.rowcount != 1:
                    raise NotPending(decision_id, "resolved concurrently")
                payload = {
                    "status": status,
                    "reviewer": reviewer,
                    "note": note,
                    "resolved_at": resolved_at,
                    "token_expires_at": format_timestamp(token_expires_at) if token_expires_at else None,
                    "api_key_id": reviewer_key_id,
                    "reviewer_via": "api" if reviewer_key_id is not None else "cli",
                }
                outcome = None if approve else "DENY"
                await audit.append_many([audit_entry("review", row, payload, decision_id=decision_id, outcome=outcome)])
                updated = await self._write_events(conn, REVIEW_RESOLVED, [decision_id], now)
        self._db.events_written()
        if expired:  # committed: the expiry stays, the review is refused
            raise NotPending(decision_id, "expired")
        return decision_from_row(updated[0])

    async def expire_due_reviews(self, now: datetime, *, limit: int = 500) -> list[str]:
        """Mark pending reviews whose deadline is at or before `now` as expired: outcome becomes the final
        DENY, review.status "expired", audited as "review_expired".
        Returns the ids expired by this call (at most `limit`; call again while it returns a full list).
        Safe to run on several replicas at once: each review expires once."""
        async with self._db.read() as conn:
            due = (
                await conn.execute(
                    sa.select(*_REVIEWED_COLUMNS)
                    .where(decisions.c.review_status == "pending", decisions.c.review_deadline <= now)
                    .order_by(decisions.c.review_deadline, decisions.c.decision_id)
                    .limit(limit)
                )
            ).all()
        if not due:
            return []
        async with self._db.write() as conn:
            # Every row update first, then the audit appends: the chain lock is always the last lock a
            # transaction takes, so two sweeps on two replicas cannot deadlock.
            expired = [row for row in due if await self._mark_expired(conn, row.decision_id, now)]
            await self._db.audit(conn, now).append_many([_expired_entry(row) for row in expired])
            await self._write_events(conn, REVIEW_EXPIRED, [row.decision_id for row in expired], now)
        if expired:
            self._db.events_written()
        return [row.decision_id for row in expired]

    @staticmethod
    async def _write_events(
        conn: AsyncConnection, event_type: str, decision_ids: list[str], now: datetime
    ) -> list[Any]:
        """Write the `event_type` outbox event of each decision (read as the transaction left it), in the
        transaction; returns those rows."""
        if not decision_ids:
            return []
        rows = (
            await conn.execute(
                sa.select(decisions).where(decisions.c.decision_id.in_(decision_ids)).order_by(decisions.c.row_id)
            )
        ).all()
        await conn.execute(sa.insert(webhook_events), [review_event_row(event_type, row, now) for row in rows])
        return list(rows)

    @staticmethod
    async def _mark_expired(conn: AsyncConnection, decision_id: str, now: datetime) -> bool:
        changed = await conn.execute(
            sa.update(decisions)
            .where(decisions.c.decision_id == decision_id, decisions.c.review_status == "pending")
            .values(
                outcome="DENY",
                reason=decisions.c.reason + "; final DENY: no reviewer decided before the review deadline",
                review_status="expired",
                review_resolved_at=format_timestamp(now),
            )
        )
        return changed.rowcount == 1
