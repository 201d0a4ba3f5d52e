"""The filters of the store's listings: `DecisionFilters` (decisions, and audit records by the decision
fields they carry) and `AuditFilters` (plus the decision and the event type). The one definition the
service and the CLI pass through: a naive `since`/`until` is read as UTC."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any, Literal

import sqlalchemy as sa

__all__ = ["AuditFilters", "DecisionFilters", "Order", "where_equal"]

Order = Literal["asc", "desc"]


@dataclasses.dataclass(frozen=True)
class DecisionFilters:
    """Filters of `Store.list_decisions` (and `Store.audit_log`). `since` is inclusive, `until` exclusive
    (a naive time is UTC). `order`: None means the listing's default (decisions newest first, audit
    records in chain order)."""

    actor_id: str | None = None
    capability: str | None = None
    outcome: str | None = None
    session_id: str | None = None
    review_status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    order: Order | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                object.__setattr__(self, name, moment.replace(tzinfo=timezone.utc))


@dataclasses.dataclass(frozen=True)
class AuditFilters(DecisionFilters):
    """Filters of `Store.audit_log`: those of decisions (review_status selects the records of decisions
    in that review state) plus the decision and the event type."""

    decision_id: str | None = None
    event_type: str | None = None


_RANGE_FIELDS = frozenset({"since", "until", "order"})


def where_equal(query: sa.Select[Any], table: sa.Table, filters: DecisionFilters) -> sa.Select[Any]:
    """`query` narrowed to the rows of `table` equal to every filter given whose name is a column of the
    table (`since`, `until` and `order` are the pager's): decisions by review_status, audit records by
    decision_id and event_type (`AuditFilters`)."""
    for field in dataclasses.fields(filters):
        value = getattr(filters, field.name)
        if value is not None and field.name not in _RANGE_FIELDS and field.name in table.c:
            query = query.where(table.c[field.name] == value)
    return query
