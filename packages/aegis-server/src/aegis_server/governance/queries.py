"""Paged listings: decisions by filter, and what every listing shares (times read as UTC, a cursor the
store did not issue refused as a 422 on the `cursor` field).

The filters are the store's own (`aegis_server.store.DecisionFilters`, `AuditFilters`): one definition
of what a listing may select, from the query string to the SQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TypeVar

from aegis_sdk.models import DecisionPage
from aegis_server.governance.errors import InvalidRequest
from aegis_server.store import DecisionFilters, Store
from aegis_server.store import errors as store_errors

__all__ = ["checked_cursor", "list_decisions", "utc_filters"]

Filters = TypeVar("Filters", bound=DecisionFilters)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def utc_filters(filters: Filters) -> Filters:
    """The filters with `since` and `until` made timezone-aware (a naive time is UTC)."""
    if (filters.since is None or filters.since.tzinfo) and (filters.until is None or filters.until.tzinfo):
        return filters
    return dataclasses.replace(filters, since=_aware(filters.since), until=_aware(filters.until))


@contextlib.contextmanager
def checked_cursor() -> Iterator[None]:
    """Turn the store's `InvalidCursor` into the 422 `invalid_request` on the `cursor` field."""
    try:
        yield
    except store_errors.InvalidCursor as exc:
        raise InvalidRequest(str(exc), {"field": "cursor"}) from None


async def list_decisions(store: Store, filters: DecisionFilters, *, limit: int, cursor: str | None) -> DecisionPage:
    """One page of decisions (newest first unless `filters.order` says otherwise) and the next cursor."""
    with checked_cursor():
        items, next_cursor = await store.list_decisions(utc_filters(filters), limit, cursor)
    return DecisionPage(items=items, next_cursor=next_cursor)
