"""What the store commands share: `CommandError`, the `--db` option, the server settings for a database,
and running one async operation on its store with database failures reported in one line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aegis_server.settings import DEFAULT_DB_URL, Settings

T = TypeVar("T")


class CommandError(Exception):
    """A failure to report on stderr with exit code `code` (1 unless said otherwise)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def default_db() -> str:
    return os.environ.get("AEGIS_DB_URL") or DEFAULT_DB_URL


def run_database_call(coroutine_factory: Callable[[], Awaitable[T]], db_url: str) -> T:
    """Run an async store operation, turning database failures into a one-line CommandError."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from aegis_server.store import SchemaNotReady, redact_url

    async def runner() -> T:
        return await coroutine_factory()

    where = redact_url(db_url)
    try:
        return asyncio.run(runner())
    except SchemaNotReady as exc:
        raise CommandError(f"the database at {where} is not ready: {exc}") from None
    except ValueError as exc:
        if "URL" in str(exc) or "url" in str(exc):
            raise CommandError(f"bad --db {where}: {exc}", code=2) from None
        raise
    except BrokenPipeError:
        raise  # the command's output was closed (`| head`), not the database: the command handles it
    except (OSError, DBAPIError, SQLAlchemyError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
        raise CommandError(f"cannot use the database at {where}: {type(exc).__name__}: {detail}") from None


def cli_settings(db_url: str, **overrides: Any) -> Settings:
    """The server settings from AEGIS_* variables, for this database (the audit keys and checkpoint
    directory of the server that uses it)."""
    try:
        return Settings.from_env(db_url=db_url, **overrides)
    except ValueError as exc:
        raise CommandError(str(exc), code=2) from None


async def with_store(
    db_url: str, work: Callable[[Any], Awaitable[T]], *, migrate: bool = False, writes: bool = False
) -> T:
    """Run `work` on the store of `db_url`. `writes`: it appends audit records, so like the server it first
    checks the chain against the latest signed checkpoint (a cut or rewritten chain is refused, not written
    to) and afterwards checkpoints what it wrote."""
    from aegis_server.audit.anchor import AnchorError, AuditAnchor
    from aegis_server.audit.checkpoints import CheckpointError
    from aegis_server.audit.signing_keys import audit_key_source
    from aegis_server.store import AuditKeyError, Store

    settings = cli_settings(db_url)
    store = await Store.open(db_url, migrate=migrate, audit_key=audit_key_source(settings))
    try:
        anchor = AuditAnchor.from_settings(settings, store) if writes else None
        if anchor is not None:
            try:
                await anchor.check_startup()
            except AnchorError as exc:
                raise CommandError(f"refusing to write to the audit chain: {exc}") from None
            except (AuditKeyError, CheckpointError) as exc:
                raise CommandError(f"the audit keys are not usable: {exc}") from None
        result = await work(store)
        if anchor is not None:
            await anchor.close()
        return result
    finally:
        await store.close()


def run_on_store(db_url: str, work: Callable[[Any], Awaitable[T]], *, migrate: bool = False, writes: bool = False) -> T:
    """`work(store)` on the store of `db_url` (see `with_store`), database failures as a CommandError."""
    return run_database_call(lambda: with_store(db_url, work, migrate=migrate, writes=writes), db_url)


def add_command_group(commands: Any, name: str, help: str) -> Any:
    """Register `aegis-server NAME ACTION ...` and return the sub-parsers its actions are added to (the
    action chosen is `args.<NAME>_command`)."""
    group = commands.add_parser(name, help=help)
    return group.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)


def add_store_action(group: Any, name: str, help: str, func: Callable[[argparse.Namespace], int]) -> Any:
    """Register the action `name` of a command group (`add_command_group`), run by `func(args)`, with the
    `--db` option; returns its parser for the action's own arguments."""
    parser = group.add_parser(name, help=help)
    add_db_option(parser)
    parser.set_defaults(func=func)
    return parser


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=default_db(),
        metavar="URL",
        help="database URL (default: $AEGIS_DB_URL or %(default)s)",
    )


__all__ = [
    "CommandError",
    "add_command_group",
    "add_db_option",
    "add_store_action",
    "cli_settings",
    "default_db",
    "run_database_call",
    "run_on_store",
    "with_store",
]
