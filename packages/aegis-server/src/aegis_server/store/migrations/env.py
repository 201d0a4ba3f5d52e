"""Alembic environment of the AEGIS store.

The server runs migrations through `aegis_server.store.migrate.upgrade_database`, which hands Alembic an
open connection in `config.attributes["connection"]` (already inside a transaction that holds the
migration lock). Run by the `alembic` command line instead, it connects to `sqlalchemy.url` itself.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from aegis_server.store.schema import metadata

# Run by Alembic (`alembic` or `store.migrate`), never imported: nothing here is for other modules.
__all__: list[str] = []

config = context.config


def _run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    from aegis_server.store.migrate import run_locked

    await run_locked(url, _run_migrations)


_connection = config.attributes.get("connection")
if _connection is not None:
    _run_migrations(_connection)
elif context.is_offline_mode():
    _run_offline()
else:
    asyncio.run(_run_online(config.get_main_option("sqlalchemy.url") or ""))
