"""The filters of the store's listings and how they narrow a query. The filters themselves are the SDK's
`aegis_sdk._wire.listing.ListingFilters` (the fake platform's too), under the names the store's callers use:
`DecisionFilters` and `AuditFilters`. A naive `since`/`until` is read as UTC."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from aegis_sdk._wire.listing import ListingFilters, Order

__all__ = ["AuditFilters", "DecisionFilters", "Order", "where_equal"]

DecisionFilters = ListingFilters
"""Filters of `Store.list_decisions` (and `Store.audit_log`): the SDK's `ListingFilters`, one definition
for the server, the CLI and the fake platform."""
AuditFilters = ListingFilters
"""Filters of `Store.audit_log`: those of decisions (review_status selects the records of decisions in
that review state) plus the decision and the event type — the same class, named for where it is used."""


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
