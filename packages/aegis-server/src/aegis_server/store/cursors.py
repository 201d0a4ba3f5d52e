"""Keyset paging of the store's listings: `keyset_page` reads one page after the since/until window of the
filters. The opaque cursors (`kind`, order, last key) are the SDK's `aegis_sdk._wire.cursors`, which the fake
platform shares."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from aegis_sdk._wire.cursors import CursorError, encode_cursor
from aegis_sdk._wire.cursors import decode_cursor as decode_wire_cursor
from aegis_server.store.database import Database
from aegis_server.store.errors import InvalidCursor
from aegis_server.store.filters import DecisionFilters

__all__ = ["MAX_PAGE_SIZE", "check_limit", "decode_cursor", "encode_cursor", "keyset_page"]

MAX_PAGE_SIZE = 1000


def decode_cursor(cursor: str, kind: str, order: str) -> int:
    """The key a cursor of the `kind` listing in `order` continues after; `InvalidCursor` otherwise."""
    try:
        return decode_wire_cursor(cursor, kind, order)
    except CursorError as error:
        raise InvalidCursor(error.detail) from None


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")


async def keyset_page(
    database: Database,
    query: sa.Select[Any],
    kind: str,
    key_column: sa.Column[Any],
    time_column: sa.Column[Any],
    filters: DecisionFilters,
    order: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """One page of `query` after the since/until window, ordered by `key_column` (keyset pagination:
    stable while rows are inserted), and the cursor of the next page (None on the last one)."""
    check_limit(limit)
    if filters.since is not None:
        query = query.where(time_column >= filters.since)
    if filters.until is not None:
        query = query.where(time_column < filters.until)
    if cursor is not None:
        after = decode_cursor(cursor, kind, order)
        query = query.where(key_column < after if order == "desc" else key_column > after)
    query = query.order_by(key_column.desc() if order == "desc" else key_column.asc()).limit(limit + 1)
    async with database.read() as conn:
        rows = list((await conn.execute(query)).all())
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor(kind, order, int(getattr(rows[limit - 1], key_column.name)))
