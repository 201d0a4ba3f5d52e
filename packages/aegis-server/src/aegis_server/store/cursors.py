"""Keyset paging of the store's listings: the opaque cursors (`kind`, order, last key) and `keyset_page`,
which reads one page after the since/until window of the filters."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import sqlalchemy as sa

from aegis_server.store.database import Database
from aegis_server.store.errors import InvalidCursor
from aegis_server.store.filters import DecisionFilters

__all__ = ["MAX_PAGE_SIZE", "check_limit", "decode_cursor", "encode_cursor", "keyset_page"]

MAX_PAGE_SIZE = 1000


def encode_cursor(kind: str, order: str, key: int) -> str:
    raw = json.dumps([kind, order, key], separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, kind: str, order: str) -> int:
    """The key a cursor of the `kind` listing in `order` continues after; `InvalidCursor` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidCursor("not a cursor of this server") from None
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[2], int)):
        raise InvalidCursor("not a cursor of this server")
    if value[0] != kind:
        raise InvalidCursor(f"a cursor of the {value[0]} listing, not of {kind}")
    if value[1] != order:
        raise InvalidCursor(f"a cursor for order {value[1]!r}, not {order!r}")
    return int(value[2])


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
