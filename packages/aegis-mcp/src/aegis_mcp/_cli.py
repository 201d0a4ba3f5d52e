"""The `aegis-mcp` command.

```
aegis-mcp proxy --actor ID [--actor-type TYPE] [--endpoint URL --api-key KEY]   # else AEGIS_ENDPOINT/AEGIS_API_KEY
               [--capability-prefix mcp] [--fail-open] [--review-timeout SECONDS] [--sync-capabilities]
               [--upstream-timeout SECONDS] [--listen HOST:PORT [--listen-token-env NAME] [--allowed-host H]...]
               -- UPSTREAM_COMMAND ARGS...
aegis-mcp proxy --config aegis-mcp.yaml [--listen HOST:PORT ...]
aegis-mcp capabilities [--config FILE | --capability-prefix P -- UPSTREAM_COMMAND ARGS...] [--sync [--replace]]
        [--risk-level low|medium|high|critical] [--json]
```

Only MCP JSON-RPC goes to stdout while proxying; logs go to stderr. A mistake the user can fix (the
configuration, a missing AEGIS endpoint or key, an upstream that cannot start) is one message on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

import anyio

from aegis_mcp._capabilities import outcomes_json, outcomes_text, plan, planned_json, planned_text, sync
from aegis_mcp._config import ConfigError, ProxyConfig, config_from_arguments, load_config
from aegis_mcp._listener import listen_token
from aegis_mcp._proxy import GoverningProxy, connected, discover, running_proxy, serve
from aegis_mcp._upstream import UpstreamError
from aegis_sdk import AegisError, AsyncAegisClient

logger = logging.getLogger("aegis_mcp.proxy")
USAGE_ERROR = 2


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aegis-mcp", description="AEGIS governance in front of MCP servers (see docs/mcp.md)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    proxy = commands.add_parser(
        "proxy",
        help="serve a governing proxy in front of MCP servers",
        usage="aegis-mcp proxy (--actor ID [options] -- UPSTREAM_COMMAND ARGS... | --config FILE) [--listen HOST:PORT]",
    )
    proxy.add_argument("--config", help="a YAML configuration (upstreams, actor, AEGIS endpoint)")
    proxy.add_argument("--actor", help="the actor id the agent's calls are proposed as")
    proxy.add_argument("--actor-type", default="ai-agent", help="the actor type (default: ai-agent)")
    proxy.add_argument("--endpoint", help="the AEGIS platform URL (default: AEGIS_ENDPOINT)")
    proxy.add_argument(
        "--api-key",
        help="the AEGIS API key; visible to other users in `ps`: prefer the AEGIS_API_KEY variable (the default)",
    )
    proxy.add_argument("--capability-prefix", default="mcp", help='tool t is capability <prefix>.t (default "mcp")')
    proxy.add_argument("--fail-open", action="store_true", help="forward calls when AEGIS is unreachable (degraded)")
    proxy.add_argument("--review-timeout", type=float, default=300.0, help="seconds an ESCALATE waits (default 300)")
    proxy.add_argument("--sync-capabilities", action="store_true", help="register the tools as capabilities at start")
    proxy.add_argument(
        "--upstream-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds an upstream has to answer a request or tools/call (default 300)",
    )
    proxy.add_argument("--listen", metavar="HOST:PORT", help="serve streamable HTTP at http://HOST:PORT/mcp")
    proxy.add_argument(
        "--listen-token-env",
        metavar="NAME",
        help="require `Authorization: Bearer $NAME` on every HTTP request (needed to listen beyond loopback)",
    )
    proxy.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a Host header the HTTP listener also accepts (repeatable), e.g. the name clients reach it by",
    )

    caps = commands.add_parser(
        "capabilities",
        help="show (or --sync: register) the capabilities of the upstreams' tools",
        usage="aegis-mcp capabilities [--config FILE | --capability-prefix P -- UPSTREAM_COMMAND ARGS...] [--sync]",
    )
    caps.add_argument("--config", help="a YAML configuration (as for `aegis-mcp proxy`)")
    caps.add_argument("--capability-prefix", default="mcp", help='tool t is capability <prefix>.t (default "mcp")')
    caps.add_argument("--endpoint", help="the AEGIS platform URL (default: AEGIS_ENDPOINT)")
    caps.add_argument(
        "--api-key",
        help="the AEGIS API key, with policies:manage; visible in `ps`: prefer AEGIS_API_KEY (the default)",
    )
    caps.add_argument(
        "--sync",
        action="store_true",
        help="register the missing ones with AEGIS; an existing one that differs is reported (`differs`), not changed",
    )
    caps.add_argument(
        "--replace",
        action="store_true",
        help="with --sync: replace the ones that differ (keeping their x-sensitive marks and the higher risk level)",
    )
    caps.add_argument("--risk-level", choices=["low", "medium", "high", "critical"], default="medium")
    caps.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The options before `--`, and the upstream command after it."""
    items = list(argv)
    if "--" in items:
        at = items.index("--")
        return items[:at], items[at + 1 :]
    return items, []


def _proxy_config(args: argparse.Namespace, command: list[str]) -> ProxyConfig:
    if args.config:
        if command:
            raise ConfigError("give either --config FILE or an upstream command after `--`, not both")
        config = load_config(args.config)
        if args.endpoint:
            config = config.model_copy(update={"aegis": config.aegis.model_copy(update={"endpoint": args.endpoint})})
        return _listen_options(config, args)
    if not args.actor:
        raise ConfigError("--actor ID is required (the actor the agent's calls are proposed as), or use --config FILE")
    config = config_from_arguments(
        actor=args.actor,
        actor_type=args.actor_type,
        command=command,
        endpoint=args.endpoint,
        capability_prefix=args.capability_prefix,
        fail_open=args.fail_open,
        review_timeout=args.review_timeout,
        sync_capabilities=args.sync_capabilities,
    )
    return _listen_options(config, args)


def _listen_options(config: ProxyConfig, args: argparse.Namespace) -> ProxyConfig:
    """The command line's --upstream-timeout, --listen-token-env and --allowed-host over the configuration's."""
    update: dict[str, object] = {}
    if args.upstream_timeout is not None:
        if not args.upstream_timeout > 0:
            raise ConfigError(f"--upstream-timeout wants a number of seconds above 0, got {args.upstream_timeout:g}")
        update["upstream_timeout"] = args.upstream_timeout
    if args.listen_token_env:
        update["listen_token_env"] = args.listen_token_env
    if args.allowed_host:
        update["allowed_hosts"] = [*config.allowed_hosts, *args.allowed_host]
    return config.model_copy(update=update) if update else config


def _aegis_client(config: ProxyConfig, api_key: str | None) -> AsyncAegisClient:
    environ = dict(os.environ)
    if api_key:
        environ[config.aegis.api_key_env] = api_key
    endpoint, key = config.endpoint_and_key(environ)
    try:
        return AsyncAegisClient(endpoint=endpoint, api_key=key)
    except AegisError as exc:
        raise ConfigError(f"the AEGIS client could not be configured: {exc}") from None


def _listen(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen wants HOST:PORT (for example 127.0.0.1:8765), got {value!r}")
    return host.strip("[]"), int(port)


async def _run_proxy(config: ProxyConfig, client: AsyncAegisClient, listen: tuple[str, int] | None) -> None:
    async with client, running_proxy(config, client) as proxy:
        if config.sync_capabilities:
            await _sync_at_start(proxy, client)
        await serve(proxy, listen)


async def _sync_at_start(proxy: GoverningProxy, client: AsyncAegisClient) -> None:
    exposed = await proxy.discover_tools()
    for outcome in await sync(client, plan(exposed, proxy.config.risk_level)):
        if outcome.status == "failed":
            logger.warning(
                "capability %s (tool %s) not registered: %s", outcome.capability, outcome.tool, outcome.message
            )
        else:
            logger.info("capability %s (tool %s): %s", outcome.capability, outcome.tool, outcome.status)


async def _run_capabilities(
    config: ProxyConfig, client: AsyncAegisClient | None, risk_level: str, as_json: bool, replace: bool = False
) -> int:
    async with connected(config) as upstreams:
        planned = plan(await discover(upstreams, config), risk_level)
    if client is None:
        print(json.dumps(planned_json(planned), indent=2) if as_json else planned_text(planned))
        return 0
    async with client:
        outcomes = await sync(client, planned, replace=replace)
    print(json.dumps(outcomes_json(outcomes), indent=2) if as_json else outcomes_text(outcomes))
    return 1 if any(outcome.status == "failed" for outcome in outcomes) else 0


def _user_error(exc: BaseException) -> BaseException | None:
    """The ConfigError / UpstreamError inside `exc` (task groups wrap them), if that is what it is."""
    if isinstance(exc, (ConfigError, UpstreamError)):
        return exc
    for inner in getattr(exc, "exceptions", None) or ():  # an exception group (a builtin only from 3.11)
        if isinstance(inner, BaseException):
            found = _user_error(inner)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    options, command = _split(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(options)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="aegis-mcp: %(levelname)s %(message)s")
    # The HTTP clients log each request line (with the full URL: credentials, query) at INFO; mcp uses httpx2.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "mcp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "proxy":
            config = _proxy_config(args, command)
            listen = _listen(args.listen)
            if listen is not None:
                listen_token(config, listen[0])  # before anything starts: a listener beyond loopback needs a token
            client = _aegis_client(config, args.api_key)
            anyio.run(_run_proxy, config, client, listen)
            return 0
        if args.config:
            if command:
                raise ConfigError("give either --config FILE or an upstream command after `--`, not both")
            config = load_config(args.config)
        else:
            config = config_from_arguments(actor="aegis-mcp", command=command, capability_prefix=args.capability_prefix)
        if args.endpoint:
            config = config.model_copy(update={"aegis": config.aegis.model_copy(update={"endpoint": args.endpoint})})
        if args.replace and not args.sync:
            raise ConfigError("--replace goes with --sync")
        syncing = _aegis_client(config, args.api_key) if args.sync else None
        code: int = anyio.run(_run_capabilities, config, syncing, args.risk_level, args.json, args.replace)
        return code
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # a user's mistake is one line, anything else a traceback
        found = _user_error(exc)
        if found is None:
            raise
        print(f"aegis-mcp: {found}", file=sys.stderr)
        return USAGE_ERROR


__all__ = ["main"]
