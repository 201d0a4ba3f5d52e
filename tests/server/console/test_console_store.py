"""The console's two store rooms on SQLite and PostgreSQL: sessions (only the token's hash, expiry, the
key read afresh) and the review queue (pending only, soonest deadline first, overdue left out, the
proposal record's parameters with it)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest

from aegis_sdk.models import Decision
from aegis_server.store import NewDecision, Store, format_timestamp

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()


def _escalation(number: int, deadline: datetime, **parameters: object) -> NewDecision:
    decision = Decision(
        decision_id=f"dec_{number:06d}",
        outcome="ESCALATE",
        reason=f"because {number}",
        risk_score=0.5,
        constraints={},
        timestamp=format_timestamp(T0),
        audit_ref="",
        policy_ids=["base/escalate"],
    )
    return NewDecision(
        decision=decision,
        actor_id=f"agent-{number}",
        capability="payments.transfer",
        params_hash="ab" * 32,
        session_id="sess-1",
        proposal_audit={
            "actor": {"id": f"agent-{number}", "type": "ai-agent"},
            "action": {"capability": "payments.transfer", "parameters": dict(parameters)},
        },
        review_deadline=deadline,
        created_at=T0,
    )


async def test_sessions(store: Store) -> None:
    _, record = await store.create_api_key("rita", ["governance:review"])
    token_hash = hashlib.sha256(b"token").hexdigest()
    await store.console_sessions.create_session(token_hash, record.key_id, now=T0, expires_at=T0 + timedelta(hours=1))
    found = await store.console_sessions.find_session(token_hash)
    assert found is not None and found.api_key is not None
    assert found.api_key.key_id == record.key_id and found.expires_at == T0 + timedelta(hours=1)
    assert await store.console_sessions.find_session(hashlib.sha256(b"other").hexdigest()) is None

    assert await store.revoke_api_key(record.key_id)
    revoked = await store.console_sessions.find_session(token_hash)
    assert revoked is not None and revoked.api_key is None  # the session is there, its key is not usable

    assert await store.console_sessions.delete_session(token_hash)
    assert not await store.console_sessions.delete_session(token_hash)
    assert await store.console_sessions.find_session(token_hash) is None


async def test_expired_sessions_are_removed(store: Store) -> None:
    _, record = await store.create_api_key("rita", ["governance:review"])
    old, new = hashlib.sha256(b"old").hexdigest(), hashlib.sha256(b"new").hexdigest()
    await store.console_sessions.create_session(old, record.key_id, now=T0, expires_at=T0 + timedelta(minutes=5))
    later = T0 + timedelta(minutes=10)
    await store.console_sessions.create_session(new, record.key_id, now=later, expires_at=later + timedelta(hours=1))
    assert await store.console_sessions.find_session(old) is None
    assert await store.console_sessions.find_session(new) is not None
    assert await store.console_sessions.delete_expired_sessions(later + timedelta(hours=2)) == 1


async def test_review_queue(store: Store) -> None:
    await store.record_decision(_escalation(1, T0 + timedelta(minutes=30), amount=1))
    await store.record_decision(_escalation(2, T0 + timedelta(minutes=5), amount=2))
    await store.record_decision(_escalation(3, T0 + timedelta(minutes=1), amount=3))
    await store.resolve_review(
        "dec_000002", approve=False, reviewer="sam", note=None, now=T0, token=None, token_expires_at=None
    )
    items, total = await store.review_queue.pending_reviews(T0, limit=10)
    assert [item.decision.decision_id for item in items] == ["dec_000003", "dec_000001"]
    assert total == 2
    first = items[0]
    assert (first.actor_id, first.actor_type, first.capability, first.session_id) == (
        "agent-3",
        "ai-agent",
        "payments.transfer",
        "sess-1",
    )
    assert first.deadline == T0 + timedelta(minutes=1)
    assert first.proposal is not None and first.proposal["action"]["parameters"] == {"amount": 3}

    items, total = await store.review_queue.pending_reviews(T0, limit=1)
    assert [item.decision.decision_id for item in items] == ["dec_000003"] and total == 2
    items, total = await store.review_queue.pending_reviews(T0 + timedelta(minutes=2), limit=10)
    assert [item.decision.decision_id for item in items] == ["dec_000001"] and total == 1
