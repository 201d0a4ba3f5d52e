"""Schema migrations, run programmatically from the package (no alembic.ini, no repository checkout).

`upgrade_database(url)` is what `aegis-server db upgrade` and `Store.open(url, migrate=True)` run. Two
processes starting together on one database are safe: on PostgreSQL the upgrade runs in one transaction
holding `pg_advisory_xact_lock` (DDL is transactional there), on SQLite in one BEGIN IMMEDIATE
transaction; the second process waits, then finds the schema at head and does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from importlib.resources import as_file, files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from aegis_server.store.engine import create_engine, redact_url, sqlite_writer
from aegis_server.store.errors import SchemaNotReady

__all__ = ["current_revision", "head_revision", "run_locked", "upgrade_database", "upgrade_engine"]

# pg_advisory_xact_lock key of schema upgrades (any fixed 64-bit number; distinct from the audit lock).
MIGRATION_LOCK_KEY = 0x4145_4749_535F_4D49  # "AEGIS_MI"


@contextlib.contextmanager
def _migrations_dir() -> Iterator[Path]:
    with as_file(files("aegis_server.store") / "migrations") as path:
        yield Path(path)


@contextlib.contextmanager
def alembic_config(connection: Connection | None = None) -> Iterator[Config]:
    """An Alembic `Config` pointing at the migrations shipped in this package."""
    with _migrations_dir() as path:
        config = Config()
        config.set_main_option("script_location", str(path).replace("%", "%%"))
        if connection is not None:
            config.attributes["connection"] = connection
        yield config


def head_revision() -> str:
    """The newest migration this version of the server ships."""
    with alembic_config() as config:
        head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:  # pragma: no cover - the package always ships its migrations
        raise SchemaNotReady("the aegis-server package ships no migrations; reinstall it")
    return head


async def run_locked(engine_or_url: AsyncEngine | str, work: Callable[[Connection], None]) -> None:
    """Run `work(connection)` in one transaction that holds the migration lock of the database."""
    engine = create_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        sqlite = engine.dialect.name == "sqlite"
        runner = sqlite_writer(engine) if sqlite else engine
        async with runner.begin() as conn:
            if not sqlite:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await conn.run_sync(work)
    finally:
        if isinstance(engine_or_url, str):
            await engine.dispose()


def _upgrade(connection: Connection) -> None:
    with alembic_config(connection) as config:
        command.upgrade(config, "head")


async def upgrade_engine(engine: AsyncEngine) -> str:
    """Bring the database of `engine` to the newest schema; returns the revision now applied."""
    await run_locked(engine, _upgrade)
    return head_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision recorded in the database (None for an empty database)."""

    def _read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_read)


async def check_schema(engine: AsyncEngine) -> None:
    """Raise `SchemaNotReady` unless the database is at the newest schema."""
    current = await current_revision(engine)
    head = head_revision()
    if current != head:
        state = "has no AEGIS schema" if current is None else f"is at schema revision {current}, not {head}"
        raise SchemaNotReady(
            f"the database {redact_url(engine.url)} {state}; run `aegis-server db upgrade --db URL` "
            "(or start the server with migrations enabled)"
        )


async def upgrade_database(url: str) -> str:
    """Apply every pending migration to the database at `url`; returns the revision now applied.
    Safe to run from several processes at once (see the module docstring)."""
    engine = create_engine(url)
    try:
        return await upgrade_engine(engine)
    finally:
        await engine.dispose()
