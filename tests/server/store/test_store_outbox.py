"""The outbox of webhook events: each event is committed in the transaction of the decision or review it
is about, and only then (both backends; on SQLite a file, so the group commit's batch writer is used)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from _store_support import FakeClock, MakeDecision

from aegis_server.store import IdempotencyConflict, Store
from aegis_server.store.schema import webhook_events


async def _events(store: Store) -> list[Any]:
    async with store.database.read() as conn:
        return list((await conn.execute(sa.select(webhook_events).order_by(webhook_events.c.row_id))).all())


async def test_deny_and_escalate_are_events_and_allow_is_not(store: Store, make_decision: MakeDecision) -> None:
    woken: list[int] = []
    store.database.add_event_listener(lambda: woken.append(1))
    decided = await asyncio.gather(
        store.record_decision(make_decision("ALLOW")),
        store.record_decision(make_decision("DENY", capability="payments.refund")),
        store.record_decision(make_decision("ESCALATE", actor_id="bot-7")),
        store.record_decision(make_decision("REQUIRE_CONFIRMATION")),
    )
    events = await _events(store)
    assert [(e.event_type, e.decision_id) for e in events] == [
        ("decision.denied", decided[1].decision_id),
        ("decision.escalated", decided[2].decision_id),
    ]
    escalated = events[1]
    assert escalated.event_id.startswith("msg_") and escalated.event_id != events[0].event_id
    assert escalated.dispatched_at is None
    assert escalated.data["actor"] == {"id": "bot-7", "type": "ai-agent"}
    assert escalated.data["outcome"] == "ESCALATE" and escalated.data["review"]["status"] == "pending"
    assert escalated.data["review"]["deadline"] is not None
    assert events[0].capability == "payments.refund" and events[0].risk_score == 0.25
    assert "parameters" not in escalated.data  # values may be sensitive: events name the decision only
    assert woken  # the dispatcher and the console's live inbox are woken after the commit


async def test_a_rolled_back_decision_leaves_no_event(store: Store, make_decision: MakeDecision) -> None:
    first = await store.record_decision(make_decision("DENY", idempotency=("key_a", "idem-1", "hash-1")))
    with pytest.raises(IdempotencyConflict):
        await store.record_decision(make_decision("DENY", idempotency=("key_a", "idem-1", "hash-2")))
    replay = await store.record_decision(make_decision("DENY", idempotency=("key_a", "idem-1", "hash-1")))
    assert replay.decision_id == first.decision_id
    assert [e.decision_id for e in await _events(store)] == [first.decision_id]


async def test_concurrent_batch_with_a_conflict_writes_one_event_per_decision(
    store: Store, make_decision: MakeDecision
) -> None:
    # The batch holding a reused Idempotency-Key is rolled back and each record written alone: the
    # events follow their decisions, none twice.
    records = [make_decision("DENY", idempotency=("key_a", "same", "hash-1")) for _ in range(3)]
    records += [make_decision("ESCALATE") for _ in range(5)]
    decided = await asyncio.gather(*(store.record_decision(record) for record in records))
    stored_ids = {decision.decision_id for decision in decided}
    events = await _events(store)
    assert len(stored_ids) == 6
    assert sorted(e.decision_id for e in events) == sorted(stored_ids)


async def test_review_resolution_and_expiry_are_events(
    store: Store, make_decision: MakeDecision, clock: FakeClock
) -> None:
    approved = await store.record_decision(make_decision("ESCALATE"))
    denied = await store.record_decision(make_decision("ESCALATE"))
    left = await store.record_decision(make_decision("ESCALATE"))
    now = clock.advance(60)
    await store.resolve_review(
        approved.decision_id,
        approve=True,
        reviewer="ops",
        note="fine",
        now=now,
        token="tok",
        token_expires_at=now + timedelta(minutes=5),
    )
    await store.resolve_review(denied.decision_id, approve=False, reviewer="ops", note="no", now=now)
    expired = await store.expire_due_reviews(clock.advance(2 * 3600))
    assert expired == [left.decision_id]
    review_events = [e for e in await _events(store) if e.event_type.startswith("review.")]
    assert [(e.event_type, e.decision_id, e.data["review"]["status"]) for e in review_events] == [
        ("review.resolved", approved.decision_id, "approved"),
        ("review.resolved", denied.decision_id, "denied"),
        ("review.expired", left.decision_id, "expired"),
    ]
    assert review_events[0].data["review"]["note"] == "fine" and review_events[0].data["outcome"] == "ESCALATE"
    assert review_events[1].data["outcome"] == "DENY"
    assert review_events[2].data["outcome"] == "DENY"
    assert "token" not in str(review_events[0].data)  # the approval token never leaves the store this way


async def test_concurrent_reviews_write_one_resolution_event(
    store: Store, make_decision: MakeDecision, clock: FakeClock
) -> None:
    escalated = await store.record_decision(make_decision("ESCALATE"))
    results = await asyncio.gather(
        *(
            store.resolve_review(escalated.decision_id, approve=False, reviewer=f"r{i}", note=None, now=clock.now)
            for i in range(4)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(result, BaseException) for result in results) == 1
    resolved = [e for e in await _events(store) if e.event_type == "review.resolved"]
    assert len(resolved) == 1


async def test_a_review_after_the_deadline_writes_the_expiry_event(
    store: Store, make_decision: MakeDecision, clock: FakeClock
) -> None:
    escalated = await store.record_decision(make_decision("ESCALATE"))
    late = clock.advance(2 * 3600)
    with pytest.raises(Exception, match="expired"):
        await store.resolve_review(escalated.decision_id, approve=False, reviewer="ops", note=None, now=late)
    assert [e.event_type for e in await _events(store) if e.decision_id == escalated.decision_id] == [
        "decision.escalated",
        "review.expired",
    ]
