"""`aegis-server`: run the platform and operate it (database, API keys, reviews, audit, policies).

Exit codes: 0 success, 1 the operation failed (unreachable database, broken audit chain, …), 2 bad
arguments. Errors are one line on stderr, never a traceback.

The parser and the entry point (`main`, the `aegis-server` console script); each command lives in the
module named for it (`serve`, `database`, `keys`, `review`, `audit`, `policy_commands`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from aegis_server import __version__
from aegis_server.cli.audit import add_audit_commands
from aegis_server.cli.command_support import CommandError
from aegis_server.cli.database import add_database_commands
from aegis_server.cli.keys import add_keys_commands
from aegis_server.cli.policy_commands import add_policy_commands
from aegis_server.cli.review import add_review_commands
from aegis_server.cli.serve import add_serve_command
from aegis_server.cli.webhooks import add_webhooks_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aegis-server",
        description="The AEGIS governance platform: run it, and manage its database, keys, reviews and audit.",
    )
    parser.add_argument("--version", action="version", version=f"aegis-server {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add_serve_command(commands)
    add_database_commands(commands)
    add_keys_commands(commands)
    add_review_commands(commands)
    add_audit_commands(commands)
    add_policy_commands(commands)
    add_webhooks_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `aegis-server` entry point. Returns the exit code (0 ok, 1 failed, 2 bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2), already printed
        return int(exc.code) if isinstance(exc.code, int) else 2
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args))
    except CommandError as exc:
        print(f"aegis-server: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "main"]
