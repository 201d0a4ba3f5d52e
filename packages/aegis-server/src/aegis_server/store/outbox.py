"""The outbox of webhook events: the rows that say "this happened", written in the transaction that made
it happen, so an event exists exactly when its decision or review was committed.

| event type           | written when                                          |
| -------------------- | ----------------------------------------------------- |
| `decision.escalated` | an ESCALATE decision is recorded (a review is pending) |
| `decision.denied`    | a DENY decision is recorded                           |
| `review.resolved`    | a reviewer approves or denies a pending review        |
| `review.expired`     | a pending review passes its deadline (the final DENY) |

The dispatcher (`aegis_server.notifications`) reads them afterwards; nothing here sends anything. An
event's `data` names the decision and never carries parameter values (they may be sensitive).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aegis_server.ids import new_id
from aegis_server.store.records import NewDecision
from aegis_server.store.rows import format_timestamp

__all__ = [
    "DECISION_DENIED",
    "DECISION_ESCALATED",
    "EVENT_TYPES",
    "REVIEW_EXPIRED",
    "REVIEW_RESOLVED",
    "decision_event_rows",
    "review_event_row",
]

DECISION_ESCALATED = "decision.escalated"
DECISION_DENIED = "decision.denied"
REVIEW_RESOLVED = "review.resolved"
REVIEW_EXPIRED = "review.expired"
EVENT_TYPES: tuple[str, ...] = (DECISION_ESCALATED, DECISION_DENIED, REVIEW_RESOLVED, REVIEW_EXPIRED)

_EVENT_OF_OUTCOME = {"ESCALATE": DECISION_ESCALATED, "DENY": DECISION_DENIED}


def _review(row: Any) -> dict[str, Any] | None:
    if row.review_status is None:
        return None
    deadline = row.review_deadline
    return {
        "status": row.review_status,
        "deadline": format_timestamp(deadline) if isinstance(deadline, datetime) else deadline,
        "reviewer": row.reviewer,
        "note": row.review_note,
        "resolved_at": row.review_resolved_at,
    }


def _event_row(event_type: str, row: Any, now: datetime) -> dict[str, Any]:
    """The `webhook_events` row of `event_type` about the decision in `row` (a `decisions` row, or a view
    with the same attributes) as it stands after the transaction."""
    data = {
        "decision_id": row.decision_id,
        "outcome": row.outcome,
        "reason": row.reason,
        "risk_score": row.risk_score,
        "capability": row.capability,
        "actor": {"id": row.actor_id, "type": row.actor_type},
        "session_id": row.session_id,
        "policy_ids": list(row.policy_ids),
        "created_at": format_timestamp(row.created_at),
        "review": _review(row),
    }
    return {
        "event_id": new_id("msg_"),
        "event_type": event_type,
        "decision_id": row.decision_id,
        "capability": row.capability,
        "risk_score": row.risk_score,
        "data": data,
        "created_at": now,
        "dispatched_at": None,
    }


class _Values:
    """Attribute access to a row's values (a row being inserted is a dict)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)


def decision_event_rows(record: NewDecision, row: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
    """The events of a new decision whose `decisions` row is `row`: one for a DENY or an ESCALATE."""
    event_type = _EVENT_OF_OUTCOME.get(record.decision.outcome)
    if event_type is None:
        return []
    return [_event_row(event_type, _Values(row), now)]


def review_event_row(event_type: str, row: Any, now: datetime) -> dict[str, Any]:
    """The `review.resolved` or `review.expired` event of the decision in `row`, read after its update."""
    if event_type not in (REVIEW_RESOLVED, REVIEW_EXPIRED):
        raise ValueError(f"{event_type!r} is not a review event")
    return _event_row(event_type, row, now)
