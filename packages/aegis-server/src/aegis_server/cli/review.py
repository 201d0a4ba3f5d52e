"""`aegis-server review list|approve|deny`: escalations awaiting a reviewer, resolved from the command line."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from aegis_server.cli.command_support import (
    CommandError,
    add_command_group,
    add_store_action,
    run_database_call,
    run_on_store,
    with_store,
)
from aegis_server.settings import Settings


def _cmd_review_list(args: argparse.Namespace) -> int:
    from aegis_server.store import DecisionFilters

    async def work(store: Any) -> list[Any]:
        items, _ = await store.list_decisions(DecisionFilters(review_status="pending"), args.limit, None)
        return list(items)

    items = run_on_store(args.db, work)
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
    from aegis_server.governance.errors import GovernanceError
    from aegis_server.governance.service import GovernanceService
    from aegis_server.metrics import Metrics

    approve = args.review_command == "approve"
    reviewer = args.reviewer or f"cli:{getpass.getuser()}"
    settings = Settings.from_env(db_url=args.db, policy_paths=())

    async def work(store: Any) -> Any:
        service = GovernanceService(settings, store, Metrics())
        await service.init_tokens()
        return await service.review(args.decision_id, ReviewRequest(approve=approve, note=args.note), reviewer=reviewer)

    try:
        decision = run_database_call(lambda: with_store(args.db, work, writes=True), args.db)
    except GovernanceError as exc:
        raise CommandError(exc.message) from None
    print(f"{decision.decision_id}: {'approved' if approve else 'denied'} by {reviewer}")
    return 0


def add_review_commands(commands: Any) -> None:
    """Register `review list|approve|deny` on the main parser's sub-parsers."""
    review_commands = add_command_group(commands, "review", "escalations awaiting a reviewer")
    pending = add_store_action(review_commands, "list", "pending reviews", _cmd_review_list)
    pending.add_argument("--limit", type=int, default=50, choices=range(1, 201), metavar="1..200")
    for action, text in (("approve", "approve (issues the confirmation token)"), ("deny", "deny (final DENY)")):
        resolve = add_store_action(review_commands, action, text, _cmd_review_resolve)
        resolve.add_argument("decision_id", metavar="DECISION_ID")
        resolve.add_argument("--note", help="why (kept in the audit)")
        resolve.add_argument(
            "--reviewer",
            help="reviewer name to record (default: cli:<your user name>); it may not be the decision's actor id",
        )


__all__ = ["add_review_commands"]
