"""The group commit of decisions that consume no token, and the SQLite WAL checkpointing it schedules.

Concurrent proposals each used to pay a whole write transaction (BEGIN IMMEDIATE, five statements,
COMMIT: ~3 ms of thread hand-offs on aiosqlite, serialised by the chain), which capped a server at ~300
decisions/s. Now such a decision joins a queue; one task writes everything queued in one transaction
(executemany: decisions, idempotency keys, audit records, webhook events) and commits, and only then answers each
waiting request: durability per request is unchanged, the cost per transaction is shared. A batch that
cannot be written as a whole (an idempotency key already used, a database error) is rolled back and each
of its records is written alone (`write_alone`), which gives every request its own answer as before.

On a SQLite file a batch is written on the event loop's thread: its statements are a few hundred
microseconds of SQLite's own work, and a writer thread spent more than that waiting for the GIL at every
statement (the loop holds it while it decides the next proposals). The loop must never block, so its
connection does not wait for a lock (another process writing: the batch goes to the writer thread,
which waits up to the busy timeout) and never checkpoints the WAL on commit: `_checkpoint_wal` does,
from the writer thread, at most once a second. In-memory SQLite and PostgreSQL write batches on the
async engine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from aegis_sdk.models import Decision
from aegis_server.store.audit_append import HEAD_SQL
from aegis_server.store.bulk import BulkInsert, immediate_transaction
from aegis_server.store.database import Database
from aegis_server.store.engine import WAL_SIZE_LIMIT_BYTES, checkpoint_wal, postgres_batch_engine
from aegis_server.store.idempotency import IdempotencyKeys, IdempotentReplay
from aegis_server.store.outbox import decision_event_rows
from aegis_server.store.records import NewDecision
from aegis_server.store.rows import as_stored, decision_audit_entries, decision_row, idempotency_row
from aegis_server.store.schema import audit_records, decisions, idempotency_keys, webhook_events

__all__ = ["GroupCommit"]

logger = logging.getLogger("aegis_server.store")

_Rows = list[dict[str, Any]]


class GroupCommit:
    """`submit(record)` queues a decision and returns it as stored once its batch committed.

    `write_alone(record)` writes one record in a transaction of its own: the fallback of a batch that
    failed. `batch_writer` (a SQLite file): the synchronous engine of the writer thread; `loop_writer`: the
    one used on the event loop's thread."""

    max_group = 256
    checkpoint_interval_seconds = 1.0
    catch_up_passes = 3
    caught_up_seconds = 0.005
    wal_restart_frames = WAL_SIZE_LIMIT_BYTES // 4096  # pages of the default size

    def __init__(
        self,
        database: Database,
        idempotency: IdempotencyKeys,
        write_alone: Callable[[NewDecision], Awaitable[Decision]],
        *,
        batch_writer: sa.Engine | None = None,
        loop_writer: sa.Engine | None = None,
    ) -> None:
        self._db = database
        self._idempotency = idempotency
        self._write_alone = write_alone
        self._pending: list[tuple[NewDecision, asyncio.Future[Decision]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._batch_writer = batch_writer
        self._loop_writer = loop_writer
        # Checked out once: the group commit writes on its driver connection (`immediate_transaction`).
        self._loop_connection = loop_writer.raw_connection() if loop_writer is not None else None
        self._last_checkpoint = time.monotonic()
        self.checkpoint: asyncio.Future[None] | None = None  # the running `_checkpoint_wal`
        self._batch_thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._postgres_writer = postgres_batch_engine(database.engine)  # batches without a ping per checkout
        if batch_writer is not None:
            self._bulk_decisions = BulkInsert(decisions, batch_writer.dialect)
            self._bulk_keys = BulkInsert(
                idempotency_keys, batch_writer.dialect, on_conflict_do_nothing=("api_key_id", "key")
            )
            self._bulk_audit = BulkInsert(audit_records, batch_writer.dialect)
            self._bulk_events = BulkInsert(webhook_events, batch_writer.dialect)
            self._batch_thread = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="aegis-sqlite-writer"
            )

    async def submit(self, record: NewDecision) -> Decision:
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending())
        # A cancelled request cancels only its own future (no `shield`, one future less per decision): its
        # record is written with its batch all the same, and the batch's other requests are answered.
        return await future

    async def close(self) -> None:
        if self.checkpoint is not None:
            with contextlib.suppress(Exception):  # logged where it failed
                await self.checkpoint
        if self._loop_connection is not None:
            self._loop_connection.close()
        if self._loop_writer is not None:
            self._loop_writer.dispose()
        if self._postgres_writer is not None:
            await self._postgres_writer.dispose()
        if self._batch_thread is not None and self._batch_writer is not None:
            await asyncio.get_running_loop().run_in_executor(self._batch_thread, self._batch_writer.dispose)
            self._batch_thread.shutdown()

    async def _flush_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_group], self._pending[self.max_group :]
            try:
                decisions_written = await self._write_group([record for record, _ in batch])
            except Exception:
                decisions_written = None
            for index, (record, future) in enumerate(batch):
                if future.done():
                    continue
                if decisions_written is not None:
                    future.set_result(decisions_written[index])
                    continue
                try:
                    alone = await self._write_alone(record)
                except Exception as exc:
                    if not future.done():  # its request may have been cancelled meanwhile
                        future.set_exception(exc)
                else:
                    if not future.done():
                        future.set_result(alone)

    async def _write_group(self, records: Sequence[NewDecision]) -> list[Decision]:
        db = self._db
        now = db.now()
        rows = [decision_row(record, now) for record in records]
        keys = [key for key in (idempotency_row(record, now) for record in records) if key is not None]
        pairs = list(zip(records, rows, strict=True))
        entries = [entry for record, row in pairs for entry in decision_audit_entries(record, row)]
        events = [event for record, row in pairs for event in decision_event_rows(record, row, now)]
        if db.chain is None:
            await db.prepare_chain()
        if self._batch_writer is not None:
            # The asyncio lock keeps this process's other writers out, BEGIN IMMEDIATE other processes.
            async with db.write_lock:
                await self._write_batch_to_sqlite(rows, keys, entries, events, now)
        else:
            async with db.write(self._postgres_writer) as conn:
                await conn.execute(sa.insert(decisions), rows)
                await self._idempotency.claim(conn, keys)  # IdempotentReplay: roll back, write each alone
                await db.audit(conn, now).append_many(entries)
                if events:
                    await conn.execute(sa.insert(webhook_events), events)
        if events:
            db.events_written()
        return [as_stored(record, row) for record, row in zip(records, rows, strict=True)]

    async def _write_batch_to_sqlite(
        self, rows: _Rows, keys: _Rows, entries: _Rows, events: _Rows, now: datetime
    ) -> None:
        written = False
        if self._loop_connection is not None:
            try:
                self._write_group_sync(self._loop_connection.dbapi_connection, rows, keys, entries, events, now)
                written = True
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                # another process holds the write lock; nothing was written (BEGIN failed)
        if not written:
            await asyncio.get_running_loop().run_in_executor(
                self._batch_thread, self._write_group_in_thread, rows, keys, entries, events, now
            )
        if self.checkpoint is None and time.monotonic() - self._last_checkpoint >= self.checkpoint_interval_seconds:
            self.checkpoint = asyncio.ensure_future(self._checkpoint_wal())

    async def _checkpoint_wal(self) -> None:
        """Copy the WAL into the database file from the writer thread while batches go on being committed.
        Such a checkpoint never quite catches up with continuous commits, and SQLite starts the WAL over
        only once every frame is copied. When the WAL has grown to its limit, further passes copy what
        was committed during the one before (each pass shorter: a second's WAL took ~50 ms at 1,000
        decisions/s, the next pass ~5), then a last pass copies the remainder with this process's writes
        paused (3-4 ms at 1,000 decisions/s here, with the file's fsyncs), and the WAL starts over."""
        assert self._batch_writer is not None
        loop = asyncio.get_running_loop()
        try:
            wal_frames = await loop.run_in_executor(self._batch_thread, checkpoint_wal, self._batch_writer)
            if wal_frames >= self.wal_restart_frames:
                for _ in range(self.catch_up_passes):
                    started = time.monotonic()
                    await loop.run_in_executor(self._batch_thread, checkpoint_wal, self._batch_writer)
                    if time.monotonic() - started < self.caught_up_seconds:
                        break
                async with self._db.write_lock:
                    await loop.run_in_executor(self._batch_thread, checkpoint_wal, self._batch_writer)
        except Exception as exc:  # the next batch schedules another attempt
            logger.warning("checkpointing the SQLite WAL failed (retried in a second): %s", exc)
        finally:
            self.checkpoint = None
            self._last_checkpoint = time.monotonic()

    def _write_group_in_thread(self, rows: _Rows, keys: _Rows, entries: _Rows, events: _Rows, now: datetime) -> None:
        assert self._batch_writer is not None
        connection = self._batch_writer.raw_connection()  # this thread's own (a SingletonThreadPool)
        try:
            self._write_group_sync(connection.dbapi_connection, rows, keys, entries, events, now)
        finally:
            connection.close()

    def _write_group_sync(
        self,
        connection: Any,  # the sqlite3 connection of a batch writer
        rows: _Rows,
        keys: _Rows,
        entries: _Rows,
        events: _Rows,
        now: datetime,
    ) -> None:
        """`_write_group`'s transaction on a batch writer's driver connection (commits before returning)."""
        chain = self._db.chain
        assert chain is not None  # `_write_group` prepared it
        with immediate_transaction(connection):
            self._bulk_decisions.execute(connection, rows)
            if self._bulk_keys.execute(connection, keys) != len(keys):
                raise IdempotentReplay  # roll back; each record is then written alone
            audit_rows, head = chain.link(connection.execute(HEAD_SQL).fetchone(), entries, now)
            self._bulk_audit.execute(connection, audit_rows)
            if events:
                self._bulk_events.execute(connection, events)
        chain.committed(head[0])
