"""`Store`: every read and write of the AEGIS server's database.

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
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Row
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aegis_sdk._wire.cursors import CursorError, decode_cursor
from aegis_sdk._wire.cursors import encode_cursor as _encode_cursor
from aegis_sdk.models import (
    AuditProblem,
    AuditRecord,
    AuditVerification,
    Capability,
    Decision,
    ExecutionRecord,
    ExecutionReport,
    Policy,
    Review,
)
from aegis_server.canonical import canonical_hash, canonical_text, normalise_json
from aegis_server.ids import new_audit_ref
from aegis_server.key_actors import ANY_ACTOR, check_rate_limit, parse_actor_patterns
from aegis_server.store.bulk import BulkInsert, immediate_transaction
from aegis_server.store.chain import (
    GENESIS_HASH,
    AuditKeyError,
    AuditKeySource,
    ChainChecker,
    ChainLinker,
)
from aegis_server.store.engine import (
    POOL_SIZE,
    WAL_SIZE_LIMIT_BYTES,
    checkpoint_wal,
    create_engine,
    normalise_url,
    redact_url,
    sqlite_batch_writer,
    sqlite_reader,
    sqlite_writer,
)
from aegis_server.store.errors import (
    AlreadyReported,
    AuditChainCut,
    IdempotencyConflict,
    InvalidCursor,
    NotAllowed,
    NotFound,
    NotPending,
    NotProposer,
    SchemaNotReady,
    TokenAlreadyUsed,
)
from aegis_server.store.migrate import check_schema, upgrade_engine
from aegis_server.store.records import (
    SCOPES,
    ApiKey,
    AuditFilters,
    DecisionBinding,
    DecisionFilters,
    NewDecision,
    StoredCapability,
    StoredPolicy,
)
from aegis_server.store.schema import (
    api_keys,
    audit_records,
    capabilities,
    decisions,
    executions,
    idempotency_keys,
    policies,
    server_settings,
)

__all__ = [
    "API_KEY_PREFIX",
    "AUDIT_LOCK_KEY",
    "MAX_PAGE_SIZE",
    "ChainState",
    "Store",
    "default_audit_dir",
    "format_timestamp",
    "hash_api_key",
    "open_existing",
    "verify_database",
]

API_KEY_PREFIX = "aegis_sk_"
AUDIT_LOCK_KEY = 0x4145_4749_535F_4155  # "AEGIS_AU": pg_advisory_xact_lock key of audit appends
MAX_PAGE_SIZE = 1000
logger = logging.getLogger("aegis_server.store")

_VERIFY_BATCH = 2000
_SECRET_NAME = "token_secret"  # noqa: S105 - the name of a row, not a secret
_POLICY_VERSION = "policy_version"
_AUDIT_CHAIN = "audit_chain"  # {"v2_from": first keyed record, "key_id": fingerprint of the audit key}
_MAX_PRESENTED_KEY = 512


class _Unset:
    """The type of `UNSET`: an argument not given (as opposed to None, which sets NULL)."""


UNSET = _Unset()


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and a `Z`, the form the store writes (e.g. `2025-01-02T03:04:05.000006Z`)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime; pass a timezone-aware time")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def hash_api_key(key: str) -> str:
    """SHA-256 hex of an API key: what the store keeps instead of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class _RowView:
    """Attribute access to a row dict, so `_decision_from_row` builds a decision from what was inserted."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)


class _IdempotentReplay(Exception):
    """Internal: the Idempotency-Key row already exists; roll back and answer from the stored decision."""


@dataclasses.dataclass(frozen=True)
class ChainState:
    """Where the keyed chain starts (`v2_from`: the first version-2 record; None: every record is version
    1) and the fingerprint of the audit key it uses, as the database's `server_settings` records them."""

    v2_from: int | None
    key_id: str | None


class _ChainWriter:
    """The store's side of the chain: the keyed linker, and the highest head this process has seen under
    the chain lock (or checkpointed). A head read below it means records were deleted while the server
    ran: appending would fork the chain from the shortened head, so `head` raises `AuditChainCut`."""

    __slots__ = ("floor", "linker")

    def __init__(self, linker: ChainLinker) -> None:
        self.linker = linker
        self.floor = 0

    def head(self, last: Any) -> tuple[int, str]:
        head = _head_of(last)
        if head[0] < self.floor:
            logger.critical(
                "the audit chain was cut under the running server: the database head is record #%d, this "
                "server saw record #%d; refusing to append (fail closed)",
                head[0],
                self.floor,
            )
            raise AuditChainCut(head[0], self.floor)
        self.floor = head[0]
        return head


@dataclasses.dataclass
class _AuditAppender:
    """Appends audit records inside one write transaction (takes the chain lock on first use)."""

    conn: AsyncConnection
    postgres: bool
    now: datetime
    chain: _ChainWriter
    head: tuple[int, str] | None = None

    async def append(
        self,
        event_type: str,
        *,
        payload: Mapping[str, Any],
        decision_id: str | None = None,
        actor_id: str | None = None,
        capability: str | None = None,
        outcome: str | None = None,
        session_id: str | None = None,
        audit_ref: str | None = None,
    ) -> AuditRecord:
        clean_payload = normalise_json(dict(payload))
        await self._load_head()
        assert self.head is not None
        sequence, previous_hash = self.head[0] + 1, self.head[1]
        fields: dict[str, Any] = {
            "audit_ref": audit_ref or new_audit_ref(),
            "sequence": sequence,
            "event_type": event_type,
            "decision_id": decision_id,
            "actor_id": actor_id,
            "capability": capability,
            "outcome": outcome,
            "session_id": session_id,
            "timestamp": format_timestamp(self.now),
            "payload": clean_payload,
            "previous_hash": previous_hash,
        }
        fields["hash"] = self.chain.linker.link(fields)
        await self.conn.execute(sa.insert(audit_records).values(created_at=self.now, **fields))
        self.head = (sequence, fields["hash"])
        return AuditRecord(**fields)

    async def append_many(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Append several records (each the keyword arguments of `append`) with one INSERT."""
        if not entries:
            return
        await self._load_head()
        assert self.head is not None
        rows, self.head = _chained_rows(self.head, entries, self.now, self.chain.linker)
        await self.conn.execute(sa.insert(audit_records), rows)

    async def _load_head(self) -> None:
        if self.head is not None:
            return
        if self.postgres:
            await self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(AUDIT_LOCK_KEY)))
        self.head = self.chain.head((await self.conn.execute(_HEAD_QUERY)).first())


_HEAD_QUERY = (
    sa.select(audit_records.c.sequence, audit_records.c.hash).order_by(audit_records.c.sequence.desc()).limit(1)
)
# The same query as SQLite text, for the batch writers' driver connections.
_HEAD_SQL = str(_HEAD_QUERY.compile(dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True}))


def _head_of(last: Any) -> tuple[int, str]:
    """(sequence, hash) of the chain's last record, from the row of `_HEAD_QUERY` (None: empty chain)."""
    return (int(last[0]), str(last[1])) if last is not None else (0, GENESIS_HASH)


def _chained_rows(
    head: tuple[int, str], entries: Sequence[Mapping[str, Any]], now: datetime, linker: ChainLinker
) -> tuple[list[dict[str, Any]], tuple[int, str]]:
    """The `audit_records` rows of `entries` (each the keyword arguments of `_AuditAppender.append`)
    linked (keyed, version 2) after `head`, and the new head."""
    link = linker.link
    sequence, previous_hash = head
    timestamp = format_timestamp(now)
    rows = []
    for entry in entries:
        sequence += 1
        fields: dict[str, Any] = {
            "audit_ref": entry.get("audit_ref") or new_audit_ref(),
            "sequence": sequence,
            "event_type": entry["event_type"],
            "decision_id": entry.get("decision_id"),
            "actor_id": entry.get("actor_id"),
            "capability": entry.get("capability"),
            "outcome": entry.get("outcome"),
            "session_id": entry.get("session_id"),
            "timestamp": timestamp,
            "payload": canonical_text(entry["payload"]),  # encoded once: hashed and stored as it is
            "previous_hash": previous_hash,
        }
        fields["hash"] = previous_hash = link(fields)
        fields["created_at"] = now
        rows.append(fields)
    return rows, (sequence, previous_hash)


def _parse_chain_state(value: Any) -> ChainState:
    if value is None:
        return ChainState(v2_from=None, key_id=None)
    try:
        document = json.loads(str(value))
        return ChainState(v2_from=int(document["v2_from"]), key_id=str(document["key_id"]))
    except (ValueError, KeyError, TypeError):
        # An edited row: the chain's checks then fail (no record is keyed) and the checkpoint disagrees.
        return ChainState(v2_from=None, key_id="unreadable")


def _decode_cursor(cursor: str, kind: str, order: str) -> int:
    try:
        return decode_cursor(cursor, kind, order)
    except CursorError as error:
        raise InvalidCursor(error.detail) from None


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")


def _decision_from_row(row: Any) -> Decision:
    """A `Decision` from a `decisions` row (or a `_RowView` of the values just inserted)."""
    review: Review | None = None
    if row.review_status is not None:
        review = Review(
            status=row.review_status,
            reviewer=row.reviewer,
            note=row.review_note,
            resolved_at=row.review_resolved_at,
        )
    return Decision(
        decision_id=row.decision_id,
        outcome=row.outcome,
        reason=row.reason,
        risk_score=row.risk_score,
        constraints=dict(row.constraints),
        timestamp=row.timestamp,
        audit_ref=row.audit_ref,
        policy_ids=list(row.policy_ids),
        confirmation_token=row.confirmation_token,
        expires_at=row.expires_at,
        review=review,
        parent_decision_id=row.parent_decision_id,
    )


def _as_stored(record: NewDecision, row: Mapping[str, Any]) -> Decision:
    """The decision as its new row holds it: the one given when the row changed nothing in it (the
    service's decisions arrive complete: audit_ref made, constraints canonical), else rebuilt from the row."""
    decision = record.decision
    review_as_stored = None if row["review_status"] is None else Review(status=row["review_status"])
    if (
        decision.audit_ref == row["audit_ref"]
        and decision.expires_at == row["expires_at"]
        and decision.review == review_as_stored
        and _same_json(decision.constraints, row["constraints"])
    ):
        return decision
    return _decision_from_row(_RowView(row))


def _same_json(first: Any, second: Any) -> bool:
    """True when both are the same JSON, spelling included (1 and 1.0, or true and 1, differ)."""
    try:
        return bool(
            orjson.dumps(first, option=orjson.OPT_SORT_KEYS) == orjson.dumps(second, option=orjson.OPT_SORT_KEYS)
        )
    except orjson.JSONEncodeError:
        return False


def _audit_from_row(row: Row[Any]) -> AuditRecord:
    return AuditRecord(
        audit_ref=row.audit_ref,
        sequence=row.sequence,
        event_type=row.event_type,
        decision_id=row.decision_id,
        actor_id=row.actor_id,
        capability=row.capability,
        outcome=row.outcome,
        session_id=row.session_id,
        timestamp=row.timestamp,
        payload=dict(row.payload),
        previous_hash=row.previous_hash,
        hash=row.hash,
    )


def _api_key_from_row(row: Row[Any]) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        name=row.name,
        scopes=tuple(row.scopes),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        actors=_stored_actor_patterns(row.key_id, row.actors),
        rate_limit_per_minute=row.rate_limit_per_minute,
    )


def _stored_actor_patterns(key_id: str, stored: Any) -> tuple[str, ...] | None:
    """A key's actor patterns as stored, checked as the CLI and the API check them. A value they could not
    have written (a string instead of a list, a pattern that does not parse: a row edited by hand) binds
    the key to no actor — its proposals are refused — and says so in the log."""
    if stored is None:
        return None
    if isinstance(stored, list) and all(isinstance(pattern, str) for pattern in stored):
        try:
            return tuple(parse_actor_patterns(stored))
        except ValueError as exc:
            problem = str(exc)
    else:
        problem = f"a JSON {type(stored).__name__} where a list of patterns belongs"
    logger.error(
        "API key %s: its stored actor patterns are malformed (%s); it is bound to no actor until "
        "`aegis-server keys update %s --actors ...` rewrites them",
        key_id,
        problem,
        key_id,
    )
    return None


class Store:
    """The repository of the AEGIS server. Open it with `await Store.open(url)`; close it with `close()`.

    `clock` (default: the system clock, UTC) stamps audit records and key/policy times; tests patch it.
    `audit_key` says where the audit (HMAC) key is: `Store.open` defaults to the key file of
    `default_audit_dir(url)`; a store made here without one uses a random key of its own.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] | None = None,
        batch_writer: sa.Engine | None = None,
        loop_writer: sa.Engine | None = None,
        audit_key: AuditKeySource | None = None,
    ) -> None:
        self._engine = engine
        self._audit_key = audit_key if audit_key is not None else AuditKeySource()
        self._chain: _ChainWriter | None = None  # set by `prepare_chain` before the first write
        self._floor = 0  # a record known to exist (`raise_chain_floor`) before the chain was prepared
        self._appenders: dict[AsyncConnection, list[_AuditAppender]] = {}  # of the open write transactions
        self._chain_lock = asyncio.Lock()
        self._postgres = engine.dialect.name == "postgresql"
        self._writer = engine if self._postgres else sqlite_writer(engine)
        self._write_lock = asyncio.Lock()
        # Idempotency-Key lookups through the async engine (PostgreSQL) at once, at most: a burst of
        # proposals (the SDK sends a key with each) otherwise overflowed the pool, and every overflow
        # connection was opened for one SELECT and closed again (p90 144 ms at 400 proposals/s; 8 ms
        # with this bound). Two connections stay free for the group commit and the review sweep.
        self._idempotency_reads = asyncio.Semaphore(POOL_SIZE - 2)
        self._clock = clock or _utcnow
        self._secret: bytes | None = None
        # Group commit of plain decisions (see `_record_grouped`): waiting records and the flushing task.
        self._pending: list[tuple[NewDecision, asyncio.Future[Decision]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # SQLite file: a group commit is written by a synchronous connection on the event loop's thread
        # (`loop_writer`, which never waits: see `_write_batch_to_sqlite`), or by one on a thread of its own
        # (`batch_writer`) when another process holds the file's write lock; in-memory SQLite and
        # PostgreSQL write batches on the async engine.
        self._batch_writer = batch_writer
        self._loop_writer = loop_writer
        self._loop_reader = sqlite_reader(loop_writer) if loop_writer is not None else None
        # Checked out once: the group commit writes on its driver connection (`immediate_transaction`).
        self._loop_connection = loop_writer.raw_connection() if loop_writer is not None else None
        self._last_checkpoint = time.monotonic()
        self._checkpoint: asyncio.Future[None] | None = None  # the running `_checkpoint_wal`
        if batch_writer is not None:
            self._bulk_decisions = BulkInsert(decisions, batch_writer.dialect)
            self._bulk_keys = BulkInsert(
                idempotency_keys, batch_writer.dialect, on_conflict_do_nothing=("api_key_id", "key")
            )
            self._bulk_audit = BulkInsert(audit_records, batch_writer.dialect)
        self._batch_thread = (
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="aegis-sqlite-writer")
            if batch_writer is not None
            else None
        )

    # ------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        clock: Callable[[], datetime] | None = None,
        audit_key: AuditKeySource | None = None,
    ) -> Store:
        """Connect to `url` (`sqlite+aiosqlite:///path`, `postgresql+asyncpg://...`; plain `sqlite:///` and
        `postgresql://` are accepted). With `migrate`, pending migrations are applied first (safe when
        several processes start at once); without, a schema that is not at head raises `SchemaNotReady`.
        `audit_key`: where the audit key is (default: `audit-hmac.key` in `default_audit_dir(url)`, made
        on the first write; an in-memory database uses a random key)."""
        if audit_key is None:
            directory = default_audit_dir(url)
            audit_key = AuditKeySource(file=directory / "audit-hmac.key" if directory is not None else None)
        engine = create_engine(url)
        try:
            if migrate:
                await upgrade_engine(engine)
            else:
                await check_schema(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(
            engine,
            clock=clock,
            batch_writer=sqlite_batch_writer(url),
            loop_writer=sqlite_batch_writer(url, on_event_loop=True),
            audit_key=audit_key,
        )

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return "postgresql" if self._postgres else "sqlite"

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return redact_url(self._engine.url)

    async def close(self) -> None:
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):  # logged where it failed
                await self._checkpoint
        if self._loop_connection is not None:
            self._loop_connection.close()
        if self._loop_writer is not None:
            self._loop_writer.dispose()
        if self._batch_thread is not None and self._batch_writer is not None:
            await asyncio.get_running_loop().run_in_executor(self._batch_thread, self._batch_writer.dispose)
            self._batch_thread.shutdown()
        await self._engine.dispose()

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            async with self._engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception:  # any failure means "not reachable"; callers report it, nothing to re-raise
            return False
        return True

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        if self._chain is None:
            await self.prepare_chain()
        conn: AsyncConnection | None = None
        try:
            if self._postgres:
                async with self._writer.begin() as conn:
                    yield conn
            else:
                async with self._write_lock, self._writer.begin() as conn:
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

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            yield conn

    def _audit(self, conn: AsyncConnection, now: datetime) -> _AuditAppender:
        assert self._chain is not None  # `_write` prepared it
        appender = _AuditAppender(conn=conn, postgres=self._postgres, now=now, chain=self._chain)
        self._appenders.setdefault(conn, []).append(appender)
        return appender

    # ------------------------------------------------------------------------------------------
    # the keyed chain
    # ------------------------------------------------------------------------------------------

    async def prepare_chain(self) -> ChainState:
        """Make sure new records are keyed: load (or create) the audit key, and record in `server_settings`
        where the keyed chain starts (the record after the current head) with the key's fingerprint, once
        per database. Raises `AuditKeyError` when the database's chain uses another audit key (a replica
        configured with a different AEGIS_AUDIT_KEY). Called by the first write; the server calls it at
        startup."""
        async with self._chain_lock:
            if self._chain is not None:
                return await self.chain_state()
            key = self._audit_key.get(create=True)
            assert key is not None
            linker = ChainLinker(key)
            lock = self._write_lock if not self._postgres else contextlib.nullcontext()
            async with lock, self._writer.begin() as conn:
                if self._postgres:
                    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(AUDIT_LOCK_KEY)))
                value = await conn.scalar(
                    sa.select(server_settings.c.value).where(server_settings.c.name == _AUDIT_CHAIN)
                )
                if value is None:
                    head = _head_of((await conn.execute(_HEAD_QUERY)).first())
                    now = self._clock()
                    value = json.dumps({"v2_from": head[0] + 1, "key_id": linker.key_id}, sort_keys=True)
                    await conn.execute(
                        self._upsert(server_settings)
                        .values(name=_AUDIT_CHAIN, value=value, created_at=now, updated_at=now)
                        .on_conflict_do_nothing(index_elements=["name"])
                    )
                    value = await conn.scalar(
                        sa.select(server_settings.c.value).where(server_settings.c.name == _AUDIT_CHAIN)
                    )
            state = _parse_chain_state(value)
            if state.key_id != linker.key_id:
                raise AuditKeyError(
                    f"the audit chain in this database is keyed with audit key {state.key_id}, but this server "
                    f"has key {linker.key_id} ({self._audit_key.description}); give every server and CLI on this "
                    "database the same AEGIS_AUDIT_KEY (or the same key file)"
                )
            self._chain = _ChainWriter(linker)
            self._chain.floor = self._floor
            return state

    async def chain_state(self) -> ChainState:
        """Where the keyed chain starts, as the database records it (`v2_from` None: not yet keyed)."""
        async with self._read() as conn:
            value = await conn.scalar(sa.select(server_settings.c.value).where(server_settings.c.name == _AUDIT_CHAIN))
        return _parse_chain_state(value)

    async def chain_head(self) -> tuple[int, str | None]:
        """(sequence, hash) of the last record in the database; (0, None) for an empty chain."""
        async with self._read() as conn:
            last = (await conn.execute(_HEAD_QUERY)).first()
        return (int(last[0]), str(last[1])) if last is not None else (0, None)

    async def record_hash(self, sequence: int) -> str | None:
        """The stored hash of record `sequence`, or None when there is no such record."""
        async with self._read() as conn:
            value = await conn.scalar(sa.select(audit_records.c.hash).where(audit_records.c.sequence == sequence))
        return str(value) if value is not None else None

    def raise_chain_floor(self, sequence: int) -> None:
        """Tell the appender that record `sequence` existed (e.g. it was checkpointed): a head read below
        it afterwards refuses to append (`AuditChainCut`)."""
        self._floor = max(self._floor, sequence)
        if self._chain is not None and sequence > self._chain.floor:
            self._chain.floor = sequence

    def audit_linker(self, *, create: bool = False) -> ChainLinker | None:
        """The keyed linker of this store's audit key (None when the key does not exist and not `create`)."""
        key = self._audit_key.get(create=create)
        return ChainLinker(key) if key is not None else None

    def _upsert(self, table: sa.Table) -> Any:
        return pg_dialect.insert(table) if self._postgres else sqlite_dialect.insert(table)

    # ------------------------------------------------------------------------------------------
    # API keys
    # ------------------------------------------------------------------------------------------

    async def create_api_key(
        self,
        name: str,
        scopes: Sequence[str],
        actors: Sequence[str] | None = (ANY_ACTOR,),
        *,
        rate_limit_per_minute: int | None = None,
        by: str = "cli",
    ) -> tuple[str, ApiKey]:
        """Make a new key `aegis_sk_<43 url-safe chars>`; returns it (shown once) and its record.
        Only the key's SHA-256 is stored.

        `actors`: the actor patterns it may propose for (see `aegis_server.key_actors`). This Python API
        defaults to `*` (any actor) for tests and embedding; the CLI and the keys API make operators
        choose explicitly. None stores a key bound to no actor. `rate_limit_per_minute`: its own limit
        (None: the server-wide default; 0: none). `by`: who made it, for the audit (an API key id, or
        "cli")."""
        name = name.strip()
        if not 1 <= len(name) <= 200:
            raise ValueError("an API key needs a name of 1 to 200 characters, e.g. the service or person using it")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise ValueError(f"unknown scope(s) {', '.join(unknown)}; choose from {', '.join(SCOPES)}")
        if not scopes:
            raise ValueError(f"an API key needs at least one scope; choose from {', '.join(SCOPES)}")
        patterns = tuple(parse_actor_patterns(actors)) if actors is not None else None
        check_rate_limit(rate_limit_per_minute)
        ordered = tuple(scope for scope in SCOPES if scope in set(scopes))
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        record = ApiKey(
            key_id=f"key_{secrets.token_hex(8)}",
            name=name,
            scopes=ordered,
            created_at=now,
            actors=patterns,
            rate_limit_per_minute=rate_limit_per_minute,
        )
        async with self._write() as conn:
            await conn.execute(
                sa.insert(api_keys).values(
                    key_id=record.key_id,
                    name=record.name,
                    key_hash=hash_api_key(key),
                    scopes=list(record.scopes),
                    created_at=now,
                    actors=list(patterns) if patterns is not None else None,
                    rate_limit_per_minute=rate_limit_per_minute,
                )
            )
            await self._audit(conn, now).append(
                "api_key_created",
                payload={
                    "key_id": record.key_id,
                    "name": name,
                    "scopes": list(ordered),
                    "actors": list(patterns) if patterns is not None else None,
                    "rate_limit_per_minute": rate_limit_per_minute,
                    "by": by,
                },
            )
        return key, record

    async def update_api_key(
        self,
        key_id: str,
        *,
        actors: Sequence[str] | _Unset | None = UNSET,
        rate_limit_per_minute: int | _Unset | None = UNSET,
        by: str = "cli",
    ) -> ApiKey | None:
        """Change an active key's actor patterns and/or its own rate limit (None: the server default);
        what is not given stays. Audited as "api_key_updated". None when no active key has this id."""
        values: dict[str, Any] = {}
        if not isinstance(actors, _Unset):
            values["actors"] = list(parse_actor_patterns(actors)) if actors is not None else None
        if not isinstance(rate_limit_per_minute, _Unset):
            values["rate_limit_per_minute"] = check_rate_limit(rate_limit_per_minute)
        now = self._clock()
        async with self._write() as conn:
            active = sa.and_(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            if values:
                result = await conn.execute(sa.update(api_keys).where(active).values(**values))
                if result.rowcount != 1:
                    return None
                await self._audit(conn, now).append("api_key_updated", payload={"key_id": key_id, **values, "by": by})
            row = (await conn.execute(sa.select(api_keys).where(active))).first()
        return _api_key_from_row(row) if row is not None else None

    async def authenticate(self, presented_key: str) -> ApiKey | None:
        """The active key matching `presented_key`, or None (unknown, malformed or revoked)."""
        if not presented_key or len(presented_key) > _MAX_PRESENTED_KEY:
            return None
        digest = hash_api_key(presented_key)
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(api_keys).where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
                )
            ).first()
        if row is None or not hmac.compare_digest(str(row.key_hash), digest):
            return None
        return _api_key_from_row(row)

    async def list_api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id))).all()
        return [_api_key_from_row(row) for row in rows]

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id))).first()
        return _api_key_from_row(row) if row is not None else None

    async def revoke_api_key(self, key_id: str, *, by: str = "cli") -> bool:
        """Revoke an active key; False when no active key has this id. `by`: who (an API key id or "cli")."""
        now = self._clock()
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if result.rowcount != 1:
                return False
            await self._audit(conn, now).append("api_key_revoked", payload={"key_id": key_id, "by": by})
        return True

    async def count_unbound_api_keys(self) -> int:
        """How many active keys are bound to no actor (actors NULL: made before 0.2) though they may
        propose (`governance:propose` or `admin`): their proposals are refused until updated."""
        return sum(
            1
            for key in await self.list_api_keys()
            if key.revoked_at is None and not key.bound and key.has_scope("governance:propose")
        )

    async def count_api_keys(self) -> int:
        """How many keys are active (not revoked)."""
        async with self._read() as conn:
            count = await conn.scalar(
                sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
            )
        return int(count or 0)

    # ------------------------------------------------------------------------------------------
    # server secret and registry revision
    # ------------------------------------------------------------------------------------------

    async def get_or_create_secret(self) -> bytes:
        """The server's 32-byte HMAC secret for tokens: made on first call, then the same for every
        process on this database (concurrent first calls agree: insert-if-absent, then read)."""
        if self._secret is not None:
            return self._secret
        async with self._read() as conn:
            value = await conn.scalar(sa.select(server_settings.c.value).where(server_settings.c.name == _SECRET_NAME))
        if value is None:
            now = self._clock()
            async with self._write() as conn:
                await conn.execute(
                    self._upsert(server_settings)
                    .values(name=_SECRET_NAME, value=secrets.token_bytes(32).hex(), created_at=now, updated_at=now)
                    .on_conflict_do_nothing(index_elements=["name"])
                )
                value = await conn.scalar(
                    sa.select(server_settings.c.value).where(server_settings.c.name == _SECRET_NAME)
                )
        self._secret = bytes.fromhex(str(value))
        return self._secret

    async def policy_version(self) -> str:
        """An opaque value that changes whenever an API-managed policy or capability changes (poll it to
        know when to reload the policy set; "" before the first change)."""
        async with self._read() as conn:
            value = await conn.scalar(
                sa.select(server_settings.c.value).where(server_settings.c.name == _POLICY_VERSION)
            )
        return str(value) if value is not None else ""

    async def _bump_policy_version(self, conn: AsyncConnection, now: datetime) -> None:
        revision = uuid.uuid4().hex
        stmt = self._upsert(server_settings).values(
            name=_POLICY_VERSION, value=revision, created_at=now, updated_at=now
        )
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=["name"], set_={"value": revision, "updated_at": now})
        )

    # ------------------------------------------------------------------------------------------
    # decisions
    # ------------------------------------------------------------------------------------------

    async def record_decision(self, record: NewDecision) -> Decision:
        """Store a decision with its audit records ("proposal", then "decision", then "confirmation" on the
        parent when a token is consumed), its idempotency key and the token consumption, in one
        transaction committed before this returns.

        Raises `TokenAlreadyUsed` when `consumes_token_of` names a decision whose token was used,
        `NotFound` when that decision does not exist, `IdempotencyConflict` when the idempotency key is
        already stored for a different request hash. When it is stored for the same request hash (a race
        between two deliveries of one request), nothing is written and the stored decision is returned.
        """
        if record.consumes_token_of is None:
            return await self._record_grouped(record)
        return await self._record_one(record)

    # Group commit. Concurrent proposals each used to pay a whole write transaction (BEGIN IMMEDIATE,
    # five statements, COMMIT: ~3 ms of thread hand-offs on aiosqlite, serialised by the chain), which
    # capped a server at ~300 decisions/s. Now a decision that consumes no token joins a queue; one task
    # writes everything queued in one transaction (executemany: decisions, idempotency keys, audit
    # records) and commits, and only then answers each waiting request: durability per request is
    # unchanged, the cost per transaction is shared. A batch that cannot be written as a whole (an
    # idempotency key already used, a database error) is rolled back and each of its records is
    # written alone by `_record_one`, which gives every request its own answer as before.

    _MAX_GROUP = 256

    async def _record_grouped(self, record: NewDecision) -> Decision:
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending())
        return await asyncio.shield(future)  # a cancelled request does not cancel the others' commit

    async def _flush_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._MAX_GROUP], self._pending[self._MAX_GROUP :]
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
                    future.set_result(await self._record_one(record))
                except Exception as exc:
                    future.set_exception(exc)

    async def _write_group(self, records: Sequence[NewDecision]) -> list[Decision]:
        now = self._clock()
        rows = [self._decision_row(record, now) for record in records]
        keys = [
            {
                "api_key_id": record.idempotency.api_key_id,
                "key": record.idempotency.key,
                "request_hash": record.idempotency.request_hash,
                "decision_id": record.decision.decision_id,
                "created_at": now,
            }
            for record in records
            if record.idempotency is not None
        ]
        entries = [
            entry
            for record, row in zip(records, rows, strict=True)
            for entry in self._decision_audit_entries(record, row)
        ]
        if self._chain is None:
            await self.prepare_chain()
        if self._batch_writer is not None:
            # The asyncio lock keeps this process's other writers out, BEGIN IMMEDIATE other processes.
            async with self._write_lock:
                await self._write_batch_to_sqlite(rows, keys, entries, now)
        else:
            async with self._write() as conn:
                await conn.execute(sa.insert(decisions), rows)
                if keys:
                    inserted = await conn.execute(self._insert_new_keys(), keys)
                    if len(inserted.all()) != len(keys):
                        raise _IdempotentReplay  # roll back; each record is then written alone
                await self._audit(conn, now).append_many(entries)
        return [_as_stored(record, row) for record, row in zip(records, rows, strict=True)]

    def _insert_new_keys(self) -> Any:
        return (
            self._upsert(idempotency_keys)
            .on_conflict_do_nothing(index_elements=["api_key_id", "key"])
            .returning(idempotency_keys.c.key)
        )

    # A batch is written on the event loop's thread: its statements are a few hundred microseconds of
    # SQLite's own work, and a writer thread spent more than that waiting for the GIL at every statement
    # (the loop holds it while it decides the next proposals). The loop must never block, so its
    # connection does not wait for a lock (another process writing: the batch goes to the writer thread,
    # which waits up to the busy timeout) and never checkpoints the WAL on commit: `_checkpoint_wal` does,
    # from the writer thread, at most once a second.

    _CHECKPOINT_INTERVAL_SECONDS = 1.0
    _WAL_RESTART_FRAMES = WAL_SIZE_LIMIT_BYTES // 4096  # pages of the default size

    async def _write_batch_to_sqlite(
        self, rows: list[dict[str, Any]], keys: list[dict[str, Any]], entries: list[dict[str, Any]], now: datetime
    ) -> None:
        assert self._batch_writer is not None
        written = False
        if self._loop_connection is not None:
            try:
                self._write_group_sync(self._loop_connection.dbapi_connection, rows, keys, entries, now)
                written = True
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                # another process holds the write lock; nothing was written (BEGIN failed)
        if not written:
            await asyncio.get_running_loop().run_in_executor(
                self._batch_thread, self._write_group_in_thread, rows, keys, entries, now
            )
        if self._checkpoint is None and time.monotonic() - self._last_checkpoint >= self._CHECKPOINT_INTERVAL_SECONDS:
            self._checkpoint = asyncio.ensure_future(self._checkpoint_wal())

    _CATCH_UP_PASSES = 3
    _CAUGHT_UP_SECONDS = 0.005

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
            if wal_frames >= self._WAL_RESTART_FRAMES:
                for _ in range(self._CATCH_UP_PASSES):
                    started = time.monotonic()
                    await loop.run_in_executor(self._batch_thread, checkpoint_wal, self._batch_writer)
                    if time.monotonic() - started < self._CAUGHT_UP_SECONDS:
                        break
                async with self._write_lock:
                    await loop.run_in_executor(self._batch_thread, checkpoint_wal, self._batch_writer)
        except Exception as exc:  # the next batch schedules another attempt
            logger.warning("checkpointing the SQLite WAL failed (retried in a second): %s", exc)
        finally:
            self._checkpoint = None
            self._last_checkpoint = time.monotonic()

    def _write_group_in_thread(
        self, rows: list[dict[str, Any]], keys: list[dict[str, Any]], entries: list[dict[str, Any]], now: datetime
    ) -> None:
        assert self._batch_writer is not None
        connection = self._batch_writer.raw_connection()  # this thread's own (a SingletonThreadPool)
        try:
            self._write_group_sync(connection.dbapi_connection, rows, keys, entries, now)
        finally:
            connection.close()

    def _write_group_sync(
        self,
        connection: Any,  # the sqlite3 connection of a batch writer
        rows: list[dict[str, Any]],
        keys: list[dict[str, Any]],
        entries: list[dict[str, Any]],
        now: datetime,
    ) -> None:
        """`_write_group`'s transaction on a batch writer's driver connection (commits before returning)."""
        with immediate_transaction(connection):
            self._bulk_decisions.execute(connection, rows)
            if self._bulk_keys.execute(connection, keys) != len(keys):
                raise _IdempotentReplay  # roll back; each record is then written alone
            chain = self._chain
            assert chain is not None  # `_write_group` prepared it
            audit_rows, head = _chained_rows(
                chain.head(connection.execute(_HEAD_SQL).fetchone()), entries, now, chain.linker
            )
            self._bulk_audit.execute(connection, audit_rows)
        chain.floor = max(chain.floor, head[0])  # committed

    def _decision_row(self, record: NewDecision, now: datetime) -> dict[str, Any]:
        """The `decisions` row of a new decision (as `_record_one` inserts it)."""
        decision = record.decision
        escalate = decision.outcome == "ESCALATE"
        review_deadline = record.review_deadline
        if escalate and review_deadline is None:
            review_deadline = _parse_timestamp(decision.expires_at)
        if escalate and review_deadline is None:
            raise ValueError("an ESCALATE decision needs a review_deadline (or an expires_at) to be recorded")
        expires_at = decision.expires_at
        if escalate and expires_at is None and review_deadline is not None:
            expires_at = format_timestamp(review_deadline)
        token_expires_at = record.token_expires_at
        if token_expires_at is None and decision.confirmation_token is not None:
            token_expires_at = _parse_timestamp(decision.expires_at)
        return {
            "decision_id": decision.decision_id,
            "outcome": decision.outcome,
            "reason": decision.reason,
            "risk_score": decision.risk_score,
            "constraints": normalise_json(decision.constraints),
            "policy_ids": list(decision.policy_ids),
            "timestamp": decision.timestamp,
            "created_at": record.created_at or _parse_timestamp(decision.timestamp) or now,
            "audit_ref": decision.audit_ref or new_audit_ref(),
            "actor_id": record.actor_id,
            "actor_type": record.actor_type,
            "capability": record.capability,
            "session_id": record.session_id,
            "params_hash": record.params_hash,
            "api_key_id": record.api_key_id,
            "parent_decision_id": decision.parent_decision_id,
            "confirmation_token": decision.confirmation_token,
            "expires_at": expires_at,
            "token_expires_at": token_expires_at,
            "review_status": (decision.review.status if decision.review is not None else "pending")
            if escalate
            else None,
            "review_deadline": review_deadline if escalate else None,
            "token_used_at": None,
            "token_used_by": None,
            "reviewer": None,
            "review_note": None,
            "review_resolved_at": None,
        }

    @staticmethod
    def _decision_audit_entries(record: NewDecision, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The "proposal" and "decision" audit records of a new decision (as `_record_one` appends them)."""
        decision = record.decision
        common: dict[str, Any] = {
            "decision_id": decision.decision_id,
            "actor_id": record.actor_id,
            "capability": record.capability,
            "session_id": record.session_id,
        }
        review_deadline = row["review_deadline"]
        return [
            {"event_type": "proposal", "payload": dict(record.proposal_audit), **common},
            {
                "event_type": "decision",
                "audit_ref": row["audit_ref"],
                "outcome": decision.outcome,
                "payload": {
                    "outcome": decision.outcome,
                    "reason": decision.reason,
                    "risk_score": decision.risk_score,
                    "constraints": decision.constraints,
                    "policy_ids": list(decision.policy_ids),
                    "actor_type": record.actor_type,
                    "params_hash": record.params_hash,
                    "parent_decision_id": decision.parent_decision_id,
                    "expires_at": row["expires_at"],
                    "review_deadline": format_timestamp(review_deadline) if review_deadline else None,
                    "confirmation_token_issued": decision.confirmation_token is not None,
                    "idempotency_key": record.idempotency is not None,
                    "api_key_id": record.api_key_id,
                },
                **common,
            },
        ]

    async def _record_one(self, record: NewDecision) -> Decision:
        """`record_decision` in a transaction of its own (token consumption, and a batch's fallback)."""
        decision = record.decision
        now = self._clock()
        created_at = record.created_at or _parse_timestamp(decision.timestamp) or now
        escalate = decision.outcome == "ESCALATE"
        review_deadline = record.review_deadline
        if escalate and review_deadline is None:
            review_deadline = _parse_timestamp(decision.expires_at)
        if escalate and review_deadline is None:
            raise ValueError("an ESCALATE decision needs a review_deadline (or an expires_at) to be recorded")
        expires_at = decision.expires_at
        if escalate and expires_at is None and review_deadline is not None:
            expires_at = format_timestamp(review_deadline)
        token_expires_at = record.token_expires_at
        if token_expires_at is None and decision.confirmation_token is not None:
            token_expires_at = _parse_timestamp(decision.expires_at)
        audit_ref = decision.audit_ref or new_audit_ref()
        review_status = (decision.review.status if decision.review is not None else "pending") if escalate else None
        proposal_payload = normalise_json(dict(record.proposal_audit))
        parent = record.consumes_token_of
        try:
            async with self._write() as conn:
                if (
                    parent is not None
                    and (await conn.scalar(sa.select(decisions.c.decision_id).where(decisions.c.decision_id == parent)))
                    is None
                ):
                    raise NotFound("decision", parent)
                await conn.execute(
                    sa.insert(decisions).values(
                        decision_id=decision.decision_id,
                        outcome=decision.outcome,
                        reason=decision.reason,
                        risk_score=decision.risk_score,
                        constraints=normalise_json(decision.constraints),
                        policy_ids=list(decision.policy_ids),
                        timestamp=decision.timestamp,
                        created_at=created_at,
                        audit_ref=audit_ref,
                        actor_id=record.actor_id,
                        actor_type=record.actor_type,
                        capability=record.capability,
                        session_id=record.session_id,
                        params_hash=record.params_hash,
                        api_key_id=record.api_key_id,
                        parent_decision_id=decision.parent_decision_id,
                        confirmation_token=decision.confirmation_token,
                        expires_at=expires_at,
                        token_expires_at=token_expires_at,
                        review_status=review_status,
                        review_deadline=review_deadline if escalate else None,
                    )
                )
                if record.idempotency is not None:
                    inserted = await conn.execute(
                        self._upsert(idempotency_keys)
                        .values(
                            api_key_id=record.idempotency.api_key_id,
                            key=record.idempotency.key,
                            request_hash=record.idempotency.request_hash,
                            decision_id=decision.decision_id,
                            created_at=now,
                        )
                        .on_conflict_do_nothing(index_elements=["api_key_id", "key"])
                    )
                    if inserted.rowcount != 1:
                        raise _IdempotentReplay
                if parent is not None:
                    consumed = await conn.execute(
                        sa.update(decisions)
                        .where(decisions.c.decision_id == parent, decisions.c.token_used_at.is_(None))
                        .values(token_used_at=now, token_used_by=decision.decision_id)
                    )
                    if consumed.rowcount != 1:
                        raise TokenAlreadyUsed(parent)
                audit = self._audit(conn, now)
                common: dict[str, Any] = {
                    "decision_id": decision.decision_id,
                    "actor_id": record.actor_id,
                    "capability": record.capability,
                    "session_id": record.session_id,
                }
                await audit.append("proposal", payload=proposal_payload, **common)
                await audit.append(
                    "decision",
                    audit_ref=audit_ref,
                    outcome=decision.outcome,
                    payload={
                        "outcome": decision.outcome,
                        "reason": decision.reason,
                        "risk_score": decision.risk_score,
                        "constraints": decision.constraints,
                        "policy_ids": list(decision.policy_ids),
                        "actor_type": record.actor_type,
                        "params_hash": record.params_hash,
                        "parent_decision_id": decision.parent_decision_id,
                        "expires_at": expires_at,
                        "review_deadline": format_timestamp(review_deadline) if review_deadline else None,
                        "confirmation_token_issued": decision.confirmation_token is not None,
                        "idempotency_key": record.idempotency is not None,
                        "api_key_id": record.api_key_id,
                    },
                    **common,
                )
                if parent is not None:
                    await audit.append(
                        "confirmation",
                        decision_id=parent,
                        actor_id=record.actor_id,
                        capability=record.capability,
                        session_id=record.session_id,
                        payload={"token_consumed_by": decision.decision_id, "api_key_id": record.api_key_id},
                    )
                row = (
                    await conn.execute(sa.select(decisions).where(decisions.c.decision_id == decision.decision_id))
                ).one()
                return _decision_from_row(row)
        except _IdempotentReplay:
            entry = record.idempotency
            assert entry is not None
            found = await self.find_idempotent(entry.api_key_id, entry.key)
            if found is None:  # the other request's transaction was rolled back after all: try again
                return await self._record_one(record)
            request_hash, stored = found
            if request_hash != entry.request_hash:
                raise IdempotencyConflict(entry.key, stored.decision_id) from None
            return stored

    async def find_idempotent(self, api_key_id: str, key: str) -> tuple[str, Decision] | None:
        """The (request_hash, decision) stored for this API key's Idempotency-Key, or None."""
        query = (
            sa.select(idempotency_keys.c.request_hash, decisions)
            .join(decisions, decisions.c.decision_id == idempotency_keys.c.decision_id)
            .where(idempotency_keys.c.api_key_id == api_key_id, idempotency_keys.c.key == key)
        )
        # The SDK sends a key with every proposal, so this read precedes most decisions: on a SQLite file
        # it is one primary-key lookup on the loop's own connection (a WAL reader never waits for a lock),
        # not a hand-off to an aiosqlite thread and back (~1 ms under no load).
        row: Any = None
        read_on_loop = False
        if self._loop_reader is not None:
            try:
                with self._loop_reader.begin() as conn:
                    row = conn.execute(query).first()
                read_on_loop = True
            except OperationalError as exc:
                if "locked" not in str(exc.orig):
                    raise
        if not read_on_loop:
            async with self._idempotency_reads, self._read() as async_conn:
                row = (await async_conn.execute(query)).first()
        if row is None:
            return None
        return str(row.request_hash), _decision_from_row(row)

    async def get_decision(self, decision_id: str) -> Decision | None:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(decisions).where(decisions.c.decision_id == decision_id))).first()
        return _decision_from_row(row) if row is not None else None

    async def get_decision_binding(self, decision_id: str) -> DecisionBinding | None:
        """What a token issued for `decision_id` must match, and whether it was used."""
        async with self._read() as conn:
            row = (await conn.execute(sa.select(decisions).where(decisions.c.decision_id == decision_id))).first()
        if row is None:
            return None
        return DecisionBinding(
            decision_id=row.decision_id,
            actor_id=row.actor_id,
            actor_type=row.actor_type,
            capability=row.capability,
            params_hash=row.params_hash,
            outcome=row.outcome,
            session_id=row.session_id,
            review_status=row.review_status,
            token_used=row.token_used_at is not None,
            token_used_by=row.token_used_by,
            token_expires_at=row.token_expires_at,
            api_key_id=row.api_key_id,
        )

    async def list_decisions(
        self, filters: DecisionFilters, limit: int, cursor: str | None
    ) -> tuple[list[Decision], str | None]:
        """One page of decisions (newest first unless `filters.order == "asc"`) and the cursor of the next
        page (None on the last). Keyset paging: a page never repeats or skips a decision that existed
        when the first page was read."""
        _check_limit(limit)
        order = filters.order or "desc"
        query = sa.select(decisions)
        for column, value in (
            (decisions.c.actor_id, filters.actor_id),
            (decisions.c.capability, filters.capability),
            (decisions.c.outcome, filters.outcome),
            (decisions.c.session_id, filters.session_id),
            (decisions.c.review_status, filters.review_status),
        ):
            if value is not None:
                query = query.where(column == value)
        rows, next_cursor = await self._keyset_page(
            query, "decisions", decisions.c.row_id, decisions.c.created_at, filters, order, limit, cursor
        )
        return [_decision_from_row(row) for row in rows], next_cursor

    async def _keyset_page(
        self,
        query: sa.Select[Any],
        kind: str,
        key_column: sa.Column[Any],
        time_column: sa.Column[Any],
        filters: DecisionFilters | AuditFilters,
        order: str,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Any], str | None]:
        """One page of `query` after the since/until window, ordered by `key_column` (keyset pagination:
        stable while rows are inserted), and the cursor of the next page (None on the last one)."""
        if filters.since is not None:
            query = query.where(time_column >= filters.since)
        if filters.until is not None:
            query = query.where(time_column < filters.until)
        if cursor is not None:
            after = _decode_cursor(cursor, kind, order)
            query = query.where(key_column < after if order == "desc" else key_column > after)
        query = query.order_by(key_column.desc() if order == "desc" else key_column.asc()).limit(limit + 1)
        async with self._read() as conn:
            rows = list((await conn.execute(query)).all())
        if len(rows) <= limit:
            return rows, None
        return rows[:limit], _encode_cursor(kind, order, int(getattr(rows[limit - 1], key_column.name)))

    # ------------------------------------------------------------------------------------------
    # reviews
    # ------------------------------------------------------------------------------------------

    async def resolve_review(
        self,
        decision_id: str,
        *,
        approve: bool,
        reviewer: str,
        note: str | None,
        now: datetime,
        token: str | None = None,
        token_expires_at: datetime | None = None,
        reviewer_key_id: str | None = None,
    ) -> Decision:
        """Approve or deny a pending ESCALATE before its deadline. `reviewer_key_id`: the reviewing API key
        (audited; None: a review through the CLI, audited as `reviewer_via: "cli"`). On approval `token`
        (and its expiry)
        become the decision's confirmation_token / expires_at and the outcome stays ESCALATE (the proposer
        resubmits with the token); a denial makes the outcome the final DENY. Raises `NotFound`, or
        `NotPending` with the current status; a review attempted after the deadline marks the decision
        expired (audited, final DENY) and raises `NotPending(status="expired")`."""
        if approve and (token is None or token_expires_at is None):
            raise ValueError("approving a review needs the approval token and its expiry")
        expired = False
        async with self._write() as conn:
            row = (
                await conn.execute(
                    sa.select(
                        decisions.c.outcome,
                        decisions.c.review_status,
                        decisions.c.review_deadline,
                        decisions.c.actor_id,
                        decisions.c.capability,
                        decisions.c.session_id,
                    ).where(decisions.c.decision_id == decision_id)
                )
            ).first()
            if row is None:
                raise NotFound("decision", decision_id)
            if row.review_status is None:
                raise NotPending(decision_id, "not_escalated")
            if row.review_status != "pending":
                raise NotPending(decision_id, row.review_status)
            pending = sa.and_(decisions.c.decision_id == decision_id, decisions.c.review_status == "pending")
            resolved_at = format_timestamp(now)
            audit = self._audit(conn, now)
            context = {"decision_id": decision_id, "actor_id": row.actor_id, "capability": row.capability}
            context["session_id"] = row.session_id
            if row.review_deadline is not None and row.review_deadline <= now:
                if await self._expire_one(conn, audit, decision_id, row, now):
                    expired = True
                else:
                    raise NotPending(decision_id, "resolved concurrently")
            else:
                status = "approved" if approve else "denied"
                values: dict[str, Any] = {
                    "outcome": "ESCALATE" if approve else "DENY",
                    "review_status": status,
                    "reviewer": reviewer,
                    "review_note": note,
                    "review_resolved_at": resolved_at,
                }
                if not approve:
                    values["reason"] = decisions.c.reason + f"; final DENY: the reviewer {reviewer} denied it"
                if approve:
                    assert token_expires_at is not None
                    values.update(
                        confirmation_token=token,
                        token_expires_at=token_expires_at,
                        expires_at=format_timestamp(token_expires_at),
                    )
                changed = await conn.execute(sa.update(decisions).where(pending).values(**values))
                if changed.rowcount != 1:
                    raise NotPending(decision_id, "resolved concurrently")
                await audit.append(
                    "review",
                    outcome=None if approve else "DENY",
                    payload={
                        "status": status,
                        "reviewer": reviewer,
                        "note": note,
                        "resolved_at": resolved_at,
                        "token_expires_at": format_timestamp(token_expires_at) if token_expires_at else None,
                        "api_key_id": reviewer_key_id,
                        "reviewer_via": "api" if reviewer_key_id is not None else "cli",
                    },
                    **context,
                )
            if not expired:
                updated = (await conn.execute(sa.select(decisions).where(decisions.c.decision_id == decision_id))).one()
                return _decision_from_row(updated)
        raise NotPending(decision_id, "expired")

    async def _mark_expired(self, conn: AsyncConnection, decision_id: str, now: datetime) -> bool:
        changed = await conn.execute(
            sa.update(decisions)
            .where(decisions.c.decision_id == decision_id, decisions.c.review_status == "pending")
            .values(
                outcome="DENY",
                reason=decisions.c.reason + "; final DENY: no reviewer decided before the review deadline",
                review_status="expired",
                review_resolved_at=format_timestamp(now),
            )
        )
        return changed.rowcount == 1

    @staticmethod
    async def _audit_expired(audit: _AuditAppender, decision_id: str, row: Any) -> None:
        await audit.append(
            "review_expired",
            decision_id=decision_id,
            actor_id=row.actor_id,
            capability=row.capability,
            session_id=row.session_id,
            outcome="DENY",
            payload={
                "status": "expired",
                "final_outcome": "DENY",
                "review_deadline": format_timestamp(row.review_deadline) if row.review_deadline else None,
            },
        )

    async def _expire_one(
        self, conn: AsyncConnection, audit: _AuditAppender, decision_id: str, row: Any, now: datetime
    ) -> bool:
        if not await self._mark_expired(conn, decision_id, now):
            return False
        await self._audit_expired(audit, decision_id, row)
        return True

    async def expire_due_reviews(self, now: datetime, *, limit: int = 500) -> list[str]:
        """Mark pending reviews whose deadline is at or before `now` as expired: outcome becomes the final
        DENY, review.status "expired", audited as "review_expired".
        Returns the ids expired by this call (at most `limit`; call again while it returns a full list).
        Safe to run on several replicas at once: each review expires once."""
        columns = (
            decisions.c.decision_id,
            decisions.c.actor_id,
            decisions.c.capability,
            decisions.c.session_id,
            decisions.c.review_deadline,
        )
        async with self._read() as conn:
            due = (
                await conn.execute(
                    sa.select(*columns)
                    .where(decisions.c.review_status == "pending", decisions.c.review_deadline <= now)
                    .order_by(decisions.c.review_deadline, decisions.c.decision_id)
                    .limit(limit)
                )
            ).all()
        if not due:
            return []
        async with self._write() as conn:
            # Every row update first, then the audit appends: the chain lock is always the last lock a
            # transaction takes, so two sweeps on two replicas cannot deadlock.
            expired = [row for row in due if await self._mark_expired(conn, row.decision_id, now)]
            audit = self._audit(conn, now)
            for row in expired:
                await self._audit_expired(audit, row.decision_id, row)
        return [row.decision_id for row in expired]

    # ------------------------------------------------------------------------------------------
    # executions
    # ------------------------------------------------------------------------------------------

    async def record_execution(
        self,
        decision_id: str,
        report: ExecutionReport,
        now: datetime | None = None,
        *,
        api_key_id: str | None = None,
    ) -> ExecutionRecord:
        """Record the one execution report of an ALLOW decision (audited as "execution": status, error,
        duration, the canonical hash of the result and the reporting key; the result itself stays in
        `executions`). `api_key_id`: the reporting key; when given, it must be the key that proposed the
        decision (decisions from before migration 0002 have none and accept any key).
        Raises `NotFound`, `NotProposer`, `NotAllowed` (outcome is not ALLOW), `AlreadyReported`;
        `ValueError` when the result is not JSON data (e.g. NaN)."""
        moment = now or self._clock()
        result = normalise_json(report.result) if report.result is not None else None
        error = report.error.model_dump(mode="json") if report.error is not None else None
        recorded_at = format_timestamp(moment)
        audit_ref = new_audit_ref()

        def write(conn: sa.Connection) -> None:
            row = conn.execute(
                sa.select(
                    decisions.c.outcome,
                    decisions.c.actor_id,
                    decisions.c.capability,
                    decisions.c.session_id,
                    decisions.c.api_key_id,
                ).where(decisions.c.decision_id == decision_id)
            ).first()
            if row is None:
                raise NotFound("decision", decision_id)
            if api_key_id is not None and row.api_key_id is not None and row.api_key_id != api_key_id:
                raise NotProposer(decision_id, api_key_id)
            if row.outcome != "ALLOW":
                raise NotAllowed(decision_id, row.outcome)
            inserted = conn.execute(
                self._upsert(executions)
                .values(
                    decision_id=decision_id,
                    status=report.status,
                    result=result,
                    error=error,
                    duration_ms=report.duration_ms,
                    recorded_at=recorded_at,
                    audit_ref=audit_ref,
                )
                .on_conflict_do_nothing(index_elements=["decision_id"])
            )
            if inserted.rowcount != 1:
                raise AlreadyReported(decision_id)
            entry = {
                "event_type": "execution",
                "audit_ref": audit_ref,
                "decision_id": decision_id,
                "actor_id": row.actor_id,
                "capability": row.capability,
                "session_id": row.session_id,
                "outcome": report.status,
                "payload": {
                    "status": report.status,
                    "error": error,
                    "duration_ms": report.duration_ms,
                    "result_sha256": canonical_hash(result) if result is not None else None,
                    "api_key_id": api_key_id,
                },
            }
            written.append(self._append_audit_sync(conn, [entry], moment))

        written: list[int] = []
        await self._write_sync(write)
        self.raise_chain_floor(written[-1])
        return ExecutionRecord(
            decision_id=decision_id, status=report.status, recorded_at=recorded_at, audit_ref=audit_ref
        )

    async def _write_sync(self, work: Callable[[sa.Connection], None]) -> None:
        """Run `work` in one write transaction: on a SQLite file, on the event loop's own connection when
        the write lock is free (six statements there take well under a millisecond; through aiosqlite each
        is a thread hand-off), else through the async engine."""
        if self._chain is None:
            await self.prepare_chain()
        if self._loop_writer is not None:
            async with self._write_lock:
                try:
                    with self._loop_writer.begin() as conn:
                        work(conn)
                    return
                except OperationalError as exc:
                    if "locked" not in str(exc.orig):
                        raise
                    # another process holds the write lock; this transaction was rolled back
        async with self._write() as async_conn:
            await async_conn.run_sync(work)

    def _append_audit_sync(self, conn: sa.Connection, entries: Sequence[Mapping[str, Any]], now: datetime) -> int:
        """`_AuditAppender.append_many` for a synchronous connection (in the caller's write transaction)."""
        if self._postgres:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(AUDIT_LOCK_KEY)))
        chain = self._chain
        assert chain is not None  # `_write_sync` prepared it
        audit_rows, head = _chained_rows(chain.head(conn.execute(_HEAD_QUERY).first()), entries, now, chain.linker)
        conn.execute(sa.insert(audit_records), audit_rows)
        return head[0]  # the caller raises the floor to it once the transaction committed

    async def get_execution(self, decision_id: str) -> dict[str, Any] | None:
        """The stored execution report of a decision (status, result, error, duration_ms, recorded_at,
        audit_ref), or None."""
        async with self._read() as conn:
            row = (await conn.execute(sa.select(executions).where(executions.c.decision_id == decision_id))).first()
        return dict(row._mapping) if row is not None else None

    # ------------------------------------------------------------------------------------------
    # audit
    # ------------------------------------------------------------------------------------------

    async def append_audit(
        self,
        event_type: str,
        *,
        decision_id: str | None = None,
        actor_id: str | None = None,
        capability: str | None = None,
        outcome: str | None = None,
        session_id: str | None = None,
        payload: Mapping[str, Any],
    ) -> AuditRecord:
        """Append one record to the chain in its own transaction (e.g. a rejected token attempt)."""
        now = self._clock()
        async with self._write() as conn:
            return await self._audit(conn, now).append(
                event_type,
                decision_id=decision_id,
                actor_id=actor_id,
                capability=capability,
                outcome=outcome,
                session_id=session_id,
                payload=payload,
            )

    async def audit_log(
        self, filters: DecisionFilters, limit: int, cursor: str | None
    ) -> tuple[list[AuditRecord], str | None]:
        """One page of audit records (chain order unless `filters.order == "desc"`) and the next cursor.
        `filters` may be `DecisionFilters` or `AuditFilters`; `review_status` selects the records of
        decisions in that review state."""
        _check_limit(limit)
        order = filters.order or "asc"
        query = sa.select(audit_records)
        for column, value in (
            (audit_records.c.actor_id, filters.actor_id),
            (audit_records.c.capability, filters.capability),
            (audit_records.c.outcome, filters.outcome),
            (audit_records.c.session_id, filters.session_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if isinstance(filters, AuditFilters):
            if filters.decision_id is not None:
                query = query.where(audit_records.c.decision_id == filters.decision_id)
            if filters.event_type is not None:
                query = query.where(audit_records.c.event_type == filters.event_type)
        if filters.review_status is not None:
            query = query.where(
                audit_records.c.decision_id.in_(
                    sa.select(decisions.c.decision_id).where(decisions.c.review_status == filters.review_status)
                )
            )
        rows, next_cursor = await self._keyset_page(
            query, "audit", audit_records.c.sequence, audit_records.c.created_at, filters, order, limit, cursor
        )
        return [_audit_from_row(row) for row in rows], next_cursor

    async def audit_trail(self, decision_id: str) -> list[AuditRecord]:
        """Every audit record of one decision, in chain order (proposal, decision, review, confirmation,
        execution...)."""
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    sa.select(audit_records)
                    .where(audit_records.c.decision_id == decision_id)
                    .order_by(audit_records.c.sequence)
                )
            ).all()
        return [_audit_from_row(row) for row in rows]

    async def verify_chain(self, *, batch_size: int = _VERIFY_BATCH) -> AuditVerification:
        """Walk the whole chain in batches (constant memory) and report the first broken record:
        a sequence gap, a previous_hash that does not link, or contents that do not match the hash (the
        keyed HMAC from the database's `v2_from` on, under this store's audit key; a keyed record is
        unverifiable when the key is not available). `records_checked` counts the records examined, the
        broken one included; `head_sequence`, `chain_version` and `keyed_from` describe the chain."""
        state = await self.chain_state()
        linker = self.audit_linker() if state.v2_from is not None else None
        checker = ChainChecker(v2_from=state.v2_from, linker=linker)
        result = await self._walk_chain(checker, batch_size)
        head_sequence, _ = await self.chain_head() if checker.broken else (checker.head_sequence, None)
        keyed = state.v2_from is not None and head_sequence >= state.v2_from
        return result.model_copy(
            update={"head_sequence": head_sequence, "chain_version": 2 if keyed else 1, "keyed_from": state.v2_from}
        )

    async def _walk_chain(self, checker: ChainChecker, batch_size: int) -> AuditVerification:
        columns: list[Any] = [column for column in audit_records.c if column.name not in ("payload", "created_at")]
        payload_text: Any = sa.cast(audit_records.c.payload, sa.Text).label("payload_text")
        columns.append(audit_records.c.created_at)
        if not self._postgres:
            # SQLite keeps whatever bytes were written: read text as bytes, so a record whose bytes are not
            # UTF-8 (a tampered file) is reported as broken instead of failing the whole check.
            columns = [
                sa.cast(c, sa.LargeBinary).label(c.name)
                if isinstance(c.type, sa.String) or c.name == "created_at"
                else c
                for c in columns
            ]
            payload_text = sa.cast(audit_records.c.payload, sa.LargeBinary).label("payload_text")
        last = 0
        while True:
            async with self._read() as conn:
                rows = (
                    await conn.execute(
                        sa.select(*columns, payload_text)
                        .where(audit_records.c.sequence > last)
                        .order_by(audit_records.c.sequence)
                        .limit(batch_size)
                    )
                ).all()
            for row in rows:
                fields = {
                    name: value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
                    for name, value in row._mapping.items()
                    if name != "payload_text"
                }
                text = row.payload_text
                payload_error: str | None = None
                try:
                    fields["payload"] = json.loads(text) if text is not None else None
                except ValueError as exc:  # UnicodeDecodeError included: bytes that are not UTF-8
                    payload_error = str(exc)
                if not checker.check(fields, payload_error):
                    return checker.result()
            if len(rows) < batch_size:
                return checker.result()
            last = int(rows[-1].sequence)

    async def verify_decisions(self, *, batch_size: int = _VERIFY_BATCH, max_problems: int = 20) -> list[AuditProblem]:
        """Compare the decisions table with the audit: every decision row needs its "decision" audit record
        (same audit_ref, actor, capability, params_hash, and an outcome the audit explains: the recorded
        one, or DENY after a denied or expired review), and every "decision" record its decision row.
        Returns at most `max_problems` problems (an empty list: they agree). Batched, constant memory."""
        problems: list[AuditProblem] = []
        last = 0
        audit_columns = (
            audit_records.c.decision_id,
            audit_records.c.event_type,
            audit_records.c.audit_ref,
            audit_records.c.actor_id,
            audit_records.c.capability,
            audit_records.c.outcome,
            audit_records.c.sequence,
            sa.cast(audit_records.c.payload, sa.Text).label("payload_text"),
        )
        audited_events = ("decision", "review", "review_expired")
        while len(problems) < max_problems:
            async with self._read() as conn:
                rows = (
                    await conn.execute(
                        sa.select(
                            decisions.c.row_id,
                            decisions.c.decision_id,
                            decisions.c.outcome,
                            decisions.c.audit_ref,
                            decisions.c.actor_id,
                            decisions.c.capability,
                            decisions.c.params_hash,
                            decisions.c.reason,
                            decisions.c.risk_score,
                            decisions.c.constraints,
                            decisions.c.policy_ids,
                            decisions.c.parent_decision_id,
                            decisions.c.api_key_id,
                            decisions.c.review_status,
                            decisions.c.reviewer,
                        )
                        .where(decisions.c.row_id > last)
                        .order_by(decisions.c.row_id)
                        .limit(batch_size)
                    )
                ).all()
                if not rows:
                    break
                records = (
                    await conn.execute(
                        sa.select(*audit_columns)
                        .where(
                            audit_records.c.decision_id.in_([row.decision_id for row in rows]),
                            audit_records.c.event_type.in_(audited_events),
                        )
                        .order_by(audit_records.c.sequence)
                    )
                ).all()
            by_decision: dict[str, list[Any]] = {}
            for record in records:
                by_decision.setdefault(str(record.decision_id), []).append(record)
            for row in rows:
                problem = _decision_disagreement(row, by_decision.get(str(row.decision_id), []))
                if problem is not None:
                    problems.append(problem)
            last = int(rows[-1].row_id)
            if len(rows) < batch_size:
                break
        if len(problems) < max_problems:
            async with self._read() as conn:
                orphans = (
                    await conn.execute(
                        sa.select(audit_records.c.sequence, audit_records.c.decision_id)
                        .where(
                            audit_records.c.event_type == "decision",
                            ~sa.exists().where(decisions.c.decision_id == audit_records.c.decision_id),
                        )
                        .order_by(audit_records.c.sequence)
                        .limit(max_problems - len(problems))
                    )
                ).all()
            problems.extend(
                AuditProblem(
                    code="audit_without_decision",
                    message=f"audit record #{orphan.sequence} records decision {orphan.decision_id}, which the "
                    "decisions table does not hold (its row was deleted)",
                    sequence=int(orphan.sequence),
                    decision_id=orphan.decision_id,
                )
                for orphan in orphans
            )
        if len(problems) < max_problems:
            problems.extend(await self._unearned_confirmations(max_problems - len(problems)))
        return problems[:max_problems]

    async def _unearned_confirmations(self, limit: int) -> list[AuditProblem]:
        """ALLOW decisions confirmed from a parent no token is issued for (neither REQUIRE_CONFIRMATION nor
        an approved ESCALATE): a token minted with the secret. The parents' own rows are checked against
        their audit records by the caller."""
        parent = decisions.alias("parent")
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    sa.select(decisions.c.decision_id, parent.c.decision_id.label("parent_id"), parent.c.outcome)
                    .join(parent, parent.c.decision_id == decisions.c.parent_decision_id)
                    .where(
                        ~sa.or_(
                            parent.c.outcome == "REQUIRE_CONFIRMATION",
                            sa.and_(parent.c.outcome == "ESCALATE", parent.c.review_status == "approved"),
                        )
                    )
                    .order_by(decisions.c.row_id)
                    .limit(limit)
                )
            ).all()
        return [
            AuditProblem(
                code="confirmation_without_approval",
                message=f"decision {row.decision_id} confirms decision {row.parent_id}, which is {row.outcome} and "
                "was never open to confirmation (a token minted outside the server, or an edited row)",
                decision_id=row.decision_id,
            )
            for row in rows
        ]

    # ------------------------------------------------------------------------------------------
    # API-managed policies and capabilities
    # ------------------------------------------------------------------------------------------

    async def list_policies(self) -> list[Policy]:
        """Every API-managed policy, by name."""
        return [stored.policy for stored in await self.list_policy_records()]

    async def get_policy(self, name: str) -> Policy | None:
        stored = await self.get_policy_record(name)
        return stored.policy if stored is not None else None

    async def list_policy_records(self) -> list[StoredPolicy]:
        """Every API-managed policy with its created/updated times, by name."""
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(policies).order_by(policies.c.name))).all()
        return [StoredPolicy(Policy.model_validate(row.document), row.created_at, row.updated_at) for row in rows]

    async def get_policy_record(self, name: str) -> StoredPolicy | None:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(policies).where(policies.c.name == name))).first()
        return StoredPolicy(Policy.model_validate(row.document), row.created_at, row.updated_at) if row else None

    async def put_policy(self, policy: Policy) -> StoredPolicy:
        """Create or replace the policy named `policy.name` (audited as "policy_saved")."""
        row = await self._put_document(policies, "policy", policy.name, policy.model_dump(mode="json"))
        return StoredPolicy(Policy.model_validate(row.document), row.created_at, row.updated_at)

    async def delete_policy(self, name: str) -> bool:
        """Delete a stored policy (audited); False when there is none of that name."""
        return await self._delete_document(policies, "policy", name)

    async def _put_document(self, table: sa.Table, kind: str, name: str, document: dict[str, Any]) -> Any:
        """Upsert one API-managed policy or capability, bump the policy version and audit it as
        "<kind>_saved" (with the document's hash), all in one transaction; returns the stored row."""
        now = self._clock()
        async with self._write() as conn:
            await conn.execute(
                self._upsert(table)
                .values(name=name, document=document, created_at=now, updated_at=now)
                .on_conflict_do_update(index_elements=["name"], set_={"document": document, "updated_at": now})
            )
            await self._bump_policy_version(conn, now)
            await self._audit(conn, now).append(
                f"{kind}_saved", payload={"name": name, "sha256": canonical_hash(document)}
            )
            return (await conn.execute(sa.select(table).where(table.c.name == name))).one()

    async def _delete_document(self, table: sa.Table, kind: str, name: str) -> bool:
        """Delete one API-managed policy or capability (audited as "<kind>_deleted"); False if absent."""
        now = self._clock()
        async with self._write() as conn:
            result = await conn.execute(sa.delete(table).where(table.c.name == name))
            if result.rowcount != 1:
                return False
            await self._bump_policy_version(conn, now)
            await self._audit(conn, now).append(f"{kind}_deleted", payload={"name": name})
        return True

    async def list_capabilities(self) -> list[Capability]:
        """Every API-registered capability, by name."""
        return [stored.capability for stored in await self.list_capability_records()]

    async def get_capability(self, name: str) -> Capability | None:
        stored = await self.get_capability_record(name)
        return stored.capability if stored is not None else None

    async def list_capability_records(self) -> list[StoredCapability]:
        """Every API-registered capability with its created/updated times, by name."""
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(capabilities).order_by(capabilities.c.name))).all()
        return [
            StoredCapability(Capability.model_validate(row.document), row.created_at, row.updated_at) for row in rows
        ]

    async def get_capability_record(self, name: str) -> StoredCapability | None:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(capabilities).where(capabilities.c.name == name))).first()
        if row is None:
            return None
        return StoredCapability(Capability.model_validate(row.document), row.created_at, row.updated_at)

    async def put_capability(self, capability: Capability) -> StoredCapability:
        """Create or replace the capability named `capability.name` (audited as "capability_saved")."""
        row = await self._put_document(capabilities, "capability", capability.name, capability.model_dump(mode="json"))
        return StoredCapability(Capability.model_validate(row.document), row.created_at, row.updated_at)

    async def delete_capability(self, name: str) -> bool:
        """Delete a stored capability (audited); False when there is none of that name."""
        return await self._delete_document(capabilities, "capability", name)


def _decision_disagreement(row: Any, records: Sequence[Any]) -> AuditProblem | None:
    """How a decision row disagrees with its audit records (in chain order), or None. Every column fixed
    when the decision was made is compared with its "decision" record; the review columns with its last
    "review" / "review_expired" record."""
    decision_record = next((record for record in records if record.event_type == "decision"), None)
    if decision_record is None:
        return AuditProblem(
            code="decision_unaudited",
            message=f"decision {row.decision_id} has no 'decision' audit record (it was deleted, or the row was "
            "inserted outside the server)",
            decision_id=row.decision_id,
        )
    payload = _payload_of(decision_record)
    review_record = next(
        (record for record in reversed(records) if record.event_type in ("review", "review_expired")), None
    )
    outcome = "DENY" if review_record is not None and review_record.outcome == "DENY" else decision_record.outcome
    review = _payload_of(review_record) if review_record is not None else {}
    expected: list[tuple[str, Any, Any]] = [
        ("outcome", row.outcome, outcome),
        ("audit_ref", row.audit_ref, decision_record.audit_ref),
        ("actor_id", row.actor_id, decision_record.actor_id),
        ("capability", row.capability, decision_record.capability),
    ]
    # Payload fields: those a 0.1 record lacks are not compared (it did not name its key, for instance).
    for column, field in (
        ("params_hash", "params_hash"),
        ("reason", "reason"),
        ("risk_score", "risk_score"),
        ("constraints", "constraints"),
        ("policy_ids", "policy_ids"),
        ("parent_decision_id", "parent_decision_id"),
        ("api_key_id", "api_key_id"),
    ):
        if column == "reason" and review_record is not None:
            continue  # an expired review rewrites the reason; its record holds what happened
        if field in payload or column == "params_hash":
            stored = getattr(row, column)
            if column in ("constraints", "policy_ids"):
                stored = _as_json_value(stored)
            expected.append((column, stored, payload.get(field)))
    if review_record is not None:
        status = "expired" if review_record.event_type == "review_expired" else review.get("status")
        expected.append(("review_status", row.review_status, status))
        if review_record.event_type == "review":
            expected.append(("reviewer", row.reviewer, review.get("reviewer")))
    elif row.review_status not in (None, "pending"):
        expected.append(("review_status", row.review_status, "pending" if row.outcome == "ESCALATE" else None))
    different = [name for name, stored, audited in expected if stored != audited]
    if not different:
        return None
    return AuditProblem(
        code="decision_mismatch",
        message=f"decision {row.decision_id} differs from its audit record #{decision_record.sequence} in "
        f"{', '.join(different)} (the decisions table was edited)",
        sequence=int(decision_record.sequence),
        decision_id=row.decision_id,
    )


def _payload_of(record: Any) -> dict[str, Any]:
    try:
        payload = json.loads(record.payload_text)
    except (TypeError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _as_json_value(value: Any) -> Any:
    """A JSON column's value as it reads back from JSON (a driver may hand it back as text)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def default_audit_dir(url: str) -> Path | None:
    """Where the audit key files and checkpoints live unless configured (AEGIS_AUDIT_CHECKPOINT_DIR):
    beside a SQLite file (its name with the suffix `.audit`: `./.aegis/aegis.audit/` for
    `./.aegis/aegis.db`), under
    `~/.aegis/audit/<host>-<port>-<database>/` for a server database (the home directory, so the server
    and the CLI agree from any working directory); None for in-memory SQLite (nothing to anchor: the
    chain ends with the process)."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is None:
            return None
        return path.with_suffix(".audit") if path.suffix != ".audit" else path.with_name(path.name + "-audit")
    name = f"{parsed.host or 'localhost'}-{parsed.port or 'default'}-{parsed.database or 'default'}"
    return Path.home() / ".aegis" / "audit" / "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _sqlite_file(parsed: URL) -> Path | None:
    """The file of a SQLite URL, also in SQLite's URI form (`sqlite:///file:/path/aegis.db?mode=ro&uri=true`,
    the way to open a file read-only); None for an in-memory database."""
    database = parsed.database
    if not database or database == ":memory:" or "mode=memory" in str(parsed.query):
        return None
    if str(parsed.query.get("uri", "")).lower() in ("true", "1") and database.startswith("file:"):
        database = urllib.parse.unquote(urllib.parse.urlsplit(database).path)
        if not database:
            return None
    return Path(database).expanduser()


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite database file that does not exist, or None."""
    parsed = normalise_url(url)
    path = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None and not path.is_file():
        return str(path)
    return None


async def open_existing(url: str, audit_key: AuditKeySource | None = None) -> Store:
    """`Store.open(url, migrate=False)` for checking a database: a SQLite file that does not exist is not
    created (`SchemaNotReady`)."""
    database = await asyncio.to_thread(_missing_sqlite_file, url)
    if database is not None:
        raise SchemaNotReady(
            f"there is no SQLite database at {database}; check the --db URL (the server writes "
            "its database where its db_url points, by default ./.aegis/aegis.db)"
        )
    return await Store.open(url, migrate=False, audit_key=audit_key)


async def verify_database(url: str, audit_key: AuditKeySource | None = None) -> AuditVerification:
    """Verify the audit chain of the database at `url` (the chain alone; `aegis_server.audit_anchor`
    adds the checkpoint and the decisions). Raises `SchemaNotReady` when the database has no (current)
    AEGIS schema, or is a SQLite file that does not exist (it is not created)."""
    store = await open_existing(url, audit_key)
    try:
        return await store.verify_chain()
    finally:
        await store.close()
