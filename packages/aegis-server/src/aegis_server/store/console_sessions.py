"""Console sessions: a reviewer's sign-in, kept as the SHA-256 of the cookie's random token (never the
token) with the API key it was made from and its server-side expiry. Expired rows are removed whenever a
new session is made."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from aegis_server.store.database import Room
from aegis_server.store.records import ApiKey
from aegis_server.store.rows import api_key_from_row
from aegis_server.store.schema import api_keys, console_sessions

__all__ = ["ConsoleSession", "ConsoleSessions"]


@dataclass(frozen=True)
class ConsoleSession:
    """A stored session: when it expires and its API key as it stands now (None: deleted or revoked)."""

    expires_at: datetime
    api_key: ApiKey | None


class ConsoleSessions(Room):
    """The console sessions of one database."""

    async def create_session(self, session_hash: str, key_id: str, *, now: datetime, expires_at: datetime) -> None:
        """Store a new session (by the hash of its token); sessions expired by `now` are removed too."""
        async with self._db.write() as conn:
            await conn.execute(sa.delete(console_sessions).where(console_sessions.c.expires_at <= now))
            await conn.execute(
                sa.insert(console_sessions).values(
                    session_hash=session_hash, key_id=key_id, created_at=now, expires_at=expires_at
                )
            )

    async def find_session(self, session_hash: str) -> ConsoleSession | None:
        """The session with this token hash and its key (read afresh: revocations count at once), or None."""
        joined = console_sessions.outerjoin(
            api_keys, sa.and_(api_keys.c.key_id == console_sessions.c.key_id, api_keys.c.revoked_at.is_(None))
        )
        query = (
            sa.select(console_sessions.c.expires_at.label("session_expires_at"), *api_keys.c)
            .select_from(joined)
            .where(console_sessions.c.session_hash == session_hash)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        api_key = api_key_from_row(row) if row.key_id is not None else None
        return ConsoleSession(expires_at=row.session_expires_at, api_key=api_key)

    async def delete_session(self, session_hash: str) -> bool:
        """Remove a session (sign-out, expiry, revoked key); False when there was none."""
        async with self._db.write() as conn:
            result = await conn.execute(
                sa.delete(console_sessions).where(console_sessions.c.session_hash == session_hash)
            )
        return bool(result.rowcount)

    async def delete_expired_sessions(self, now: datetime) -> int:
        """Remove every session expired by `now`; how many."""
        async with self._db.write() as conn:
            result = await conn.execute(sa.delete(console_sessions).where(console_sessions.c.expires_at <= now))
        return int(result.rowcount or 0)
