"""Can the store write? The readiness probe, and the names of storage failures for the log.

`/ready` used to ask only "does `SELECT 1` answer?": a read-only database or a full disk made every
proposal fail (503) while readiness said 200, so a load balancer kept sending traffic to the replica. Now
`StorageHealth.check()` runs a *write probe* at most once per `PROBE_CACHE_SECONDS` (concurrent callers
share one run; proposals never run it), in three steps:

1. *Room to grow*: it takes the write lock (SQLite `BEGIN IMMEDIATE`) and inserts into `server_settings`
   a row large enough to need new pages, then rolls back. A read-only database (SQLite `attempt to write
   a readonly database`, PostgreSQL `default_transaction_read_only`, a hot standby) or a database at its
   size limit (SQLite `max_page_count`) fails it; nothing is kept.
2. *A real commit*: it upserts one heartbeat row (`aegis.readiness_heartbeat`, a fixed-width timestamp)
   and commits, so the write really passes through the WAL and reaches the files: a file made immutable
   (`chattr +i`) or a WAL that cannot be written fails it. The row has a constant size: the database does
   not grow, and the audit chain is not touched.
3. *Free space* (a SQLite file): less than `MIN_FREE_BYTES` free on the database's filesystem is a full
   disk. A commit reuses WAL space already allocated, so a disk filled up by something else can let a
   tiny heartbeat through while every batch of decisions, which needs new pages, fails.

Every storage failure a real request meets is also *noted* (`note_failure`), and readiness stays 503 for
`FAILURE_MEMORY_SECONDS` after the last one (a failure the probe's small writes may not reproduce).
`describe_database_error` names the cause ("database is read-only", "disk full", ...) for the log and
the 503 answers, from the exception's class, SQLSTATE or SQLite error code, never from its text alone
and never logging the statement or its parameters.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from aegis_server.store.errors import SchemaNotReady
from aegis_server.store.schema import server_settings

if TYPE_CHECKING:
    from aegis_server.store.store import Store

__all__ = [
    "FAILURE_MEMORY_SECONDS",
    "MIN_FREE_BYTES",
    "PROBE_CACHE_SECONDS",
    "PROBE_TIMEOUT_SECONDS",
    "StorageHealth",
    "StorageProblem",
    "describe_database_error",
]

PROBE_CACHE_SECONDS = 1.0
"""A write probe's answer is reused this long: `/ready` polled many times a second costs one probe."""

PROBE_TIMEOUT_SECONDS = 5.0
"""A probe that has not finished by then (a database that does not answer, a write lock held by another
process past SQLite's busy timeout) answers "not ready" rather than keeping `/ready` waiting."""

FAILURE_MEMORY_SECONDS = 10.0
"""After a request meets a storage failure (read-only, disk full), readiness answers 503 this long."""

MIN_FREE_BYTES = 1024 * 1024
"""A SQLite database whose filesystem has less free space than this is not ready (disk full)."""

_PROBE_NAME = "aegis.readiness_probe"
_HEARTBEAT_NAME = "aegis.readiness_heartbeat"
_HEARTBEAT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # always 27 characters: the row never changes size
_PROBE_VALUE = "x" * 6000  # more than a 4 KiB page: the insert must allocate pages (overflow pages)


@dataclass(frozen=True)
class StorageProblem:
    """Why the store cannot serve: a stable `cause` code and a sentence for operators."""

    cause: str
    message: str
    detail: str = ""  # the driver's error class and code (never its text: it may quote parameters)

    def for_log(self) -> str:
        return f"{self.message} ({self.detail})" if self.detail else self.message


# (cause, message): what each failure means, checked in this order.
_READ_ONLY = ("read_only", "the database is read-only")
_DISK_FULL = ("disk_full", "disk full: the database cannot grow")
_LOCKED = ("locked", "the database is locked by another writer")
_IO_ERROR = ("io_error", "disk I/O error")
_UNREACHABLE = ("unreachable", "the database cannot be reached")
_POOL = ("pool_exhausted", "no database connection was free in time (pool exhausted)")
_SCHEMA = ("schema_not_ready", "the database schema is not ready")

_SQLSTATE = {
    "25006": _READ_ONLY,  # read_only_sql_transaction
    "53100": _DISK_FULL,  # disk_full
    "53200": ("out_of_memory", "the database server is out of memory"),
    "53300": ("too_many_connections", "the database server refuses more connections"),
    "57P01": _UNREACHABLE,  # admin_shutdown
    "57P02": _UNREACHABLE,  # crash_shutdown
    "57P03": _UNREACHABLE,  # cannot_connect_now
    "08000": _UNREACHABLE,
    "08001": _UNREACHABLE,
    "08003": _UNREACHABLE,
    "08006": _UNREACHABLE,
    "55P03": _LOCKED,  # lock_not_available
    "40P01": ("deadlock", "a database deadlock aborted the transaction"),
    "58030": _IO_ERROR,  # io_error
}
_SQLITE_CODES = {
    "SQLITE_READONLY": _READ_ONLY,
    "SQLITE_FULL": _DISK_FULL,
    "SQLITE_BUSY": _LOCKED,
    "SQLITE_LOCKED": _LOCKED,
    "SQLITE_IOERR": _IO_ERROR,
    "SQLITE_CANTOPEN": ("cannot_open", "the database file cannot be opened"),
    "SQLITE_CORRUPT": ("corrupt", "the database file is corrupt"),
    "SQLITE_NOTADB": ("corrupt", "the database file is not a database"),
}
# Messages of drivers that carry no code (SQLite through aiosqlite keeps sqlite3's attributes; this is the
# fallback). Matched on the first line of the driver's message, lower-cased.
_TEXT = (
    ("readonly database", _READ_ONLY),
    ("read-only transaction", _READ_ONLY),
    ("read only", _READ_ONLY),
    ("database or disk is full", _DISK_FULL),
    ("no space left on device", _DISK_FULL),
    ("could not extend file", _DISK_FULL),
    ("database is locked", _LOCKED),
    ("disk i/o error", _IO_ERROR),
    ("connection refused", _UNREACHABLE),
    ("connection was closed", _UNREACHABLE),
    ("connection is closed", _UNREACHABLE),
    ("terminating connection", _UNREACHABLE),
)


def describe_database_error(exc: BaseException) -> StorageProblem:
    """Name the cause of a database failure (for the log and the 503 answer)."""
    if isinstance(exc, SchemaNotReady):
        return StorageProblem(*_SCHEMA, detail="SchemaNotReady")
    if isinstance(exc, sa.exc.TimeoutError):
        return StorageProblem(*_POOL, detail=type(exc).__name__)
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 6:  # the SQLAlchemy error, the adapter's, the driver's
        chain.append(current)
        current = getattr(current, "orig", None) or current.__cause__
    names = " / ".join(dict.fromkeys(type(item).__name__ for item in chain))
    for item in chain:
        sqlstate = getattr(item, "sqlstate", None) or getattr(item, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate in _SQLSTATE:
            return StorageProblem(*_SQLSTATE[sqlstate], detail=f"{names}, SQLSTATE {sqlstate}")
        errorname = getattr(item, "sqlite_errorname", None)
        if isinstance(errorname, str):
            base = errorname.split("_", 2)
            key = "_".join(base[:2]) if len(base) > 1 else errorname
            if key in _SQLITE_CODES:
                return StorageProblem(*_SQLITE_CODES[key], detail=f"{names}, {errorname}")
    for item in chain:
        if isinstance(item, ConnectionError | TimeoutError):
            return StorageProblem(*_UNREACHABLE, detail=names)
        text = (str(item).splitlines() or [""])[0].lower()
        for needle, (cause, message) in _TEXT:
            if needle in text:
                return StorageProblem(cause, message, detail=names)
    if any(isinstance(item, OSError) for item in chain):
        return StorageProblem(*_UNREACHABLE, detail=names)
    return StorageProblem("database_error", "the database failed", detail=names)


class StorageHealth:
    """The write probe with its cache, and the memory of storage failures met by requests."""

    def __init__(self, store: Store, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._monotonic = monotonic
        self._cached: tuple[float, StorageProblem | None] | None = None
        self._running: asyncio.Future[StorageProblem | None] | None = None
        self._failure: tuple[float, StorageProblem] | None = None
        self._directory = sqlite_directory(store)  # where free space is checked (a SQLite file)

    def note_failure(self, problem: StorageProblem) -> None:
        """A request met `problem`: readiness reports it for `FAILURE_MEMORY_SECONDS` (read-only, disk
        full and I/O errors only; a lost connection or a lock wait is the probe's to judge)."""
        if problem.cause in ("read_only", "disk_full", "io_error"):
            self._failure = (self._monotonic(), problem)
            self._cached = None

    async def check(self) -> StorageProblem | None:
        """None when the store can write, else what stops it (cached `PROBE_CACHE_SECONDS`)."""
        now = self._monotonic()
        failure = self._failure
        if failure is not None and now - failure[0] < FAILURE_MEMORY_SECONDS:
            problem = await self._probe_cached(now)
            return problem or failure[1]
        return await self._probe_cached(now)

    async def _probe_cached(self, now: float) -> StorageProblem | None:
        cached = self._cached
        if cached is not None and now - cached[0] < PROBE_CACHE_SECONDS:
            return cached[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._probe())
        running = self._running
        try:
            problem = await asyncio.shield(running)
        finally:
            if running.done() and self._running is running:
                self._running = None
        self._cached = (self._monotonic(), problem)
        return problem

    async def _probe(self) -> StorageProblem | None:
        try:
            return await asyncio.wait_for(self._run_probe(), PROBE_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            return StorageProblem(
                "timeout", f"the database did not complete a write within {PROBE_TIMEOUT_SECONDS:g} s"
            )

    async def _run_probe(self) -> StorageProblem | None:
        try:
            if not await self._store.ping():  # SELECT 1: reachable at all?
                return StorageProblem(*_UNREACHABLE, detail="SELECT 1 failed")
            await probe_write(self._store)
        except Exception as exc:  # every failure is the answer; nothing is re-raised
            return describe_database_error(exc)
        return free_space_problem(self._directory)


async def probe_write(store: Store) -> None:
    """Take the write lock and write pages in a transaction that is rolled back, then commit the
    heartbeat row; raise what the database raises when it cannot."""
    now = datetime.now(timezone.utc)
    insert: Any = store.database.upsert(server_settings).values(
        name=_PROBE_NAME, value=_PROBE_VALUE, created_at=now, updated_at=now
    )
    try:
        async with store.database.write() as conn:
            await conn.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
            raise _RolledBack  # leaves the transaction by its rollback: nothing is kept
    except _RolledBack:
        pass
    heartbeat: Any = store.database.upsert(server_settings).values(
        name=_HEARTBEAT_NAME, value=now.strftime(_HEARTBEAT_FORMAT), created_at=now, updated_at=now
    )
    heartbeat = heartbeat.on_conflict_do_update(
        index_elements=["name"], set_={"value": heartbeat.excluded.value, "updated_at": heartbeat.excluded.updated_at}
    )
    async with store.database.write() as conn:
        await conn.execute(heartbeat)  # committed: through the WAL (or PostgreSQL's) to the files


def sqlite_directory(store: Store) -> str | None:
    """The folder of a SQLite database file (None for PostgreSQL or an in-memory database)."""
    engine = getattr(store, "_engine", None)
    if engine is None:  # a stand-in store (tests)
        return None
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database.startswith("file:"):  # a URI filename (`?mode=ro&uri=true`)
        database = database[len("file:") :].split("?", 1)[0]
    if not database or database == ":memory:" or "mode=memory" in str(url):
        return None
    return os.path.dirname(os.path.abspath(database))


def free_space_problem(directory: str | None) -> StorageProblem | None:
    """Disk full when a SQLite file's filesystem (at `directory`) has less than `MIN_FREE_BYTES` free."""
    if directory is None:
        return None
    try:
        stats = os.statvfs(directory)
    except (OSError, AttributeError):  # no such folder, or no statvfs (Windows): the writes are the test
        return None
    free = stats.f_bavail * stats.f_frsize
    if free < MIN_FREE_BYTES:
        return StorageProblem(*_DISK_FULL, detail=f"{free} bytes free on the database's filesystem")
    return None


class _RolledBack(Exception):
    """Raised inside the probe's transaction so that it rolls back."""
