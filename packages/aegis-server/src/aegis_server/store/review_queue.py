"""The review queue: pending ESCALATE decisions, soonest deadline first, with what a reviewer reads about
each (the actor, the capability, the session, and the proposal as the audit keeps it — sensitive parameters
already replaced by digests). One read for the page, one for the proposals, whatever the page's size."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from aegis_sdk.models import Decision
from aegis_server.store.database import Room
from aegis_server.store.rows import decision_from_row
from aegis_server.store.schema import audit_records, decisions

__all__ = ["PendingReview", "ReviewQueue"]


@dataclass(frozen=True)
class PendingReview:
    """A decision awaiting review and the facts the decision itself does not carry."""

    decision: Decision
    actor_id: str
    actor_type: str
    capability: str
    session_id: str | None
    deadline: datetime
    proposal: Mapping[str, Any] | None  # the "proposal" audit record's payload (None: not found)


class ReviewQueue(Room):
    """The pending reviews of one database."""

    async def pending_reviews(self, now: datetime, limit: int) -> tuple[list[PendingReview], int]:
        """The `limit` pending reviews whose deadline is after `now`, soonest first, and how many there are
        in all (an overdue one is about to expire and is left out)."""
        waiting = sa.and_(decisions.c.review_status == "pending", decisions.c.review_deadline > now)
        async with self._db.read() as conn:
            total = int(await conn.scalar(sa.select(sa.func.count()).select_from(decisions).where(waiting)) or 0)
            rows = (
                await conn.execute(
                    sa.select(decisions)
                    .where(waiting)
                    .order_by(decisions.c.review_deadline, decisions.c.row_id)
                    .limit(limit)
                )
            ).all()
            ids = [row.decision_id for row in rows]
            proposals: dict[str, Mapping[str, Any]] = {}
            if ids:
                records = await conn.execute(
                    sa.select(audit_records.c.decision_id, audit_records.c.payload).where(
                        audit_records.c.decision_id.in_(ids), audit_records.c.event_type == "proposal"
                    )
                )
                for record in records:
                    proposals.setdefault(record.decision_id, record.payload)
        return [
            PendingReview(
                decision=decision_from_row(row),
                actor_id=row.actor_id,
                actor_type=row.actor_type,
                capability=row.capability,
                session_id=row.session_id,
                deadline=row.review_deadline,
                proposal=proposals.get(row.decision_id),
            )
            for row in rows
        ], total
