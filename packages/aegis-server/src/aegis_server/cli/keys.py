"""`aegis-server keys create|list|update|revoke`: API keys, their scopes, actor patterns and rate limits
(a key is shown once, at creation; listings never show one)."""

from __future__ import annotations

import argparse
from typing import Any

from aegis_server.cli.command_support import (
    CommandError,
    add_command_group,
    add_store_action,
    run_on_store,
)

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

    key = run_on_store(args.db, work, migrate=args.migrate, writes=True)
    print(key)  # ONLY the key on stdout, so `KEY=$(aegis-server keys create ...)` works
    return 0


def _describe_actors(key: Any) -> str:
    if key.actors:
        return ",".join(key.actors)
    return "UNBOUND (may propose for no actor)" if key.has_scope("governance:propose") else "-"


def _cmd_keys_list(args: argparse.Namespace) -> int:
    async def work(store: Any) -> list[Any]:
        return list(await store.list_api_keys())

    keys = run_on_store(args.db, work)
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
    from aegis_server.store import UNSET

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

    key = run_on_store(args.db, work, writes=True)
    if key is None:
        raise CommandError(f"no active API key with id {args.key_id!r} (see `aegis-server keys list`)")
    rate = "default" if key.rate_limit_per_minute is None else f"{key.rate_limit_per_minute}/min"
    print(f"updated {key.key_id}: actors {_describe_actors(key)}, rate limit {rate}")
    print("running servers apply it within AEGIS_AUTH_CACHE_SECONDS (2 s by default)")
    return 0


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    async def work(store: Any) -> bool:
        return bool(await store.revoke_api_key(args.key_id))

    if not run_on_store(args.db, work, writes=True):
        raise CommandError(f"no active API key with id {args.key_id!r} (see `aegis-server keys list`)")
    print(f"revoked {args.key_id}")
    return 0


def add_keys_commands(commands: Any) -> None:
    """Register `keys create|update|list|revoke` on the main parser's sub-parsers."""
    key_commands = add_command_group(commands, "keys", "API keys")
    create = add_store_action(
        key_commands, "create", "create a key and print it (only the key) on stdout", _cmd_keys_create
    )
    create.add_argument("--name", required=True, help="who uses the key (reviews are recorded under it)")
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: governance:propose, governance:read, governance:review, audit:read, "
        "policies:manage, metrics (GET /metrics when AEGIS_METRICS_ACCESS=key), admin",
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
    update = add_store_action(key_commands, "update", "change a key's actor patterns or rate limit", _cmd_keys_update)
    update.add_argument("key_id", metavar="KEY_ID")
    update.add_argument("--actors", metavar="PATTERNS", help="the new actor patterns (replace the old); '*' for any")
    update.add_argument("--rate-limit", metavar="N/min|default", help="the key's own limit, or 'default'")
    add_store_action(
        key_commands, "list", "list keys, their actors and limits (never the keys themselves)", _cmd_keys_list
    )
    revoke = add_store_action(key_commands, "revoke", "revoke a key by its id", _cmd_keys_revoke)
    revoke.add_argument("key_id", metavar="KEY_ID")


__all__ = ["add_keys_commands"]
