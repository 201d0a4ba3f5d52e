"""`aegis-server db upgrade`: apply pending schema migrations."""

from __future__ import annotations

import argparse
from typing import Any

from aegis_server.cli.command_support import (
    add_command_group,
    add_store_action,
    run_database_call,
)


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from aegis_server.store import upgrade_database

    revision = run_database_call(lambda: upgrade_database(args.db), args.db)
    print(f"database schema at revision {revision}")
    return 0


def add_database_commands(commands: Any) -> None:
    """Register `db upgrade` on the main parser's sub-parsers."""
    db_commands = add_command_group(commands, "db", "database schema")
    add_store_action(db_commands, "upgrade", "apply pending migrations", _cmd_db_upgrade)


__all__ = ["add_database_commands"]
