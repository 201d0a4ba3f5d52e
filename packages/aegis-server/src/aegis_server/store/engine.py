"""Database URLs and engines: SQLite (aiosqlite, WAL) or PostgreSQL (asyncpg), chosen by the URL."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from aegis_sdk._wire.canonical import CanonicalJSON, canonical_json

__all__ = [
    "POOL_SIZE",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "WAL_FILE_LIMIT_BYTES",
    "WAL_SIZE_LIMIT_BYTES",
    "checkpoint_wal",
    "create_engine",
    "normalise_url",
    "redact_url",
    "sqlite_batch_writer",
    "sqlite_reader",
]

SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
"""How long a SQLite writer waits for another process's write transaction before giving up."""

WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
"""About how large the server lets a SQLite WAL grow before it pauses writes to start it over."""

POOL_SIZE = 10
"""Connections an async engine keeps open (PostgreSQL; up to 20 more are opened for a burst, and closed
when they come back to a full pool)."""

WAL_FILE_LIMIT_BYTES = 4 * WAL_SIZE_LIMIT_BYTES
"""When the WAL starts over, a file larger than this is cut back to it. Cutting the file stalls the
connection that starts the WAL over, the event loop's: ~10 ms each second at 1,000 decisions/s when the
file was cut back to 64 MiB. Above this size only a burst leaves the file; it stays at most this large."""

# Execution option read by the SQLite "begin" hook: writers start with BEGIN IMMEDIATE, which takes the
# database's write lock at once (waiting up to the busy timeout), so two processes never interleave
# a read-then-write of the audit head.
_SQLITE_BEGIN_OPTION = "aegis_sqlite_begin"


def normalise_url(url: str | URL) -> URL:
    """Parse a database URL and pick the async driver: `sqlite:///x.db` -> `sqlite+aiosqlite:///x.db`,
    `postgresql://` or `postgres://` -> `postgresql+asyncpg://`. Anything else is a `ValueError`."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError as exc:
        raise ValueError(
            f"cannot parse the database URL ({exc}); use sqlite+aiosqlite:///path/to/aegis.db "
            "or postgresql+asyncpg://user@host:5432/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(
        f"unsupported database {backend!r}; AEGIS stores its data in SQLite (sqlite+aiosqlite:///path) "
        "or PostgreSQL (postgresql+asyncpg://user@host/db)"
    )


def redact_url(url: str | URL) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def _is_memory_sqlite(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or (url.query.get("mode") == "memory")


def _json_dumps(value: Any) -> str:
    if isinstance(value, CanonicalJSON):  # encoded already (audit payloads): the same JSON value
        return str(value)
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _canonical_json_text(value: Any) -> str:
    # The batch writers store decisions and audit records, whose JSON values are canonical already
    # (normalised payloads and constraints): their canonical text is the same JSON, and orjson writes
    # it several times faster than the standard encoder (non-finite numbers still raise).
    if isinstance(value, CanonicalJSON):
        return str(value)
    return canonical_json(value).decode("utf-8")


def create_engine(url: str | URL) -> AsyncEngine:
    """An async engine for `url` (normalised first). For SQLite: the parent folder of the file is
    created, and every connection gets WAL, a busy timeout, foreign keys and explicit transactions."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(parsed)
    return create_async_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=20,
        json_serializer=_json_dumps,
    )


def postgres_batch_engine(engine: AsyncEngine) -> AsyncEngine | None:
    """For a PostgreSQL `engine`: a second engine on the same database for the group commit's batches (None
    for SQLite). Its connections are not pinged at checkout: SQLAlchemy's asyncpg ping is three round trips
    (BEGIN, `;`, ROLLBACK) before the batch's own, a third of a batch's. A connection that died since its
    last batch fails that batch's first statement, which writes nothing; the group commit then writes each
    record alone through the pinged engine (as for any failed batch), and the failure invalidates this
    pool, so the next batch connects afresh. The group commit writes one batch at a time: one connection."""
    if engine.dialect.name != "postgresql":
        return None
    return create_async_engine(
        engine.url,
        pool_pre_ping=False,
        pool_size=1,
        max_overflow=1,
        json_serializer=_json_dumps,
    )


def _sqlite_connect_args(busy_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS) -> dict[str, Any]:
    return {"timeout": busy_timeout}


def _use_wal(cursor: Any) -> None:
    """Switch the database file to WAL once. Switching needs a moment of exclusive access, and SQLite may
    answer "database is locked" at once, without waiting for the busy timeout, while another process opens
    the same new file: retry within the busy timeout. Once the file is in WAL mode this is one read."""
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # sqlite3's OperationalError, or the aiosqlite adapter's copy of it
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _install_sqlite_hooks(
    engine: Engine, *, memory: bool, busy_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS, auto_checkpoint: bool = True
) -> None:
    """Every connection of `engine` gets WAL, a busy timeout, foreign keys and explicit transactions.
    Without `auto_checkpoint`, its commits never copy the WAL back into the database (someone else must)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below issue BEGIN itself (pysqlite's implicit transactions
        # would begin lazily and never IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            if not memory:
                _use_wal(cursor)
                cursor.execute(f"PRAGMA journal_size_limit={WAL_FILE_LIMIT_BYTES}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            if not auto_checkpoint:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(_SQLITE_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _create_sqlite_engine(url: URL) -> AsyncEngine:
    memory = _is_memory_sqlite(url)
    if not memory and url.database is not None:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"connect_args": _sqlite_connect_args(), "json_serializer": _json_dumps}
    if memory:
        # One shared connection, or every pooled connection would see its own empty database.
        kwargs["poolclass"] = StaticPool
    engine = create_async_engine(url, **kwargs)
    _install_sqlite_hooks(engine.sync_engine, memory=memory)
    return engine


def sqlite_batch_writer(url: str | URL, *, on_event_loop: bool = False) -> Engine | None:
    """A synchronous engine on the same SQLite file for batches of writes, whose transactions start with
    BEGIN IMMEDIATE and run all their statements in the caller's thread (no hand-off per statement as
    through aiosqlite). None for an in-memory database (a second engine would see a different, empty
    database) and for PostgreSQL.

    `on_event_loop`: for writes made on the event loop's own thread, which must never wait: the busy
    timeout is 0 (another process's write transaction makes BEGIN fail at once with "database is locked",
    and the caller writes from a thread instead) and commits never checkpoint the WAL (the fsyncs of a
    checkpoint are left to `checkpoint_wal` in a thread)."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() != "sqlite" or _is_memory_sqlite(parsed):
        return None
    busy_timeout = 0.0 if on_event_loop else SQLITE_BUSY_TIMEOUT_SECONDS
    engine = sa_create_engine(
        parsed.set(drivername="sqlite+pysqlite"),
        connect_args={**_sqlite_connect_args(busy_timeout), "check_same_thread": False},
        json_serializer=_canonical_json_text,
        poolclass=SingletonThreadPool,
    )
    _install_sqlite_hooks(engine, memory=False, busy_timeout=busy_timeout, auto_checkpoint=not on_event_loop)
    return engine.execution_options(**{_SQLITE_BEGIN_OPTION: "IMMEDIATE"})


def checkpoint_wal(engine: Engine) -> int:
    """Copy what the WAL holds back into the database file, as far as readers allow, without waiting for
    any lock (a PASSIVE checkpoint). Returns the number of frames (pages) the WAL holds; once every one
    of them is copied, the next write starts the WAL file over from its beginning."""
    raw = engine.raw_connection()  # outside any transaction: a checkpoint cannot run inside one
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        row = cursor.fetchone()  # (busy, frames in the WAL, frames copied)
        cursor.close()
    finally:
        raw.close()
    return int(row[1]) if row else 0


def sqlite_reader(engine: Engine) -> Engine:
    """A view of a synchronous SQLite writer (`sqlite_batch_writer`) whose transactions start with a plain
    BEGIN: they only read, so they neither take nor wait for the write lock (WAL readers never do)."""
    return engine.execution_options(**{_SQLITE_BEGIN_OPTION: "DEFERRED"})


def sqlite_writer(engine: AsyncEngine) -> AsyncEngine:
    """A view of a SQLite engine whose transactions start with BEGIN IMMEDIATE (the write lock)."""
    return engine.execution_options(**{_SQLITE_BEGIN_OPTION: "IMMEDIATE"})
