"""`Database`: the connections, transactions and keyed audit chain that every part of the store shares.

Write transactions are serialised where the audit chain needs it:

- PostgreSQL: each transaction that appends audit records takes `pg_advisory_xact_lock(AUDIT_LOCK_KEY)`
  before it reads the chain head, and holds it until it commits, so appends from any number of
  connections and processes form one chain (sequence order is commit order). Row locks of a transaction
  are always taken before that lock, so two writers never wait on each other in a cycle.
- SQLite: one writer at a time in a process (an `asyncio.Lock`), and every write transaction starts with
  BEGIN IMMEDIATE, which waits (busy timeout) for writers of other processes.

The primary key on `audit_records.sequence` is the backstop: a second record with the same position can
never be committed. Single-use tokens, idempotency keys and review resolutions use conditional writes
(`UPDATE ... WHERE token_used_at IS NULL`, `INSERT ... ON CONFLICT DO NOTHING`) checked by row count, so
they also hold across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aegis_server.store.audit_append import (
    AUDIT_LOCK_KEY,
    HEAD_QUERY,
    AuditAppender,
    ChainState,
    ChainWriter,
    append_sync,
    head_of,
    parse_chain_state,
)
from aegis_server.store.chain import AuditKeyError, AuditKeySource, ChainLinker
from aegis_server.store.engine import sqlite_reader, sqlite_writer
from aegis_server.store.rows import utcnow
from aegis_server.store.schema import server_settings
from aegis_server.store.server_settings import insert_setting_once, read_setting

__all__ = ["Database", "Room"]

_AUDIT_CHAIN = "audit_chain"  # {"v2_from": first keyed record, "key_id": fingerprint of the audit key}


class Database:
    """The async engine (and, on a SQLite file, the synchronous `loop_writer` used on the event loop's
    thread), the write lock, the clock and the keyed chain. `write()` opens a write transaction, `audit(conn,
    now)` appends to the chain inside it, `write_sync(work)` runs a synchronous one."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] | None = None,
        loop_writer: sa.Engine | None = None,
        audit_key: AuditKeySource | None = None,
    ) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.clock = clock or utcnow
        self.write_lock = asyncio.Lock()
        self.loop_writer = loop_writer
        self.loop_reader = sqlite_reader(loop_writer) if loop_writer is not None else None
        self.chain: ChainWriter | None = None  # set by `prepare_chain` before the first write
        self._writer = engine if self.postgres else sqlite_writer(engine)
        self._audit_key = audit_key if audit_key is not None else AuditKeySource()
        self._floor = 0  # a record known to exist (`raise_chain_floor`) before the chain was prepared
        self._appenders: dict[AsyncConnection, list[AuditAppender]] = {}  # of the open write transactions
        self._chain_lock = asyncio.Lock()
        self._event_listeners: list[Callable[[], None]] = []
        self._audit_listeners: list[Callable[[], None]] = []

    def add_event_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` (on the event loop) each time this process commits webhook events: the
        dispatcher and the console's live inbox wake up on it. Other replicas' commits are not seen;
        listeners poll too."""
        self._event_listeners.append(listener)

    def remove_event_listener(self, listener: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._event_listeners.remove(listener)

    def add_audit_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` (on the event loop) each time this process commits audit records (the audit
        export wakes on it; other replicas' commits are not seen: it polls too)."""
        self._audit_listeners.append(listener)

    def remove_audit_listener(self, listener: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._audit_listeners.remove(listener)

    def _audit_committed(self) -> None:
        for listener in list(self._audit_listeners):
            listener()

    def events_written(self) -> None:
        """Tell the listeners that a transaction holding webhook events committed."""
        for listener in list(self._event_listeners):
            listener()

    def now(self) -> datetime:
        return self.clock()

    def upsert(self, table: sa.Table) -> Any:
        """The dialect's `insert(table)`, which has `on_conflict_do_nothing` / `on_conflict_do_update`."""
        return pg_dialect.insert(table) if self.postgres else sqlite_dialect.insert(table)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def write(self, engine: AsyncEngine | None = None) -> AsyncIterator[AsyncConnection]:
        """A write transaction (committed when the block ends without error); the chain is prepared first.
        `engine`: PostgreSQL only, another engine on the same database (the group commit's)."""
        if self.chain is None:
            await self.prepare_chain()
        conn: AsyncConnection | None = None
        try:
            if self.postgres:
                async with (engine or self._writer).begin() as conn:
                    yield conn
            else:
                async with self.write_lock, self._writer.begin() as conn:
                    yield conn
        except BaseException:
            if conn is not None:
                self._appenders.pop(conn, None)
            raise
        assert conn is not None
        # Committed: the records the transaction's appenders wrote exist, and a head below them is a cut.
        for appender in self._appenders.pop(conn, ()):
            if appender.head is not None:
                self.raise_chain_floor(appender.head[0])

    def audit(self, conn: AsyncConnection, now: datetime) -> AuditAppender:
        """The appender of the write transaction `conn` (of `write()`)."""
        assert self.chain is not None  # `write` prepared it
        appender = AuditAppender(conn=conn, postgres=self.postgres, now=now, chain=self.chain)
        self._appenders.setdefault(conn, []).append(appender)
        return appender

    async def write_sync(self, work: Callable[[sa.Connection], None]) -> None:
        """Run `work` in one write transaction: on a SQLite file, on the event loop's own connection when
        the write lock is free (six statements there take well under a millisecond; through aiosqlite each
        is a thread hand-off), else through the async engine."""
        if self.chain is None:
            await self.prepare_chain()
        if self.loop_writer is not None:
            async with self.write_lock:
                try:
                    with self.loop_writer.begin() as conn:
                        work(conn)
                    return
                except OperationalError as exc:
                    if "locked" not in str(exc.orig):
                        raise
                    # another process holds the write lock; this transaction was rolled back
        async with self.write() as async_conn:
            await async_conn.run_sync(work)

    def append_sync(self, conn: sa.Connection, entries: Sequence[Mapping[str, Any]], now: datetime) -> int:
        """Append `entries` in `write_sync`'s transaction; returns the head's sequence, which the caller
        passes to `raise_chain_floor` once the transaction committed."""
        assert self.chain is not None  # `write_sync` prepared it
        return append_sync(conn, self.chain, entries, now, postgres=self.postgres)

    # -- the keyed chain ----------------------------------------------------------------------------

    async def prepare_chain(self) -> ChainState:
        """Make sure new records are keyed: load (or create) the audit key, and record in `server_settings`
        where the keyed chain starts (the record after the current head) with the key's fingerprint, once
        per database. Raises `AuditKeyError` when the database's chain uses another audit key (a replica
        configured with a different AEGIS_AUDIT_KEY). Called by the first write; the server calls it at
        startup."""
        async with self._chain_lock:
            if self.chain is not None:
                return await self.chain_state()
            key = self._audit_key.get(create=True)
            assert key is not None
            linker = ChainLinker(key)
            lock = self.write_lock if not self.postgres else contextlib.nullcontext()
            async with lock, self._writer.begin() as conn:
                if self.postgres:
                    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(AUDIT_LOCK_KEY)))
                value = await read_setting(conn, _AUDIT_CHAIN)
                if value is None:
                    head = head_of((await conn.execute(HEAD_QUERY)).first())
                    start = json.dumps({"v2_from": head[0] + 1, "key_id": linker.key_id}, sort_keys=True)
                    value = await insert_setting_once(
                        conn, self.upsert(server_settings), _AUDIT_CHAIN, start, self.clock()
                    )
            state = parse_chain_state(value)
            if state.key_id != linker.key_id:
                raise AuditKeyError(
                    f"the audit chain in this database is keyed with audit key {state.key_id}, but this server "
                    f"has key {linker.key_id} ({self._audit_key.description}); give every server and CLI on this "
                    "database the same AEGIS_AUDIT_KEY (or the same key file)"
                )
            self.chain = ChainWriter(linker, self._floor, self._audit_committed)
            return state

    async def chain_state(self) -> ChainState:
        """Where the keyed chain starts, as the database records it (`v2_from` None: not yet keyed)."""
        async with self.read() as conn:
            value = await read_setting(conn, _AUDIT_CHAIN)
        return parse_chain_state(value)

    def raise_chain_floor(self, sequence: int) -> None:
        """Tell the appender that record `sequence` existed (e.g. it was checkpointed): a head read below
        it afterwards refuses to append (`AuditChainCut`)."""
        self._floor = max(self._floor, sequence)
        if self.chain is not None:
            self.chain.committed(sequence)

    def audit_linker(self, *, create: bool = False) -> ChainLinker | None:
        """The keyed linker of this store's audit key (None when the key does not exist and not `create`)."""
        key = self._audit_key.get(create=create)
        return ChainLinker(key) if key is not None else None


class Room:
    """Base of the store's rooms (`ApiKeys`, `Reviews`, ...): `_db` is the database they share."""

    def __init__(self, database: Database) -> None:
        self._db = database
