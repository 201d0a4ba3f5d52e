"""Idempotency-Keys: claimed once, in the transaction that records the decision.

A proposal's key is claimed by inserting its `idempotency_keys` row with `ON CONFLICT DO NOTHING`. When
the row exists already, the transaction raises `IdempotentReplay` and rolls back; `IdempotencyKeys.settle`
then reads what the key holds and answers: the stored decision for the same request (a retry that lost
the race), `IdempotencyConflict` carrying the stored request hash and decision for another request."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis_sdk.models import Decision
from aegis_server.store.database import Database, Room
from aegis_server.store.engine import POOL_SIZE
from aegis_server.store.errors import IdempotencyConflict
from aegis_server.store.records import IdempotencyEntry
from aegis_server.store.rows import decision_from_row
from aegis_server.store.schema import decisions, idempotency_keys

__all__ = ["IdempotencyKeys", "IdempotentReplay"]


# Whether a key is stored at all, asked on the driver's connection (a fresh key, the common case, needs no more).
_KEY_STORED_SQL = 'SELECT 1 FROM idempotency_keys WHERE api_key_id = ? AND "key" = ?'


class IdempotentReplay(Exception):
    """Internal: an Idempotency-Key row already exists; roll back and settle it (`IdempotencyKeys.settle`)."""


class IdempotencyKeys(Room):
    """Claims (`claim`) and looks up (`find`) the Idempotency-Keys of one database."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        # Lookups through the async engine (PostgreSQL) at once, at most: a burst of proposals (the SDK
        # sends a key with each) otherwise overflowed the pool, and every overflow connection was opened
        # for one SELECT and closed again (p90 144 ms at 400 proposals/s; 8 ms with this bound). Two
        # connections stay free for the group commit and the review sweep.
        self._reads = asyncio.Semaphore(POOL_SIZE - 2)
        self._probe: Any = None  # the loop's SQLite connection, checked out once (`_stored_at_all`)
        self._query = (
            sa.select(idempotency_keys.c.request_hash, decisions)
            .join(decisions, decisions.c.decision_id == idempotency_keys.c.decision_id)
            .where(
                idempotency_keys.c.api_key_id == sa.bindparam("api_key_id"),
                idempotency_keys.c.key == sa.bindparam("key"),
            )
        )

    async def claim(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert the key rows in the write transaction `conn`; `IdempotentReplay` when one was claimed."""
        if not rows:
            return
        inserted = await conn.execute(
            self._db.upsert(idempotency_keys)
            .on_conflict_do_nothing(index_elements=["api_key_id", "key"])
            .returning(idempotency_keys.c.key),
            list(rows),
        )
        if len(inserted.all()) != len(rows):
            raise IdempotentReplay

    async def settle(self, entry: IdempotencyEntry) -> Decision | None:
        """After `IdempotentReplay`: the stored decision when the key names the same request; raises
        `IdempotencyConflict` (with the stored `request_hash` and `decision`) for another request; None
        when the key is not stored after all (the claiming transaction rolled back: claim it again)."""
        found = await self.find(entry.api_key_id, entry.key)
        if found is None:
            return None
        request_hash, stored = found
        if request_hash != entry.request_hash:
            raise IdempotencyConflict(entry.key, stored.decision_id, request_hash=request_hash, decision=stored)
        return stored

    def _stored_at_all(self, api_key_id: str, key: str) -> bool | None:
        """Whether the key is stored, on a SQLite file (None: not known here, ask the full query)."""
        if self._db.loop_writer is None:
            return None
        try:
            if self._probe is None:
                self._probe = self._db.loop_writer.raw_connection()
            # In autocommit, the statement is its own read transaction; fetchall() ends it (no snapshot held).
            return bool(self._probe.dbapi_connection.execute(_KEY_STORED_SQL, (api_key_id, key)).fetchall())
        except sqlite3.Error:  # busy, or a connection gone: the full query decides
            return None

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    async def find(self, api_key_id: str, key: str) -> tuple[str, Decision] | None:
        """The (request_hash, decision) stored for this API key's Idempotency-Key, or None."""
        parameters = {"api_key_id": api_key_id, "key": key}
        # The SDK sends a key with every proposal, so this read precedes most decisions: on a SQLite file
        # it is one primary-key lookup on the loop's own connection (a WAL reader never waits for a lock),
        # not a hand-off to an aiosqlite thread and back (~1 ms under no load); and a fresh key is told on
        # the driver's connection, without SQLAlchemy's checkout, transaction and result objects.
        if self._stored_at_all(api_key_id, key) is False:
            return None
        row: Any = None
        read_on_loop = False
        if self._db.loop_reader is not None:
            try:
                with self._db.loop_reader.begin() as conn:
                    row = conn.execute(self._query, parameters).first()
                read_on_loop = True
            except OperationalError as exc:
                if "locked" not in str(exc.orig):
                    raise
        if not read_on_loop:
            async with self._reads, self._db.read() as async_conn:
                row = (await async_conn.execute(self._query, parameters)).first()
        if row is None:
            return None
        return str(row.request_hash), decision_from_row(row)
