"""Known decisions for the console-pages tests (imported by name: the test folders are not packages).

`seed(store)` records the decisions of `SEEDED` through the store, resolves and expires their reviews at
known times, and the tests check the overview's numbers against what is written here."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from aegis_sdk.models import Decision
from aegis_server.store import NewDecision, Store, format_timestamp

NOW = datetime(2030, 1, 1, 12, 30, 0, tzinfo=timezone.utc)
"""The moment the overview is read at: the last hourly bucket is 12:00."""

XSS_CAPABILITY = "<script>alert(1)</script>"
"""A capability name as an attacker would write it (the store does not validate names)."""


@dataclass(frozen=True)
class Seeded:
    outcome: str
    at: datetime
    risk: float
    capability: str = "database.query"
    actor: str = "agent-1"


def _hours_ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


# Within the last 24 h unless said otherwise. ESCALATEs are reviewed below.
SEEDED: tuple[Seeded, ...] = (
    Seeded("ALLOW", _hours_ago(0.25), 0.05),  # 12:15, bucket 12:00
    Seeded("ALLOW", _hours_ago(0.5), 0.15),  # 12:00
    Seeded("ALLOW", _hours_ago(1.5), 0.15, actor="agent-2"),  # 11:00
    Seeded("DENY", _hours_ago(1.5), 0.95, capability="files.delete"),  # 11:00
    Seeded("REQUIRE_CONFIRMATION", _hours_ago(2.5), 0.45, capability="payments.refund", actor="agent-2"),  # 10:00
    Seeded("ESCALATE", _hours_ago(5), 0.75, capability="payments.refund", actor="agent-3"),  # approved after 60 s
    Seeded("ESCALATE", _hours_ago(6), 0.85, capability="payments.refund", actor="agent-3"),  # denied after 120 s
    Seeded("ESCALATE", _hours_ago(7), 1.0, capability="files.delete", actor="agent-3"),  # denied after 600 s
    Seeded("ESCALATE", _hours_ago(20), 0.65, capability="files.delete"),  # expires 1 h later
    Seeded("ESCALATE", _hours_ago(0.1), 0.55, capability=XSS_CAPABILITY, actor="agent-4"),  # still pending
    Seeded("ALLOW", _hours_ago(30), 0.25),  # outside 24 h, inside 7 d
    Seeded("DENY", _hours_ago(24 * 10), 0.35),  # outside 7 d, inside 30 d
    Seeded("ALLOW", _hours_ago(24 * 40), 0.35),  # outside every window
)
REVIEWS: tuple[tuple[int, bool, float], ...] = ((5, True, 60.0), (6, False, 120.0), (7, False, 600.0))
"""(index in SEEDED, approve, seconds after the decision) of each review resolved."""
EXPIRED = 8
"""The index of the ESCALATE whose review expires (its deadline is an hour after it)."""


async def seed(store: Store) -> list[str]:
    """Record `SEEDED`, resolve `REVIEWS` and expire `EXPIRED`; returns the decision ids in `SEEDED` order."""
    counter = itertools.count(1)
    ids: list[str] = []
    for item in SEEDED:
        number = next(counter)
        decision_id = f"dec_seed_{number:03d}"
        escalate = item.outcome == "ESCALATE"
        decision = Decision(
            decision_id=decision_id,
            outcome=item.outcome,  # type: ignore[arg-type]
            reason=f"seeded {number}",
            risk_score=item.risk,
            constraints={},
            timestamp=format_timestamp(item.at),
            audit_ref="",
            policy_ids=["seed/1"],
            confirmation_token=f"token-{number}" if item.outcome == "REQUIRE_CONFIRMATION" else None,
            expires_at=format_timestamp(item.at + timedelta(minutes=5))
            if item.outcome == "REQUIRE_CONFIRMATION"
            else None,
        )
        await store.record_decision(
            NewDecision(
                decision=decision,
                actor_id=item.actor,
                capability=item.capability,
                params_hash="ab" * 32,
                session_id="sess-seed",
                proposal_audit={"actor": {"id": item.actor}, "action": {"capability": item.capability}},
                review_deadline=item.at + timedelta(hours=1) if escalate else None,
            )
        )
        ids.append(decision_id)
    for index, approve, seconds in REVIEWS:
        resolved_at = SEEDED[index].at + timedelta(seconds=seconds)
        await store.resolve_review(
            ids[index],
            approve=approve,
            reviewer="reviewer-1",
            note="seeded review",
            now=resolved_at,
            token="approval-token" if approve else None,
            token_expires_at=resolved_at + timedelta(minutes=5) if approve else None,
        )
    expired = await store.expire_due_reviews(SEEDED[EXPIRED].at + timedelta(hours=1))
    assert expired == [ids[EXPIRED]]
    return ids
