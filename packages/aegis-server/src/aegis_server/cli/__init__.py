"""`aegis-server`: run the platform and operate it (database, API keys, reviews, audit, policies).

Exit codes: 0 success, 1 the operation failed (unreachable database, broken audit chain, …), 2 bad
arguments. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from aegis_server import __version__
from aegis_server.cli.log_output import BufferedStreamHandler, CachedTimeFormatter
from aegis_server.cli.policy_commands import add_policy_commands
from aegis_server.errors import ApiError, RequestIdLogFilter
from aegis_server.settings import DEFAULT_DB_URL, Settings

T = TypeVar("T")

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class CommandError(Exception):
    """A failure to report on stderr with exit code `code` (1 unless said otherwise)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _default_db() -> str:
    return os.environ.get("AEGIS_DB_URL") or DEFAULT_DB_URL


def _run(coroutine_factory: Callable[[], Awaitable[T]], db_url: str) -> T:
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
    except (OSError, DBAPIError, SQLAlchemyError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
        raise CommandError(f"cannot use the database at {where}: {type(exc).__name__}: {detail}") from None


async def _with_store(db_url: str, work: Callable[[Any], Awaitable[T]], *, migrate: bool = False) -> T:
    from aegis_server.store import Store

    store = await Store.open(db_url, migrate=migrate)
    try:
        return await work(store)
    finally:
        await store.close()


# ---------------------------------------------------------------------------------------------
# serve
# ---------------------------------------------------------------------------------------------


def configure_logging(level: str) -> None:
    """Log lines carry the request id (`-` outside a request); never keys, tokens or parameter values."""
    # What no line of ours shows is not collected for every record either (the logging HOWTO's
    # "Optimization"): the caller's file and line, thread, process and task names. One line per request.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedStreamHandler()  # lines written together, within 0.2 s (see log_output.py)
    handler.setFormatter(CachedTimeFormatter(_LOG_FORMAT))
    handler.addFilter(RequestIdLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Drivers log SQL parameters (audit payloads) at DEBUG: keep them quiet even in debug mode.
    for noisy in ("aiosqlite", "asyncpg", "sqlalchemy.engine", "sqlalchemy.pool"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _print_dev_key(key: str, host: str, port: int, out: TextIO) -> None:
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - comparing, not binding
    endpoint = f"http://{shown_host}:{port}"
    body = (
        '{"actor":{"id":"agent-1"},"action":{"capability":"database.query",'
        '"parameters":{"query":"SELECT 1","database":"development"}}}'
    )
    out.write(
        "\n"
        "  No API keys existed, so a development admin key was created. It is shown ONCE:\n\n"
        f"      {key}\n\n"
        "  Use it:\n"
        f"      export AEGIS_ENDPOINT={endpoint} AEGIS_API_KEY={key}\n"
        f"      curl -s -H \"Authorization: Bearer $AEGIS_API_KEY\" -H 'Content-Type: application/json' \\\n"
        f"           -d '{body}' \\\n"
        f"           $AEGIS_ENDPOINT/api/v1/governance/propose\n"
        "  Create scoped keys for agents and reviewers with `aegis-server keys create`; revoke this one when\n"
        "  you no longer need it (`aegis-server keys list`, `aegis-server keys revoke KEY_ID`).\n\n"
    )
    out.flush()


def _cmd_serve(args: argparse.Namespace) -> int:
    from aegis_server.app import create_app
    from aegis_server.engine import PolicySetError
    from aegis_server.http_server import build_server, raise_open_files_limit
    from aegis_server.policy_files import load_policy_paths

    overrides: dict[str, Any] = {}
    if args.db:
        overrides["db_url"] = args.db
    if args.policy:
        overrides["policy_paths"] = tuple(Path(p) for p in args.policy)
    if args.log_level:
        overrides["log_level"] = args.log_level
    if args.keep_alive_timeout is not None:
        overrides["keep_alive_timeout_seconds"] = args.keep_alive_timeout
    if args.header_timeout is not None:
        overrides["header_timeout_seconds"] = args.header_timeout
    try:
        settings = Settings.from_env(**overrides)
    except ValueError as exc:
        raise CommandError(str(exc), code=2) from None
    configure_logging(settings.log_level)

    paths = settings.resolved_policy_paths()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CommandError(f"policy path not found: {missing[0]} (pass --policy PATH or set AEGIS_POLICY_PATHS)", 2)
    try:
        load_policy_paths(paths)
    except PolicySetError as exc:
        raise CommandError(f"the policy files do not load: {exc}") from None

    async def first_start(store: Any) -> str | None:
        if await store.count_api_keys() > 0:
            return None
        key, _ = await store.create_api_key("dev-admin", ["admin"])
        return str(key)

    dev_key = _run(lambda: _with_store(settings.db_url, first_start, migrate=settings.db_migrate), settings.db_url)
    if dev_key is not None:
        _print_dev_key(dev_key, args.host, args.port, sys.stdout)
    policy_note = ", ".join(str(p) for p in paths) if paths else "none (register policies through the API)"
    logging.getLogger("aegis_server").info("policy files: %s", policy_note)
    log = logging.getLogger("aegis_server")
    raised = raise_open_files_limit()
    if raised is not None:
        log.info("open files limit raised from %d to %d (one per connection)", *raised)
    server = build_server(
        create_app(settings, freeze_gc_after_startup=True),
        host=args.host,
        port=args.port,
        proxy_headers=args.proxy_headers,
        keep_alive_timeout=settings.keep_alive_timeout_seconds,
        header_timeout=settings.header_timeout_seconds,
        shutdown_timeout=settings.shutdown_timeout_seconds,
    )
    try:
        server.run()
    except KeyboardInterrupt:  # a second Ctrl-C: uvicorn's forced exit
        log.warning("aegis-server stopped without a graceful shutdown (second interrupt)")
        return 130
    if not server.started:
        # The lifespan failed (uvicorn logged why) or the port could not be bound.
        raise CommandError("the server did not start; the log above says why")
    log.info("aegis-server stopped (%s): graceful shutdown complete", server.stopped_by or "exit requested")
    for handler in logging.getLogger().handlers:
        handler.flush()
    return 0


# ---------------------------------------------------------------------------------------------
# db, keys
# ---------------------------------------------------------------------------------------------


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from aegis_server.store import upgrade_database

    revision = _run(lambda: upgrade_database(args.db), args.db)
    print(f"database schema at revision {revision}")
    return 0


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from aegis_server.security import parse_scopes

    try:
        scopes = parse_scopes(args.scopes)
    except ValueError as exc:
        raise CommandError(f"--scopes: {exc}", code=2) from None
    name = args.name.strip()
    if not name or len(name) > 200:
        raise CommandError("--name must be 1 to 200 characters", code=2)

    async def work(store: Any) -> str:
        key, _ = await store.create_api_key(name, scopes)
        return str(key)

    key = _run(lambda: _with_store(args.db, work, migrate=args.migrate), args.db)
    print(key)  # ONLY the key on stdout, so `KEY=$(aegis-server keys create ...)` works
    return 0


def _cmd_keys_list(args: argparse.Namespace) -> int:
    async def work(store: Any) -> list[Any]:
        return list(await store.list_api_keys())

    keys = _run(lambda: _with_store(args.db, work), args.db)
    if not keys:
        print("no API keys (create one with `aegis-server keys create --name NAME --scopes admin`)")
        return 0
    print(f"{'KEY_ID':<34} {'NAME':<24} {'STATUS':<8} {'CREATED':<20} SCOPES")
    for key in keys:
        status = "revoked" if key.revoked_at is not None else "active"
        created = key.created_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{key.key_id:<34} {key.name:<24} {status:<8} {created:<20} {','.join(key.scopes)}")
    return 0


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    async def work(store: Any) -> bool:
        return bool(await store.revoke_api_key(args.key_id))

    if not _run(lambda: _with_store(args.db, work), args.db):
        raise CommandError(f"no active API key with id {args.key_id!r} (see `aegis-server keys list`)")
    print(f"revoked {args.key_id}")
    return 0


# ---------------------------------------------------------------------------------------------
# review
# ---------------------------------------------------------------------------------------------


def _cmd_review_list(args: argparse.Namespace) -> int:
    from aegis_server.store import DecisionFilters

    async def work(store: Any) -> list[Any]:
        items, _ = await store.list_decisions(DecisionFilters(review_status="pending"), args.limit, None)
        return list(items)

    items = _run(lambda: _with_store(args.db, work), args.db)
    if not items:
        print("no decisions await review")
        return 0
    print(f"{'DECISION_ID':<38} {'DEADLINE':<28} REASON")
    for decision in items:
        reason = decision.reason if len(decision.reason) <= 80 else decision.reason[:77] + "..."
        print(f"{decision.decision_id:<38} {decision.expires_at or '-':<28} {reason}")
    return 0


def _cmd_review_resolve(args: argparse.Namespace) -> int:
    from aegis_sdk.models import ReviewRequest
    from aegis_server.metrics import Metrics
    from aegis_server.service import GovernanceService

    approve = args.review_command == "approve"
    reviewer = args.reviewer or f"cli:{getpass.getuser()}"
    settings = Settings.from_env(db_url=args.db, policy_paths=())

    async def work(store: Any) -> Any:
        service = GovernanceService(settings, store, Metrics())
        await service.init_tokens()
        return await service.review(args.decision_id, ReviewRequest(approve=approve, note=args.note), reviewer=reviewer)

    try:
        decision = _run(lambda: _with_store(args.db, work), args.db)
    except ApiError as exc:
        raise CommandError(exc.message) from None
    print(f"{decision.decision_id}: {'approved' if approve else 'denied'} by {reviewer}")
    return 0


# ---------------------------------------------------------------------------------------------
# audit
# ---------------------------------------------------------------------------------------------


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from aegis_server.store import verify_database

    result = _run(lambda: verify_database(args.db), args.db)
    if result.valid:
        print(f"audit chain OK: {result.records_checked} records, head {result.head_hash or '-'}")
        return 0
    broken = result.first_broken
    if broken is None:  # pragma: no cover - a failed verification always names the record
        print("audit chain BROKEN", file=sys.stderr)
        return 1
    ref = f" ({broken.audit_ref})" if broken.audit_ref else ""
    print(f"audit chain BROKEN at record #{broken.sequence}{ref}: {broken.reason}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=_default_db(),
        metavar="URL",
        help="database URL (default: $AEGIS_DB_URL or %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aegis-server",
        description="The AEGIS governance platform: run it, and manage its database, keys, reviews and audit.",
    )
    parser.add_argument("--version", action="version", version=f"aegis-server {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the API server (uvicorn)")
    serve.add_argument("--db", metavar="URL", help="database URL (default: $AEGIS_DB_URL or ./.aegis/aegis.db)")
    serve.add_argument(
        "--policy",
        action="append",
        metavar="PATH",
        help="policy file or folder; repeat for several (default: $AEGIS_POLICY_PATHS or ./examples/policies)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default: info")
    serve.add_argument("--proxy-headers", action="store_true", help="trust X-Forwarded-* from a reverse proxy in front")
    serve.add_argument(
        "--keep-alive-timeout",
        type=float,
        metavar="SECONDS",
        help="close idle keep-alive connections after this (default: $AEGIS_KEEP_ALIVE_TIMEOUT_SECONDS or 5)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        metavar="SECONDS",
        help="close a connection whose request head is not complete in time "
        "(default: $AEGIS_HEADER_TIMEOUT_SECONDS or 10)",
    )
    serve.set_defaults(func=_cmd_serve)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply pending migrations")
    _add_db(upgrade)
    upgrade.set_defaults(func=_cmd_db_upgrade)

    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = key_commands.add_parser("create", help="create a key and print it (only the key) on stdout")
    _add_db(create)
    create.add_argument("--name", required=True, help="who uses the key (reviews are recorded under it)")
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: governance:propose, governance:read, governance:review, audit:read, "
        "policies:manage, admin",
    )
    create.add_argument(
        "--no-migrate", dest="migrate", action="store_false", help="fail instead of creating/upgrading the schema"
    )
    create.set_defaults(func=_cmd_keys_create)
    listing = key_commands.add_parser("list", help="list keys (never the keys themselves)")
    _add_db(listing)
    listing.set_defaults(func=_cmd_keys_list)
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    _add_db(revoke)
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(func=_cmd_keys_revoke)

    review = commands.add_parser("review", help="escalations awaiting a reviewer")
    review_commands = review.add_subparsers(dest="review_command", metavar="ACTION", required=True)
    pending = review_commands.add_parser("list", help="pending reviews")
    _add_db(pending)
    pending.add_argument("--limit", type=int, default=50, choices=range(1, 201), metavar="1..200")
    pending.set_defaults(func=_cmd_review_list)
    for action, text in (("approve", "approve (issues the confirmation token)"), ("deny", "deny (final DENY)")):
        resolve = review_commands.add_parser(action, help=text)
        _add_db(resolve)
        resolve.add_argument("decision_id", metavar="DECISION_ID")
        resolve.add_argument("--note", help="why (kept in the audit)")
        resolve.add_argument("--reviewer", help="reviewer name to record (default: cli:<your user name>)")
        resolve.set_defaults(func=_cmd_review_resolve)

    audit = commands.add_parser("audit", help="the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_commands.add_parser("verify", help="walk the hash chain; exit 1 naming the first broken record")
    _add_db(verify)
    verify.set_defaults(func=_cmd_audit_verify)

    add_policy_commands(commands)
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


__all__ = ["CommandError", "build_parser", "configure_logging", "main"]
