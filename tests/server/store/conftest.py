"""Fixtures of the store tests: an open `Store` on each backend and a factory of decisions to record."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from _store_support import T0, FakeClock, MakeDecision

from aegis_sdk.models import Decision
from aegis_server.store import IdempotencyEntry, NewDecision, Store, format_timestamp


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(store_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await Store.open(store_url, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def make_decision() -> MakeDecision:
    counter = itertools.count(1)

    def _make(
        outcome: str = "ALLOW",
        *,
        decision_id: str | None = None,
        actor_id: str = "agent-1",
        capability: str = "database.query",
        session_id: str | None = "sess-1",
        at: datetime = T0,
        token: str | None = None,
        review_deadline: datetime | None = None,
        idempotency: tuple[str, str, str] | None = None,
        consumes_token_of: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> NewDecision:
        number = next(counter)
        if token is None and outcome == "REQUIRE_CONFIRMATION":
            token = f"token-{number}"
        expires_at = None
        if outcome == "REQUIRE_CONFIRMATION":
            expires_at = format_timestamp(at + timedelta(minutes=5))
        if outcome == "ESCALATE" and review_deadline is None:
            review_deadline = at + timedelta(hours=1)
        decision = Decision(
            decision_id=decision_id or f"dec_{number:06d}",
            outcome=outcome,  # type: ignore[arg-type]
            reason=f"because {number}",
            risk_score=0.25,
            constraints={"max_rows": 100},
            timestamp=format_timestamp(at),
            audit_ref="",
            policy_ids=["base/1"],
            confirmation_token=token,
            expires_at=expires_at,
            parent_decision_id=consumes_token_of,
        )
        return NewDecision(
            decision=decision,
            actor_id=actor_id,
            capability=capability,
            params_hash="ab" * 32,
            session_id=session_id,
            proposal_audit={
                "actor": {"id": actor_id, "type": "ai-agent"},
                "action": {"capability": capability, "parameters": parameters or {"query": "SELECT 1"}},
            },
            review_deadline=review_deadline,
            idempotency=IdempotencyEntry(*idempotency) if idempotency else None,
            consumes_token_of=consumes_token_of,
        )

    return _make
