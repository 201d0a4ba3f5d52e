"""`aegis-server webhooks create|list|show|update|delete|rotate-secret|test|deliveries|retry`: webhook
endpoints and their deliveries, as the `/api/v1/webhooks` API manages them. A signing secret is printed
once (alone on stdout, so `SECRET=$(aegis-server webhooks create ...)` works); listings never show one.
Deliveries are sent by running servers (`webhooks_enabled`), not by these commands."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from aegis_server.cli.command_support import CommandError, add_command_group, add_store_action, run_on_store

_NONE = "none"


def _events(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _optional_float(text: str, option: str) -> float | None:
    if text.strip().lower() == _NONE:
        return None
    try:
        return float(text)
    except ValueError:
        raise CommandError(f"{option}: {text!r} is not a number between 0 and 1 (or 'none')", code=2) from None


def _optional_text(text: str) -> str | None:
    return None if text.strip().lower() == _NONE else text


def _input_error(exc: Exception) -> CommandError:
    from aegis_server.store.webhooks import WebhookInputError

    field = exc.field if isinstance(exc, WebhookInputError) else "input"
    option = {"event_types": "--events", "capability": "--capability", "min_risk": "--min-risk"}.get(
        field, f"--{field.replace('_', '-')}"
    )
    return CommandError(f"{option}: {exc}", code=2)


def _counts(endpoint: Any) -> str:
    counts = endpoint.counts
    return f"{counts.get('pending', 0)}/{counts.get('delivered', 0)}/{counts.get('failed', 0)}"


def _not_found(endpoint_id: str) -> CommandError:
    return CommandError(f"no webhook endpoint with id {endpoint_id!r} (see `aegis-server webhooks list`)")


def _cmd_create(args: argparse.Namespace) -> int:
    from aegis_server.store.webhooks import WebhookInputError

    min_risk = _optional_float(args.min_risk, "--min-risk") if args.min_risk is not None else None

    async def work(store: Any) -> tuple[Any, str]:
        try:
            endpoint, secret = await store.webhooks.create_endpoint(
                args.url,
                _events(args.events),
                description=args.description,
                capability_glob=args.capability,
                min_risk=min_risk,
                body_format=args.format,
                enabled=not args.disabled,
                by="cli",
            )
        except WebhookInputError as exc:
            raise _input_error(exc) from None
        return endpoint, str(secret)

    endpoint, secret = run_on_store(args.db, work, migrate=args.migrate, writes=True)
    print(
        f"created webhook endpoint {endpoint.endpoint_id} for {','.join(endpoint.event_types)}; its signing secret "
        "(shown once) is on stdout",
        file=sys.stderr,
    )
    print(secret)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    async def work(store: Any) -> list[Any]:
        return list(await store.webhooks.list_endpoints())

    endpoints = run_on_store(args.db, work)
    if not endpoints:
        print("no webhook endpoints (create one with `aegis-server webhooks create --url URL --events '*'`)")
        return 0
    print(f"{'ID':<40} {'ENABLED':<8} {'FORMAT':<9} {'P/D/F':<12} {'EVENTS':<40} {'FILTER':<30} URL")
    for endpoint in endpoints:
        shown_filter = endpoint.filter_text() or "-"
        print(
            f"{endpoint.endpoint_id:<40} {'yes' if endpoint.enabled else 'no':<8} {endpoint.body_format:<9} "
            f"{_counts(endpoint):<12} {','.join(endpoint.event_types):<40} {shown_filter:<30} {endpoint.url}"
        )
    print("\nP/D/F: deliveries pending / delivered / failed")
    return 0


def _print_endpoint(endpoint: Any) -> None:
    rows = [
        ("id", endpoint.endpoint_id),
        ("url", endpoint.url),
        ("description", endpoint.description or "-"),
        ("events", ",".join(endpoint.event_types)),
        ("filter", endpoint.filter_text() or "-"),
        ("format", endpoint.body_format),
        ("enabled", "yes" if endpoint.enabled else "no"),
        ("created", f"{endpoint.created_at:%Y-%m-%d %H:%M:%S} by {endpoint.created_by or '-'}"),
        ("updated", f"{endpoint.updated_at:%Y-%m-%d %H:%M:%S}"),
        (
            "deliveries",
            "pending {pending}, delivered {delivered}, failed {failed}".format_map(
                {"pending": 0, "delivered": 0, "failed": 0, **endpoint.counts}
            ),
        ),
    ]
    for name, value in rows:
        print(f"{name + ':':<12} {value}")


def _cmd_show(args: argparse.Namespace) -> int:
    async def work(store: Any) -> Any:
        return await store.webhooks.get_endpoint(args.endpoint_id)

    endpoint = run_on_store(args.db, work)
    if endpoint is None:
        raise _not_found(args.endpoint_id)
    _print_endpoint(endpoint)
    return 0


def _cmd_update(args: argparse.Namespace) -> int:
    from aegis_server.store import UNSET
    from aegis_server.store.webhooks import WebhookInputError

    changes: dict[str, Any] = {}
    if args.url is not None:
        changes["url"] = args.url
    if args.events is not None:
        changes["event_types"] = _events(args.events)
    if args.description is not None:
        changes["description"] = args.description
    if args.capability is not None:
        changes["capability_glob"] = _optional_text(args.capability)
    if args.min_risk is not None:
        changes["min_risk"] = _optional_float(args.min_risk, "--min-risk")
    if args.format is not None:
        changes["body_format"] = args.format
    if args.enabled is not None:
        changes["enabled"] = args.enabled
    if not changes:
        raise CommandError(
            "nothing to change: give any of --url, --events, --description, --capability, --min-risk, --format, "
            "--enable/--disable",
            code=2,
        )

    async def work(store: Any) -> Any:
        try:
            return await store.webhooks.update_endpoint(
                args.endpoint_id, **{name: changes.get(name, UNSET) for name in _UPDATABLE}, by="cli"
            )
        except WebhookInputError as exc:
            raise _input_error(exc) from None

    endpoint = run_on_store(args.db, work, writes=True)
    if endpoint is None:
        raise _not_found(args.endpoint_id)
    print(f"updated {endpoint.endpoint_id}")
    _print_endpoint(endpoint)
    return 0


_UPDATABLE = ("url", "event_types", "description", "capability_glob", "min_risk", "body_format", "enabled")


def _cmd_delete(args: argparse.Namespace) -> int:
    async def work(store: Any) -> bool:
        return bool(await store.webhooks.delete_endpoint(args.endpoint_id, by="cli"))

    if not run_on_store(args.db, work, writes=True):
        raise _not_found(args.endpoint_id)
    print(f"deleted {args.endpoint_id} and its deliveries")
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    async def work(store: Any) -> str | None:
        return await store.webhooks.rotate_secret(args.endpoint_id, by="cli")  # type: ignore[no-any-return]

    secret = run_on_store(args.db, work, writes=True)
    if secret is None:
        raise _not_found(args.endpoint_id)
    print(
        f"new signing secret of {args.endpoint_id} (shown once) is on stdout; the old one no longer signs",
        file=sys.stderr,
    )
    print(secret)
    return 0


def _cmd_test(args: argparse.Namespace) -> int:
    async def work(store: Any) -> Any:
        return await store.webhooks.queue_test_event(args.endpoint_id)

    delivery = run_on_store(args.db, work)
    if delivery is None:
        raise _not_found(args.endpoint_id)
    print(
        f"queued a webhook.test event (webhook-id {delivery.event_id}) as delivery {delivery.delivery_id}; a running "
        f"server sends it. Follow it with `aegis-server webhooks deliveries {args.endpoint_id}`"
    )
    return 0


def _cmd_deliveries(args: argparse.Namespace) -> int:
    from aegis_server.store import MAX_PAGE_SIZE, InvalidCursor

    if not 1 <= args.limit <= MAX_PAGE_SIZE:
        raise CommandError(f"--limit must be between 1 and {MAX_PAGE_SIZE}", code=2)

    async def work(store: Any) -> Any:
        if await store.webhooks.get_endpoint(args.endpoint_id) is None:
            raise _not_found(args.endpoint_id)
        try:
            return await store.webhooks.list_deliveries(
                args.endpoint_id, status=args.status, limit=args.limit, cursor=args.cursor
            )
        except InvalidCursor as exc:
            raise CommandError(f"--cursor: {exc}", code=2) from None

    items, next_cursor = run_on_store(args.db, work)
    if not items:
        print("no deliveries" + (f" with status {args.status}" if args.status else ""))
        return 0
    print(f"{'ID':<8} {'STATUS':<10} {'ATTEMPTS':<9} {'EVENT':<20} {'WEBHOOK-ID':<40} {'LAST':<10} LAST ERROR")
    for item in items:
        last = str(item.last_status_code) if item.last_status_code is not None else "-"
        print(
            f"{item.delivery_id:<8} {item.status:<10} {item.attempts:<9} {item.event_type:<20} {item.event_id:<40} "
            f"{last:<10} {item.last_error or '-'}"
        )
    if next_cursor is not None:
        print(f"\nmore: --cursor {next_cursor}")
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    if not 1 <= args.delivery_id < 2**63:
        raise CommandError("DELIVERY_ID is a delivery's number, as `webhooks deliveries` lists it", code=2)

    async def work(store: Any) -> tuple[Any, Any]:
        retried = await store.webhooks.retry_delivery(args.endpoint_id, args.delivery_id)
        existing = retried or await store.webhooks.get_delivery(args.endpoint_id, args.delivery_id)
        return retried, existing

    retried, existing = run_on_store(args.db, work)
    if existing is None:
        raise CommandError(
            f"no delivery {args.delivery_id} of endpoint {args.endpoint_id!r} "
            f"(see `aegis-server webhooks deliveries {args.endpoint_id}`)"
        )
    if retried is None:
        raise CommandError(f"delivery {args.delivery_id} is {existing.status}; only a failed delivery can be retried")
    print(
        f"delivery {retried.delivery_id} is pending again (same webhook-id {retried.event_id}); "
        "a running server sends it"
    )
    return 0


def _add_endpoint_options(parser: Any, *, creating: bool) -> None:
    parser.add_argument("--url", required=creating, help="http(s) URL of the receiver (no user:password@)")
    parser.add_argument(
        "--events",
        required=creating,
        metavar="TYPES",
        help="comma-separated: decision.escalated, decision.denied, review.resolved, review.expired; or '*'",
    )
    parser.add_argument("--description", default="" if creating else None, help="what the endpoint is for")
    none = "" if creating else "; 'none' removes it"
    parser.add_argument(
        "--capability", metavar="GLOB", help=f"only events of matching capabilities, e.g. 'refunds.*'{none}"
    )
    parser.add_argument("--min-risk", metavar="0..1", help=f"only events whose risk score is at least this{none}")
    parser.add_argument(
        "--format",
        choices=("standard", "slack"),
        default="standard" if creating else None,
        help="the body: standard JSON or a Slack incoming-webhook message",
    )


def add_webhooks_commands(commands: Any) -> None:
    """Register `webhooks create|list|show|update|delete|rotate-secret|test|deliveries|retry`."""
    group = add_command_group(commands, "webhooks", "webhook endpoints and their deliveries")
    create = add_store_action(group, "create", "create an endpoint and print its signing secret (once)", _cmd_create)
    _add_endpoint_options(create, creating=True)
    create.add_argument("--disabled", action="store_true", help="create it disabled (nothing is sent until enabled)")
    create.add_argument(
        "--no-migrate", dest="migrate", action="store_false", help="fail instead of creating/upgrading the schema"
    )
    add_store_action(group, "list", "list endpoints with their delivery counts (never the secrets)", _cmd_list)
    show = add_store_action(group, "show", "show one endpoint", _cmd_show)
    show.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    update = add_store_action(group, "update", "change an endpoint (only what is given)", _cmd_update)
    update.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    _add_endpoint_options(update, creating=False)
    enabled = update.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_const", const=True, help="send deliveries again")
    enabled.add_argument(
        "--disable", dest="enabled", action="store_const", const=False, help="hold deliveries until enabled"
    )
    delete = add_store_action(group, "delete", "delete an endpoint and its deliveries", _cmd_delete)
    delete.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    rotate = add_store_action(
        group, "rotate-secret", "give an endpoint a new signing secret (printed once)", _cmd_rotate
    )
    rotate.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    test = add_store_action(group, "test", "queue a webhook.test event to this endpoint only", _cmd_test)
    test.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    deliveries = add_store_action(group, "deliveries", "list an endpoint's deliveries, newest first", _cmd_deliveries)
    deliveries.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    deliveries.add_argument("--status", choices=("pending", "delivered", "failed"))
    deliveries.add_argument("--limit", type=int, default=50, help="at most this many (1-1000, default 50)")
    deliveries.add_argument("--cursor", help="continue after the previous page (its `more: --cursor` line)")
    retry = add_store_action(group, "retry", "send a failed delivery again (the same webhook-id)", _cmd_retry)
    retry.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    retry.add_argument("delivery_id", metavar="DELIVERY_ID", type=int)


__all__ = ["add_webhooks_commands"]
