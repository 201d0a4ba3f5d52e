"""The audit export's state in the database: the records to export (the audit table is the durable queue),
and per sink a cursor (the last sequence the sink durably took) and a lease (which process exports to it).

Both live in `server_settings` rows (no migration): `audit_export:<sink>:cursor` holds the sequence,
`audit_export:<sink>:lease` holds `{"owner": ..., "until": ISO-8601}`. A lease is taken or renewed by a
compare-and-set on its value, so two replicas never hold one at once; a cursor only moves in a transaction
that also renews the holder's lease (a process that lost its lease cannot move it).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import sqlalchemy as sa

from aegis_sdk.models import AuditRecord
from aegis_server.store.audit_append import HEAD_QUERY
from aegis_server.store.database import Room
from aegis_server.store.rows import audit_from_row
from aegis_server.store.schema import audit_records, server_settings
from aegis_server.store.server_settings import insert_setting_once, read_setting

__all__ = ["ExportCursors", "lease_until"]


def _cursor_name(sink: str) -> str:
    return f"audit_export:{sink}:cursor"


def _lease_name(sink: str) -> str:
    return f"audit_export:{sink}:lease"


def _lease_value(owner: str, until: datetime) -> str:
    return json.dumps({"owner": owner, "until": until.isoformat()}, sort_keys=True)


def lease_until(value: str) -> datetime | None:
    """When the lease `value` (as `acquire` returns it) ends."""
    try:
        return datetime.fromisoformat(json.loads(value)["until"])
    except (ValueError, KeyError, TypeError):
        return None


def _lease_free_for(value: str, owner: str, now: datetime) -> bool:
    try:
        held = json.loads(value)
        return bool(held["owner"] == owner or datetime.fromisoformat(held["until"]) <= now)
    except (ValueError, KeyError, TypeError):
        return True  # unreadable: nobody can be holding it


class ExportCursors(Room):
    """Records, cursors and leases of the audit export sinks."""

    async def records_after(self, after: int, limit: int, *, through: int | None = None) -> list[AuditRecord]:
        """Up to `limit` records with a sequence above `after` (and at most `through`), in chain order."""
        query = sa.select(audit_records).where(audit_records.c.sequence > after)
        if through is not None:
            query = query.where(audit_records.c.sequence <= through)
        async with self._db.read() as conn:
            rows = (await conn.execute(query.order_by(audit_records.c.sequence).limit(limit))).all()
        return [audit_from_row(row) for row in rows]

    async def window(self, since: datetime | None, until: datetime | None) -> tuple[int, int] | None:
        """The sequences (first, last) of the records written in [since, until), as one contiguous range: from
        the first record written at or after `since` to the last written before `until`. A record's time comes
        from its writer's clock, so times are not strictly in sequence order across replicas; a range keeps
        the export free of gaps a receiver would take for lost records. None: no record in the window."""
        first_query = sa.select(sa.func.min(audit_records.c.sequence))
        if since is not None:
            first_query = first_query.where(audit_records.c.created_at >= since)
        last_query = sa.select(sa.func.max(audit_records.c.sequence))
        if until is not None:
            last_query = last_query.where(audit_records.c.created_at < until)
        async with self._db.read() as conn:
            first, last = await conn.scalar(first_query), await conn.scalar(last_query)
        if first is None or last is None or first > last:
            return None
        return int(first), int(last)

    async def head(self) -> int:
        """The sequence of the last record (0: none)."""
        async with self._db.read() as conn:
            last = (await conn.execute(HEAD_QUERY)).first()
        return int(last[0]) if last is not None else 0

    async def cursor(self, sink: str) -> int:
        """The last sequence `sink` took (0: none yet)."""
        async with self._db.read() as conn:
            value = await read_setting(conn, _cursor_name(sink))
        return int(value) if value is not None else 0

    async def acquire(self, sink: str, owner: str, seconds: float) -> str | None:
        """Take or renew the lease of `sink` for `owner` for `seconds`; its new value (pass it to `advance` and
        `release`), or None when another owner holds it."""
        now = self._db.now()
        name = _lease_name(sink)
        async with self._db.read() as conn:  # a replica that does not hold it writes nothing
            current = await read_setting(conn, name)
        if current is not None and not _lease_free_for(str(current), owner, now):
            return None
        new = _lease_value(owner, now + timedelta(seconds=seconds))
        async with self._db.write() as conn:
            current = await read_setting(conn, name)
            if current is None:
                stored = await insert_setting_once(conn, self._db.upsert(server_settings), name, new, now)
                return new if stored == new else None
            if not _lease_free_for(str(current), owner, now):
                return None
            updated = await conn.execute(
                sa.update(server_settings)
                .where(server_settings.c.name == name, server_settings.c.value == current)
                .values(value=new, updated_at=now)
            )
        return new if updated.rowcount == 1 else None

    async def advance(self, sink: str, owner: str, lease: str, sequence: int, seconds: float) -> str | None:
        """Move the cursor of `sink` to `sequence` and renew the lease `lease`, in one transaction; the
        lease's new value, or None (nothing written) when `lease` no longer holds."""
        now = self._db.now()
        new = _lease_value(owner, now + timedelta(seconds=seconds))
        async with self._db.write() as conn:
            renewed = await conn.execute(
                sa.update(server_settings)
                .where(server_settings.c.name == _lease_name(sink), server_settings.c.value == lease)
                .values(value=new, updated_at=now)
            )
            if renewed.rowcount != 1:
                return None
            stmt = self._db.upsert(server_settings).values(
                name=_cursor_name(sink), value=str(sequence), created_at=now, updated_at=now
            )
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=["name"], set_={"value": str(sequence), "updated_at": now})
            )
        return new

    async def release(self, sink: str, lease: str) -> None:
        """Give the lease up (when it still is `lease`), so another replica takes over at once."""
        async with self._db.write() as conn:
            await conn.execute(
                sa.delete(server_settings).where(
                    server_settings.c.name == _lease_name(sink), server_settings.c.value == lease
                )
            )
