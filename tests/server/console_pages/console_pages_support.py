"""Helpers of the console-pages tests (imported by name: the test folders are not packages).

`seed(store)` records the decisions of `SEEDED` through the store, resolves and expires their reviews at
known times, and the tests check the overview's numbers against what is written here. `make_server` runs
the app in-process at a fixed clock; `sign_in` turns an httpx client into a signed-in browser."""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from aegis_sdk.models import Decision
from aegis_server.inprocess import InProcessServer
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


# -- the server and its browsers -------------------------------------------------------------------------

POLICIES = Path(__file__).with_name("policies.yaml")
Browser = Callable[[Sequence[str]], Awaitable[httpx.AsyncClient]]
"""`await browser(scopes)`: a client signed in with a new key of those scopes (the `browser` fixture)."""


class Clock:
    """The server's wall clock, at `NOW` until a test moves it."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def make_server(db_url: str, clock: Callable[[], datetime] = lambda: NOW) -> InProcessServer:
    return InProcessServer(
        policy_paths=[POLICIES],
        db_url=db_url,
        clock=clock,
        run_background_tasks=False,
        secret="test-secret-of-at-least-16-bytes",
    )


def open_browser(server: InProcessServer) -> httpx.AsyncClient:
    """A client with no API key: it is only what its cookies make it."""
    return httpx.AsyncClient(transport=server.async_transport(), base_url=server.endpoint)


async def sign_in(server: InProcessServer, client: httpx.AsyncClient, scopes: Sequence[str], name: str) -> str:
    key = await server.acreate_key(name, list(scopes))
    answer = await client.post("/console/sign-in", data={"api_key": key})
    assert answer.status_code == 303, answer.text
    return key


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


def text_of(html: str) -> str:
    """The page's text: tags dropped, whitespace collapsed (entities left as they are)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())
