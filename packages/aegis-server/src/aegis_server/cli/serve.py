"""`aegis-server serve`: check the policy files and the audit chain, create a development key on a first
start, then run the API under `aegis_server.edge.http_server`; and the log format every server line uses.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from aegis_server.cli.command_support import (
    CommandError,
    run_on_store,
)
from aegis_server.cli.log_output import BufferedStreamHandler, CachedTimeFormatter
from aegis_server.edge.request_id import RequestIdLogFilter
from aegis_server.settings import Settings

if TYPE_CHECKING:
    from aegis_server.observability.otel_setup import TracingSetup

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


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
    # Drivers log SQL parameters (audit payloads) at DEBUG, and httpx every webhook URL at INFO (a Slack
    # URL's path is a credential): keep them quiet even in debug mode.
    for noisy in ("aiosqlite", "asyncpg", "sqlalchemy.engine", "sqlalchemy.pool", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _served_url(host: str, port: int) -> str:
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - comparing, not binding
    return f"http://[{shown_host}]:{port}" if ":" in shown_host else f"http://{shown_host}:{port}"


def _print_dev_key(key: str, host: str, port: int, out: TextIO) -> None:
    endpoint = _served_url(host, port)
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
        f"  The reviewer console is at {endpoint}/console (sign in with a key that has governance:review).\n"
        "  It may propose for any actor and review anything, so it is for development only. Create scoped keys\n"
        "  bound to their actors for agents, and separate keys for reviewers, e.g.\n"
        "      aegis-server keys create --name support-bot --scopes governance:propose,governance:read \\\n"
        "                               --actors 'ai-agent:support-bot-*'\n"
        "  and revoke this one when you no longer need it (`aegis-server keys list`, `aegis-server keys revoke\n"
        "  KEY_ID`).\n\n"
    )
    out.flush()


def _configure_tracing() -> TracingSetup | None:
    """The OpenTelemetry SDK as the OTEL_* variables ask (see observability/otel_setup.py), logged in one line."""
    from aegis_server.observability.otel_setup import OtelSetupError, configure_tracing

    try:
        tracing = configure_tracing()
    except OtelSetupError as exc:
        raise CommandError(f"cannot set up tracing: {exc}", 2) from None
    if tracing is not None:
        logging.getLogger("aegis_server").info("%s", tracing.describe())
    return tracing


def _bind_metrics_listener(settings: Settings, host: str, port: int) -> socket.socket | None:
    """The socket of AEGIS_METRICS_LISTEN, bound now so that an address in use stops `serve` at once."""
    from aegis_server.observability.metrics_listener import bind

    address = settings.metrics_address()
    if address is None:
        return None
    wildcard = {"0.0.0.0", "::"}  # noqa: S104  # compared with, never bound
    if address[1] == port and (address[0] == host or {address[0], host} & wildcard):
        raise CommandError(
            f"AEGIS_METRICS_LISTEN ({settings.metrics_listen}) is the API's own address ({host}:{port}): the "
            "separate /metrics listener needs a port of its own (e.g. 127.0.0.1:9464), or unset it to serve "
            "/metrics on the main address.",
            2,
        )
    try:
        return bind(*address)
    except OSError as exc:
        raise CommandError(
            f"cannot listen for /metrics on {settings.metrics_listen} (AEGIS_METRICS_LISTEN): "
            f"{exc.strerror or exc}. Choose a free port on an address of this machine.",
            2,
        ) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from aegis_server.app import create_app
    from aegis_server.audit.anchor import AnchorError, AuditAnchor
    from aegis_server.audit.checkpoints import CheckpointError
    from aegis_server.edge.http_server import build_server, raise_open_files_limit
    from aegis_server.engine import PolicySetError
    from aegis_server.policies.files import load_policy_paths
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
    if settings.public_url is None:  # webhook bodies link to the console at the address served here
        settings = settings.model_copy(update={"public_url": _served_url(args.host, args.port)})
    configure_logging(settings.log_level)
    tracing = _configure_tracing()

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

    dev_key = run_on_store(settings.db_url, first_start, migrate=settings.db_migrate)
    if dev_key is not None:
        _print_dev_key(dev_key, args.host, args.port, sys.stdout)
    policy_note = ", ".join(str(p) for p in paths) if paths else "none (register policies through the API)"
    logging.getLogger("aegis_server").info("policy files: %s", policy_note)
    log = logging.getLogger("aegis_server")
    raised = raise_open_files_limit()
    if raised is not None:
        log.info("open files limit raised from %d to %d (one per connection)", *raised)
    metrics_socket = _bind_metrics_listener(settings, args.host, args.port)
    app = create_app(settings, freeze_gc_after_startup=True)
    edge = {
        "proxy_headers": args.proxy_headers,
        "keep_alive_timeout": settings.keep_alive_timeout_seconds,
        "header_timeout": settings.header_timeout_seconds,
        "body_timeout": settings.body_timeout_seconds,
        "max_header_bytes": settings.max_header_bytes,
        "shutdown_timeout": settings.shutdown_timeout_seconds,
    }
    server = build_server(app, host=args.host, port=args.port, **edge)
    if metrics_socket is not None:
        from aegis_server.edge.http_server import edge_config
        from aegis_server.observability.metrics_listener import MetricsListener

        host, port = metrics_socket.getsockname()[:2]
        listener = MetricsListener(app, edge_config(app, host=host, port=port, **edge), metrics_socket)
        server.companions.append(listener)
        log.info("/metrics is served at %s alone (AEGIS_METRICS_LISTEN)", _served_url(*listener.address))
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
    finally:
        if tracing is not None:
            tracing.shutdown()  # the spans still buffered are exported before the process ends
    if not server.started:
        # The lifespan failed (uvicorn logged why) or the port could not be bound.
        raise CommandError("the server did not start; the log above says why")
    log.info("aegis-server stopped (%s): graceful shutdown complete", server.stopped_by or "exit requested")
    for handler in logging.getLogger().handlers:
        handler.flush()
    return 0


def add_serve_command(commands: Any) -> None:
    """Register `serve` on the main parser's sub-parsers."""
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


__all__ = ["add_serve_command", "configure_logging"]
