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
from aegis_server.errors import ApiError
from aegis_server.request_id import RequestIdLogFilter
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


def _cli_settings(db_url: str, **overrides: Any) -> Settings:
    """The server settings from AEGIS_* variables, for this database (the audit keys and checkpoint
    directory of the server that uses it)."""
    try:
        return Settings.from_env(db_url=db_url, **overrides)
    except ValueError as exc:
        raise CommandError(str(exc), code=2) from None


async def _with_store(
    db_url: str, work: Callable[[Any], Awaitable[T]], *, migrate: bool = False, writes: bool = False
) -> T:
    """Run `work` on the store of `db_url`. `writes`: it appends audit records, so like the server it first
    checks the chain against the latest signed checkpoint (a cut or rewritten chain is refused, not written
    to) and afterwards checkpoints what it wrote."""
    from aegis_server.audit_anchor import AnchorError, AuditAnchor, CheckpointError, audit_key_source
    from aegis_server.store import AuditKeyError, Store

    settings = _cli_settings(db_url)
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
        "  No API keys existed, so a development admin key was created, bound to ANY actor (--actors '*').\n"
        "  It is shown ONCE:\n\n"
        f"      {key}\n\n"
        "  Use it:\n"
        f"      export AEGIS_ENDPOINT={endpoint} AEGIS_API_KEY={key}\n"
        f"      curl -s -H \"Authorization: Bearer $AEGIS_API_KEY\" -H 'Content-Type: application/json' \\\n"
        f"           -d '{body}' \\\n"
        f"           $AEGIS_ENDPOINT/api/v1/governance/propose\n"
        "  It may propose for any actor and review anything, so it is for development only. Create scoped keys\n"
        "  bound to their actors for agents, and separate keys for reviewers, e.g.\n"
        "      aegis-server keys create --name support-bot --scopes governance:propose,governance:read \\\n"
        "                               --actors 'ai-agent:support-bot-*'\n"
        "  and revoke this one when you no longer need it (`aegis-server keys list`, `aegis-server keys revoke\n"
        "  KEY_ID`).\n\n"
    )
    out.flush()


def _cmd_serve(args: argparse.Namespace) -> int:
    from aegis_server.app import create_app
    from aegis_server.audit_anchor import AnchorError, AuditAnchor, CheckpointError
    from aegis_server.engine import PolicySetError
    from aegis_server.http_server import build_server, raise_open_files_limit
    from aegis_server.policy_files import load_policy_paths
    from aegis_server.store import AuditKeyError

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
    if args.body_timeout is not None:
        overrides["body_timeout_seconds"] = args.body_timeout
    if args.max_header_bytes is not None:
        overrides["max_header_bytes"] = args.max_header_bytes
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
        # Before anything is written (the development key is an audit record): a chain cut or recomputed
        # since the last signed checkpoint stops here, in one line, as the server's startup would.
        try:
            anchor = AuditAnchor.from_settings(settings, store)
            if anchor is not None:
                await anchor.check_startup()
        except AnchorError as exc:
            raise CommandError(
                f"refusing to start: the audit chain does not match its latest signed checkpoint: {exc}"
            ) from None
        except (AuditKeyError, CheckpointError) as exc:
            raise CommandError(f"refusing to start: the audit keys are not usable: {exc}") from None
        if await store.count_api_keys() > 0:
            return None
        key, _ = await store.create_api_key("dev-admin", ["admin"], ["*"])
        if anchor is not None:
            await anchor.close()  # the first checkpoint anchors the chain from its first record on
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
        body_timeout=settings.body_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
        shutdown_timeout=settings.shutdown_timeout_seconds,
    )
    try:
        server.run()
    except KeyboardInterrupt:  # a second Ctrl-C: uvicorn's forced exit
        log.warning("aegis-server stopped without a graceful shutdown (second interrupt)")
        return 130
    except SystemExit:
        if server.started:
            raise
        # uvicorn exits with 3 when the application's startup fails; the log above says why.
        raise CommandError("the server did not start; the log above says why") from None
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


_ACTORS_HINT = "pass e.g. --actors 'ai-agent:support-bot-*', or '*' for any actor"


def _parse_actors_arg(text: str) -> list[str]:
    from aegis_server.key_actors import parse_actor_patterns

    try:
        return parse_actor_patterns(text)
    except ValueError as exc:
        raise CommandError(f"--actors: {exc}", code=2) from None


def _parse_rate_limit_arg(text: str) -> int | None:
    from aegis_server.key_actors import parse_rate_limit

    try:
        return parse_rate_limit(text)
    except ValueError as exc:
        raise CommandError(f"--rate-limit: {exc}", code=2) from None


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from aegis_server.security import SCOPE_ADMIN, SCOPE_PROPOSE, parse_scopes

    try:
        scopes = parse_scopes(args.scopes)
    except ValueError as exc:
        raise CommandError(f"--scopes: {exc}", code=2) from None
    name = args.name.strip()
    if not name or len(name) > 200:
        raise CommandError("--name must be 1 to 200 characters", code=2)
    actors: list[str] | None = None
    if args.actors is not None:
        actors = _parse_actors_arg(args.actors)
    elif SCOPE_PROPOSE in scopes or SCOPE_ADMIN in scopes:
        raise CommandError(
            f"a key with {SCOPE_PROPOSE} or {SCOPE_ADMIN} must say which actors it may propose for: {_ACTORS_HINT}",
            code=2,
        )
    rate_limit = _parse_rate_limit_arg(args.rate_limit) if args.rate_limit is not None else None

    async def work(store: Any) -> str:
        key, _ = await store.create_api_key(name, scopes, actors, rate_limit_per_minute=rate_limit, by="cli")
        return str(key)

    key = _run(lambda: _with_store(args.db, work, migrate=args.migrate, writes=True), args.db)
    print(key)  # ONLY the key on stdout, so `KEY=$(aegis-server keys create ...)` works
    return 0


def _describe_actors(key: Any) -> str:
    if key.actors:
        return ",".join(key.actors)
    return "UNBOUND (may propose for no actor)" if key.has_scope("governance:propose") else "-"


def _cmd_keys_list(args: argparse.Namespace) -> int:
    async def work(store: Any) -> list[Any]:
        return list(await store.list_api_keys())

    keys = _run(lambda: _with_store(args.db, work), args.db)
    if not keys:
        print("no API keys (create one with `aegis-server keys create --name NAME --scopes admin --actors '*'`)")
        return 0
    print(f"{'KEY_ID':<34} {'NAME':<24} {'STATUS':<8} {'CREATED':<20} {'RATE':<10} {'SCOPES':<40} ACTORS")
    unbound = 0
    for key in keys:
        status = "revoked" if key.revoked_at is not None else "active"
        created = key.created_at.strftime("%Y-%m-%d %H:%M:%S")
        rate = "default" if key.rate_limit_per_minute is None else f"{key.rate_limit_per_minute}/min"
        scopes = ",".join(key.scopes)
        actors = _describe_actors(key)
        print(f"{key.key_id:<34} {key.name:<24} {status:<8} {created:<20} {rate:<10} {scopes:<40} {actors}")
        if key.revoked_at is None and not key.bound and key.has_scope("governance:propose"):
            unbound += 1
    if unbound:
        print(
            f"\n{unbound} active key(s) are UNBOUND (made before 0.2): their proposals are refused. Bind each with "
            f"`aegis-server keys update KEY_ID --actors ...` ({_ACTORS_HINT})."
        )
    return 0


def _cmd_keys_update(args: argparse.Namespace) -> int:
    from aegis_server.store.repository import UNSET

    if args.actors is None and args.rate_limit is None:
        raise CommandError(f"nothing to change: give --actors and/or --rate-limit ({_ACTORS_HINT})", code=2)
    changes: dict[str, Any] = {}
    if args.actors is not None:
        changes["actors"] = _parse_actors_arg(args.actors)
    if args.rate_limit is not None:
        changes["rate_limit_per_minute"] = _parse_rate_limit_arg(args.rate_limit)

    async def work(store: Any) -> Any:
        return await store.update_api_key(
            args.key_id,
            actors=changes.get("actors", UNSET),
            rate_limit_per_minute=changes.get("rate_limit_per_minute", UNSET),
            by="cli",
        )

    key = _run(lambda: _with_store(args.db, work, writes=True), args.db)
    if key is None:
        raise CommandError(f"no active API key with id {args.key_id!r} (see `aegis-server keys list`)")
    rate = "default" if key.rate_limit_per_minute is None else f"{key.rate_limit_per_minute}/min"
    print(f"updated {key.key_id}: actors {_describe_actors(key)}, rate limit {rate}")
    print("running servers apply it within AEGIS_AUTH_CACHE_SECONDS (2 s by default)")
    return 0


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    async def work(store: Any) -> bool:
        return bool(await store.revoke_api_key(args.key_id))

    if not _run(lambda: _with_store(args.db, work, writes=True), args.db):
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
        decision = _run(lambda: _with_store(args.db, work, writes=True), args.db)
    except ApiError as exc:
        raise CommandError(exc.message) from None
    print(f"{decision.decision_id}: {'approved' if approve else 'denied'} by {reviewer}")
    return 0


# ---------------------------------------------------------------------------------------------
# audit
# ---------------------------------------------------------------------------------------------


def _audit_problem_lines(result: Any) -> list[str]:
    lines = []
    broken = result.first_broken
    if broken is not None:
        ref = f" ({broken.audit_ref})" if broken.audit_ref else ""
        lines.append(f"audit chain BROKEN at record #{broken.sequence}{ref}: {broken.reason}")
    lines.extend(f"audit BROKEN ({problem.code}): {problem.message}" for problem in result.problems)
    return lines


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from aegis_server.audit_anchor import (
        CheckpointDirectory,
        CheckpointError,
        anchor_paths,
        audit_key_source,
        load_public_key,
        load_signing_key,
        read_checkpoint_file,
        verify_audit,
    )
    from aegis_server.store import AuditKeyError, open_existing

    settings = _cli_settings(args.db)
    checkpoint = None
    public_key = None
    searched: Path | None = None  # the checkpoint directory looked in, when it held none
    note = ""
    try:
        if args.public_key:
            public_key = load_public_key(Path(args.public_key))
        if not args.no_checkpoint:
            if args.checkpoint:
                checkpoint = read_checkpoint_file(Path(args.checkpoint))
            else:
                directory = anchor_paths(settings).directory
                checkpoint = CheckpointDirectory(directory).latest() if directory is not None else None
                if checkpoint is None:
                    searched = directory
                    note = (
                        f"no signed checkpoint in {directory}: the tail of the chain was not checked (set "
                        "AEGIS_AUDIT_CHECKPOINT_DIR as the server has it, or pass --checkpoint FILE)"
                    )
            if checkpoint is not None and public_key is None:
                signing_key = load_signing_key(settings, create=False)
                if signing_key is None:
                    raise CommandError(
                        "no public key to check the checkpoint's signature: pass --public-key FILE (exported by "
                        "`aegis-server audit checkpoint`), or set AEGIS_AUDIT_SIGNING_KEY / "
                        "AEGIS_AUDIT_CHECKPOINT_DIR as the server has them",
                        code=2,
                    )
                public_key = signing_key.public_key()
    except CheckpointError as exc:
        raise CommandError(str(exc), code=2) from None

    async def work() -> Any:
        store = await open_existing(args.db, audit_key_source(settings))
        try:
            return await verify_audit(
                store,
                checkpoint=checkpoint,
                public_key=public_key,
                decisions=not args.no_decisions,
                checkpoint_directory=searched,
            )
        finally:
            await store.close()

    try:
        result = _run(work, args.db)
    except AuditKeyError as exc:
        raise CommandError(str(exc)) from None
    if note:
        print(f"aegis-server: warning: {note}", file=sys.stderr)
    if not result.valid:
        for line in _audit_problem_lines(result):
            print(line, file=sys.stderr)
        return 1
    keyed = f", keyed from #{result.keyed_from}" if result.keyed_from is not None else ""
    print(f"audit chain OK: {result.records_checked} records, head {result.head_hash or '-'}{keyed}")
    if checkpoint is not None:
        print(f"checkpoint OK: record #{checkpoint.sequence} matches {checkpoint.describe()}")
        acknowledged = checkpoint.body.get("acknowledged_cut")
        if isinstance(acknowledged, dict):
            print(
                f"note: this checkpoint acknowledges a cut of the chain (the checkpoint of {acknowledged.get('time')} "
                f"said record #{acknowledged.get('sequence')}; reason: {acknowledged.get('reason')})"
            )
    if not args.no_decisions:
        print("decisions OK: the decisions table agrees with the audit")
    return 0


def _checkpoint_signing_key(settings: Settings, what_to_do: str) -> tuple[Path, Any]:
    """The checkpoint directory and the signing key of the server with these settings; a CommandError
    ending with `what_to_do` when there is none."""
    from aegis_server.audit_anchor import CheckpointError, anchor_paths, load_signing_key

    directory = anchor_paths(settings).directory
    try:
        signing_key = load_signing_key(settings, create=False)
    except CheckpointError as exc:
        raise CommandError(str(exc)) from None
    if signing_key is None or directory is None:
        raise CommandError(f"no checkpoint signing key in {directory}: {what_to_do}")
    return directory, signing_key


def _cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from aegis_server.audit_anchor import CheckpointDirectory, public_key_pem

    settings = _cli_settings(args.db)
    directory, signing_key = _checkpoint_signing_key(
        settings,
        "start the server once (it makes the key and writes checkpoints), or set AEGIS_AUDIT_SIGNING_KEY / "
        "AEGIS_AUDIT_CHECKPOINT_DIR as the server has them",
    )
    checkpoint = CheckpointDirectory(directory).latest()
    if checkpoint is None:
        raise CommandError(f"no checkpoint in {directory} yet: the server writes one within a second of an append")
    pem = public_key_pem(signing_key.public_key())
    if args.public_key:
        Path(args.public_key).write_text(pem, encoding="utf-8")
    if args.checkpoint:
        Path(args.checkpoint).write_text(checkpoint.line() + "\n", encoding="utf-8")
    if not args.public_key and not args.checkpoint:
        sys.stdout.write(pem)
        print(checkpoint.line())
    else:
        print(f"checkpoint of record #{checkpoint.sequence} ({checkpoint.time}) exported", file=sys.stderr)
    return 0


def _cmd_audit_acknowledge_cut(args: argparse.Namespace) -> int:
    from aegis_server.audit_anchor import (
        AuditAnchor,
        CheckpointError,
        anchor_paths,
        audit_key_source,
        compare_with_checkpoint,
        load_signing_key,
        unanchored_chain,
        verify_signature,
    )
    from aegis_server.store import AuditKeyError, open_existing

    reason = args.reason.strip()
    if not reason:
        raise CommandError("--reason must say why the cut is accepted (it is kept in the audit)", code=2)
    settings = _cli_settings(args.db)
    directory = anchor_paths(settings).directory
    if directory is None:
        raise CommandError("an in-memory database has no checkpoints to acknowledge")
    try:
        # A lost checkpoint directory took its signing key with it: the acknowledgement starts a new one.
        signing_key = load_signing_key(settings, create=True)
    except CheckpointError as exc:
        raise CommandError(str(exc)) from None
    assert signing_key is not None
    operator = f"cli:{getpass.getuser()}"

    async def work() -> str:
        store = await open_existing(args.db, audit_key_source(settings))
        try:
            anchor = AuditAnchor(store, directory, signing_key)
            latest = await anchor.latest()
            if latest is None:
                unanchored = await unanchored_chain(store, directory)
                if unanchored is None:
                    return f"no checkpoint in {directory}, and none is needed yet: nothing to acknowledge"
                problems = [unanchored]
                acknowledged: dict[str, Any] = {"sequence": None, "head_hash": None, "time": None}
            else:
                if not verify_signature(anchor.public_key, latest):
                    raise CommandError(
                        f"the signature of {latest.describe()} does not verify with the signing key; move the "
                        "checkpoint files aside only after checking them with the old public key"
                    )
                problems = await compare_with_checkpoint(store, latest)
                if not problems:
                    return f"the database matches {latest.describe()}: nothing to acknowledge"
                acknowledged = {"sequence": latest.sequence, "head_hash": latest.head_hash, "time": latest.time}
            head, _ = await store.chain_head()
            await store.append_audit(
                "audit_cut_acknowledged",
                payload={
                    "checkpoint": acknowledged,
                    "database_head_sequence": head,
                    "problems": [problem.code for problem in problems],
                    "reason": reason,
                    "operator": operator,
                },
            )
            anchor.verified = True  # the operator accepts the current head
            written = await anchor.checkpoint(
                extra={"acknowledged_cut": {**acknowledged, "reason": reason}}, force=True
            )
            assert written is not None
            return (
                f"acknowledged: {'; '.join(problem.message for problem in problems)}\n"
                f"recorded as audit record #{written.sequence} and a new signed checkpoint; the server starts again"
            )
        finally:
            await store.close()

    try:
        print(_run(work, args.db))
    except AuditKeyError as exc:
        raise CommandError(str(exc)) from None
    return 0


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
    serve.add_argument(
        "--body-timeout",
        type=float,
        metavar="SECONDS",
        help="answer 408 and close when a request body has not fully arrived this long after its head "
        "(default: $AEGIS_BODY_TIMEOUT_SECONDS or 30)",
    )
    serve.add_argument(
        "--max-header-bytes",
        type=int,
        metavar="BYTES",
        help="answer 431 and close when a request line and headers exceed this size "
        "(default: $AEGIS_MAX_HEADER_BYTES or 65536)",
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
        "--actors",
        metavar="PATTERNS",
        help="comma-separated actor patterns the key may propose for: globs over actor.id, optionally "
        "type:id-glob (e.g. 'ai-agent:support-bot-*'); '*' for any actor. Required with governance:propose or admin",
    )
    create.add_argument(
        "--rate-limit", metavar="N/min", help="the key's own limit, e.g. 600/min (default: the server-wide limit)"
    )
    create.add_argument(
        "--no-migrate", dest="migrate", action="store_false", help="fail instead of creating/upgrading the schema"
    )
    create.set_defaults(func=_cmd_keys_create)
    update = key_commands.add_parser("update", help="change a key's actor patterns or rate limit")
    _add_db(update)
    update.add_argument("key_id", metavar="KEY_ID")
    update.add_argument("--actors", metavar="PATTERNS", help="the new actor patterns (replace the old); '*' for any")
    update.add_argument("--rate-limit", metavar="N/min|default", help="the key's own limit, or 'default'")
    update.set_defaults(func=_cmd_keys_update)
    listing = key_commands.add_parser("list", help="list keys, their actors and limits (never the keys themselves)")
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
        resolve.add_argument(
            "--reviewer",
            help="reviewer name to record (default: cli:<your user name>); it may not be the decision's actor id",
        )
        resolve.set_defaults(func=_cmd_review_resolve)

    audit = commands.add_parser("audit", help="the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_commands.add_parser(
        "verify",
        help="check the hash chain, the latest signed checkpoint and the decisions; exit 1 naming what is wrong",
    )
    _add_db(verify)
    verify.add_argument("--checkpoint", metavar="FILE", help="check against this checkpoint (default: the latest one)")
    verify.add_argument(
        "--public-key", metavar="FILE", help="PEM public key of the checkpoints (default: the server's)"
    )
    verify.add_argument("--no-checkpoint", action="store_true", help="check the chain alone (the tail is not checked)")
    verify.add_argument("--no-decisions", action="store_true", help="do not compare the decisions table with the audit")
    verify.set_defaults(func=_cmd_audit_verify)
    export = audit_commands.add_parser(
        "checkpoint", help="export the checkpoints' public key (PEM) and the latest signed checkpoint"
    )
    _add_db(export)
    export.add_argument("--public-key", metavar="FILE", help="write the public key here (default: stdout)")
    export.add_argument("--checkpoint", metavar="FILE", help="write the checkpoint here (default: stdout)")
    export.set_defaults(func=_cmd_audit_checkpoint)
    acknowledge = audit_commands.add_parser(
        "acknowledge-cut",
        help="after an investigation, accept a database that lost records the latest checkpoint vouches for",
    )
    _add_db(acknowledge)
    acknowledge.add_argument("--reason", required=True, help="why the cut is accepted (kept in the audit)")
    acknowledge.set_defaults(func=_cmd_audit_acknowledge_cut)

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
