"""The `server_settings` rows: the server's token secret, the revision of the API-managed policies, and
the helpers that read a setting or insert it once (the audit chain's start is one too, see `database`)."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis_server.store.schema import server_settings

if TYPE_CHECKING:
    from aegis_server.store.database import Database

__all__ = ["ServerSettings", "insert_setting_once", "read_setting"]

_SECRET_NAME = "token_secret"  # noqa: S105 - the name of a row, not a secret
_POLICY_VERSION = "policy_version"


async def read_setting(conn: AsyncConnection, name: str) -> Any:
    """The value of the setting `name` (None when absent)."""
    return await conn.scalar(sa.select(server_settings.c.value).where(server_settings.c.name == name))


async def insert_setting_once(conn: AsyncConnection, insert: Any, name: str, value: str, now: datetime) -> Any:
    """Insert the setting unless a row of that name exists (concurrent first writers agree: insert if
    absent, then read) and return the stored value. `insert`: the dialect's `insert(server_settings)`."""
    await conn.execute(
        insert.values(name=name, value=value, created_at=now, updated_at=now).on_conflict_do_nothing(
            index_elements=["name"]
        )
    )
    return await read_setting(conn, name)


class ServerSettings:
    """The token secret and the policy revision of one database."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._secret: bytes | None = None

    async def get_or_create_secret(self) -> bytes:
        """The server's 32-byte HMAC secret for tokens: made on first call, then the same for every
        process on this database (concurrent first calls agree: insert-if-absent, then read)."""
        if self._secret is not None:
            return self._secret
        async with self._db.read() as conn:
            value = await read_setting(conn, _SECRET_NAME)
        if value is None:
            async with self._db.write() as conn:
                value = await insert_setting_once(
                    conn, self._db.upsert(server_settings), _SECRET_NAME, secrets.token_bytes(32).hex(), self._db.now()
                )
        self._secret = bytes.fromhex(str(value))
        return self._secret

    async def policy_revision(self) -> str:
        """An opaque value that changes whenever an API-managed policy or capability changes (poll it to
        know when to reload the policy set; "" before the first change)."""
        async with self._db.read() as conn:
            value = await read_setting(conn, _POLICY_VERSION)
        return str(value) if value is not None else ""

    async def bump_policy_revision(self, conn: AsyncConnection, now: datetime) -> str:
        """Give the policy revision a new value (in the caller's write transaction) and return it."""
        revision = uuid.uuid4().hex
        stmt = self._db.upsert(server_settings).values(
            name=_POLICY_VERSION, value=revision, created_at=now, updated_at=now
        )
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=["name"], set_={"value": revision, "updated_at": now})
        )
        return revision

    async def policy_revision_in(self, conn: AsyncConnection) -> str:
        """`policy_revision` read in the caller's transaction."""
        value = await read_setting(conn, _POLICY_VERSION)
        return str(value) if value is not None else ""
