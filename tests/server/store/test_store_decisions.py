"""Decisions: record/get/list/paging, idempotency, single-use tokens, reviews and executions (both backends)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
import sqlalchemy as sa
from _store_support import T0, FakeClock, MakeDecision
from pydantic import TypeAdapter

from aegis_sdk.models import Decision, ExecutionError, ExecutionReport
from aegis_server.store import (
    AlreadyReported,
    AuditFilters,
    DecisionFilters,
    IdempotencyConflict,
    InvalidCursor,
    NotAllowed,
    NotFound,
    NotPending,
    Store,
    TokenAlreadyUsed,
)
from aegis_server.store.engine import POOL_SIZE


async def test_record_then_get_round_trips_the_decision(store: Store, make_decision: MakeDecision) -> None:
    record = make_decision("REQUIRE_CONFIRMATION")
    stored = await store.record_decision(record)
    assert stored.audit_ref.startswith("aud_")
    assert stored.decision_id == record.decision.decision_id
    assert stored.confirmation_token == record.decision.confirmation_token
    assert stored.expires_at == record.decision.expires_at
    assert stored.timestamp == record.decision.timestamp
    assert (stored.constraints, stored.policy_ids, stored.risk_score) == ({"max_rows": 100}, ["base/1"], 0.25)
    assert await store.get_decision(stored.decision_id) == stored
    assert await store.get_decision("dec_missing") is None

    binding = await store.get_decision_binding(stored.decision_id)
    assert binding is not None
    assert (binding.actor_id, binding.capability, binding.params_hash) == ("agent-1", "database.query", "ab" * 32)
    assert binding.outcome == "REQUIRE_CONFIRMATION" and not binding.token_used
    assert binding.token_expires_at == T0 + timedelta(minutes=5)


async def test_decision_and_its_audit_records_are_committed_together(store: Store, make_decision: MakeDecision) -> None:
    stored = await store.record_decision(make_decision("DENY"))
    trail = await store.audit_trail(stored.decision_id)
    assert [r.event_type for r in trail] == ["proposal", "decision"]
    assert trail[1].audit_ref == stored.audit_ref and trail[1].outcome == "DENY"
    assert trail[0].payload["action"]["parameters"] == {"query": "SELECT 1"}
    assert (await store.verify_chain()).valid


async def test_list_filters_and_keyset_pages(store: Store, make_decision: MakeDecision) -> None:
    ids = []
    for i in range(7):
        outcome = "ALLOW" if i % 2 == 0 else "DENY"
        record = make_decision(outcome, actor_id=f"agent-{i % 3}", at=T0 + timedelta(minutes=i))
        ids.append((await store.record_decision(record)).decision_id)

    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = await store.list_decisions(DecisionFilters(), 3, cursor)
        seen.extend(d.decision_id for d in page)
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, nothing repeated or lost

    page, cursor = await store.list_decisions(DecisionFilters(order="asc"), 10, None)
    assert [d.decision_id for d in page] == ids and cursor is None

    allowed, _ = await store.list_decisions(DecisionFilters(outcome="ALLOW"), 10, None)
    assert {d.decision_id for d in allowed} == {ids[0], ids[2], ids[4], ids[6]}
    by_actor, _ = await store.list_decisions(DecisionFilters(actor_id="agent-1"), 10, None)
    assert {d.decision_id for d in by_actor} == {ids[1], ids[4]}
    window, _ = await store.list_decisions(
        DecisionFilters(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4)), 10, None
    )
    assert {d.decision_id for d in window} == {ids[2], ids[3]}
    none, cursor = await store.list_decisions(DecisionFilters(session_id="other"), 10, None)
    assert none == [] and cursor is None


async def test_paging_is_stable_when_decisions_arrive_between_pages(store: Store, make_decision: MakeDecision) -> None:
    first = [(await store.record_decision(make_decision())).decision_id for _ in range(4)]
    page1, cursor = await store.list_decisions(DecisionFilters(), 2, None)
    await store.record_decision(make_decision())  # a newer decision arrives meanwhile
    page2, cursor2 = await store.list_decisions(DecisionFilters(), 2, cursor)
    assert [d.decision_id for d in page1 + page2] == list(reversed(first))
    assert cursor2 is None or (await store.list_decisions(DecisionFilters(), 2, cursor2))[0] == []


async def test_bad_cursors_and_limits_are_rejected(store: Store) -> None:
    with pytest.raises(InvalidCursor):
        await store.list_decisions(DecisionFilters(), 10, "not-a-cursor!")
    _, audit_cursor = await store.audit_log(DecisionFilters(), 1, None)
    await store.append_audit("test", payload={})
    await store.append_audit("test", payload={})
    _, audit_cursor = await store.audit_log(DecisionFilters(), 1, None)
    assert audit_cursor is not None
    with pytest.raises(InvalidCursor, match="audit"):
        await store.list_decisions(DecisionFilters(), 10, audit_cursor)
    with pytest.raises(ValueError, match="limit"):
        await store.list_decisions(DecisionFilters(), 0, None)


async def test_idempotency_key_replays_and_conflicts(store: Store, make_decision: MakeDecision) -> None:
    first = await store.record_decision(make_decision(idempotency=("key_a", "idem-1", "hash-1")))
    found = await store.find_idempotent("key_a", "idem-1")
    assert found == ("hash-1", first)
    assert await store.find_idempotent("key_b", "idem-1") is None  # keys are per API key

    # The same key and request recorded again (a lost race) answers the stored decision, writes nothing.
    again = await store.record_decision(make_decision(idempotency=("key_a", "idem-1", "hash-1")))
    assert again == first
    assert len(await store.audit_trail(first.decision_id)) == 2
    page, _ = await store.list_decisions(DecisionFilters(), 10, None)
    assert len(page) == 1

    with pytest.raises(IdempotencyConflict) as info:
        await store.record_decision(make_decision(idempotency=("key_a", "idem-1", "hash-2")))
    assert info.value.decision_id == first.decision_id
    # What the key holds comes with the conflict: the caller answers without reading it again.
    assert (info.value.request_hash, info.value.decision) == ("hash-1", first)


async def test_a_burst_of_idempotency_lookups_stays_within_the_connection_pool(
    store: Store, make_decision: MakeDecision
) -> None:
    """On PostgreSQL each lookup takes a pooled connection: a burst must not open overflow connections (each
    was opened for one SELECT and closed again, ~150 ms tails at 400 proposals/s). SQLite reads on the
    event loop's own connection."""
    await store.record_decision(make_decision(idempotency=("key_a", "burst", "hash-1")))
    pool = store.engine.sync_engine.pool
    busiest = 0

    def on_checkout(*_: object) -> None:
        nonlocal busiest
        busiest = max(busiest, pool.checkedout())  # type: ignore[attr-defined]

    sa.event.listen(store.engine.sync_engine, "checkout", on_checkout)
    try:
        found = await asyncio.gather(*(store.find_idempotent("key_a", "burst") for _ in range(60)))
    finally:
        sa.event.remove(store.engine.sync_engine, "checkout", on_checkout)
    assert all(entry is not None and entry[0] == "hash-1" for entry in found)
    assert busiest <= POOL_SIZE - 2


async def test_idempotency_race_resolves_to_one_decision(store: Store, make_decision: MakeDecision) -> None:
    records = [make_decision(idempotency=("key_a", "race", "same-request")) for _ in range(8)]
    results = await asyncio.gather(*(store.record_decision(r) for r in records))
    assert len({d.decision_id for d in results}) == 1
    page, _ = await store.list_decisions(DecisionFilters(), 50, None)
    assert [d.decision_id for d in page] == [results[0].decision_id]
    assert (await store.verify_chain()).records_checked == 2


async def test_token_is_single_use_under_concurrency(store: Store, make_decision: MakeDecision) -> None:
    parent = await store.record_decision(make_decision("REQUIRE_CONFIRMATION"))
    attempts = [make_decision("ALLOW", consumes_token_of=parent.decision_id) for _ in range(2)]
    results = await asyncio.gather(*(store.record_decision(a) for a in attempts), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0], TokenAlreadyUsed)
    assert winners[0].parent_decision_id == parent.decision_id

    binding = await store.get_decision_binding(parent.decision_id)
    assert binding is not None and binding.token_used and binding.token_used_by == winners[0].decision_id
    # The loser left nothing behind: no decision row, no audit records.
    loser_id = next(a.decision.decision_id for a in attempts if a.decision.decision_id != winners[0].decision_id)
    assert await store.get_decision(loser_id) is None
    assert await store.audit_trail(loser_id) == []
    assert [r.event_type for r in await store.audit_trail(parent.decision_id)] == [
        "proposal",
        "decision",
        "confirmation",
    ]
    with pytest.raises(NotFound):
        await store.record_decision(make_decision("ALLOW", consumes_token_of="dec_nope"))


async def test_review_approve_stores_token_and_is_audited(
    store: Store, make_decision: MakeDecision, clock: FakeClock
) -> None:
    escalated = await store.record_decision(make_decision("ESCALATE"))
    assert escalated.review is not None and escalated.review.status == "pending"
    assert escalated.expires_at is not None  # the review deadline
    pending, _ = await store.list_decisions(DecisionFilters(review_status="pending"), 10, None)
    assert [d.decision_id for d in pending] == [escalated.decision_id]

    now = clock.advance(60)
    approved = await store.resolve_review(
        escalated.decision_id,
        approve=True,
        reviewer="ops",
        note="fine",
        now=now,
        token="approval-token",
        token_expires_at=now + timedelta(minutes=5),
    )
    assert approved.review is not None
    assert (approved.review.status, approved.review.reviewer, approved.review.note) == ("approved", "ops", "fine")
    assert approved.confirmation_token == "approval-token" and approved.outcome == "ESCALATE"
    assert approved.expires_at is not None and approved.expires_at.startswith("2025-01-02T03:10:05")
    assert await store.get_decision(escalated.decision_id) == approved
    trail = await store.audit_trail(escalated.decision_id)
    assert trail[-1].event_type == "review" and trail[-1].payload["status"] == "approved"
    assert "approval-token" not in str(trail[-1].payload)

    with pytest.raises(NotPending) as info:
        await store.resolve_review(escalated.decision_id, approve=False, reviewer="x", note=None, now=now)
    assert info.value.status == "approved"
    allowed = await store.record_decision(make_decision())
    with pytest.raises(NotPending) as info:
        await store.resolve_review(allowed.decision_id, approve=False, reviewer="x", note=None, now=now)
    assert info.value.status == "not_escalated"
    with pytest.raises(NotFound):
        await store.resolve_review("dec_missing", approve=False, reviewer="x", note=None, now=now)


async def test_concurrent_reviews_resolve_once(store: Store, make_decision: MakeDecision, clock: FakeClock) -> None:
    escalated = await store.record_decision(make_decision("ESCALATE"))
    results = await asyncio.gather(
        *(
            store.resolve_review(escalated.decision_id, approve=False, reviewer=f"r{i}", note=None, now=clock.now)
            for i in range(3)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, NotPending) for r in results if isinstance(r, BaseException))
    assert [r.event_type for r in await store.audit_trail(escalated.decision_id)].count("review") == 1
    denied = await store.get_decision(escalated.decision_id)
    assert denied is not None and denied.outcome == "DENY" and denied.review is not None
    assert denied.review.status == "denied"
    with pytest.raises(NotPending) as info:
        await store.resolve_review(
            escalated.decision_id,
            approve=True,
            reviewer="x",
            note=None,
            now=clock.now,
            token="t",
            token_expires_at=clock.now,
        )
    assert info.value.status == "denied"


async def test_reviews_expire_after_their_deadline(store: Store, make_decision: MakeDecision, clock: FakeClock) -> None:
    soon = await store.record_decision(make_decision("ESCALATE", review_deadline=T0 + timedelta(minutes=10)))
    later = await store.record_decision(make_decision("ESCALATE", review_deadline=T0 + timedelta(hours=2)))
    assert await store.expire_due_reviews(T0 + timedelta(minutes=9)) == []
    assert await store.expire_due_reviews(T0 + timedelta(minutes=10)) == [soon.decision_id]
    assert await store.expire_due_reviews(T0 + timedelta(minutes=11)) == []

    expired = await store.get_decision(soon.decision_id)
    assert expired is not None and expired.review is not None and expired.review.status == "expired"
    assert expired.outcome == "DENY"  # the final outcome; the audit's "decision" record keeps ESCALATE
    assert [r.outcome for r in await store.audit_trail(soon.decision_id)][1] == "ESCALATE"
    last = (await store.audit_trail(soon.decision_id))[-1]
    assert (last.event_type, last.outcome, last.payload["final_outcome"]) == ("review_expired", "DENY", "DENY")
    with pytest.raises(NotPending) as info:
        await store.resolve_review(
            soon.decision_id, approve=True, reviewer="x", note=None, now=T0, token="t", token_expires_at=T0
        )
    assert info.value.status == "expired"

    # A review attempted after the deadline, before any sweep, expires the decision and is refused.
    with pytest.raises(NotPending) as info:
        await store.resolve_review(
            later.decision_id, approve=False, reviewer="x", note=None, now=T0 + timedelta(hours=3)
        )
    assert info.value.status == "expired"
    assert (await store.get_decision(later.decision_id)).review.status == "expired"  # type: ignore[union-attr]
    assert (await store.verify_chain()).valid


async def test_execution_is_reported_once_and_only_after_allow(store: Store, make_decision: MakeDecision) -> None:
    allowed = await store.record_decision(make_decision("ALLOW"))
    denied = await store.record_decision(make_decision("DENY"))
    report = ExecutionReport(status="FAILED", error=ExecutionError(code="timeout", message="slow"), duration_ms=12.5)
    record = await store.record_execution(allowed.decision_id, report, T0)
    assert (record.decision_id, record.status) == (allowed.decision_id, "FAILED")
    assert record.recorded_at == "2025-01-02T03:04:05.000000Z"
    trail = await store.audit_trail(allowed.decision_id)
    assert trail[-1].event_type == "execution" and trail[-1].audit_ref == record.audit_ref
    assert trail[-1].payload["error"] == {"code": "timeout", "message": "slow"}
    stored = await store.get_execution(allowed.decision_id)
    assert stored is not None and stored["duration_ms"] == 12.5

    with pytest.raises(AlreadyReported):
        await store.record_execution(allowed.decision_id, ExecutionReport(status="SUCCESS"), T0)
    with pytest.raises(NotAllowed) as info:
        await store.record_execution(denied.decision_id, ExecutionReport(status="SUCCESS"), T0)
    assert info.value.outcome == "DENY"
    with pytest.raises(NotFound):
        await store.record_execution("dec_missing", ExecutionReport(status="SUCCESS"), T0)


async def test_concurrent_execution_reports_record_one(store: Store, make_decision: MakeDecision) -> None:
    allowed = await store.record_decision(make_decision("ALLOW"))
    results = await asyncio.gather(
        *(
            store.record_execution(allowed.decision_id, ExecutionReport(status="SUCCESS", result={"n": i}), T0)
            for i in range(4)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, AlreadyReported) for r in results if isinstance(r, BaseException))


async def test_concurrent_sweeps_expire_each_review_once(store_url: str, make_decision: MakeDecision) -> None:
    stores = [await Store.open(store_url) for _ in range(3)]
    try:
        ids = {
            (
                await stores[0].record_decision(make_decision("ESCALATE", review_deadline=T0 + timedelta(seconds=i)))
            ).decision_id
            for i in range(30)
        }
        results = await asyncio.gather(*(s.expire_due_reviews(T0 + timedelta(hours=1)) for s in stores))
        expired = [decision_id for result in results for decision_id in result]
        assert sorted(expired) == sorted(ids)  # each exactly once, across all sweepers
        records, _ = await stores[0].audit_log(AuditFilters(event_type="review_expired"), 100, None)
        assert len(records) == 30
        assert (await stores[0].verify_chain()).valid
    finally:
        for s in stores:
            await s.close()


@pytest.mark.parametrize(
    ("constraints", "audit_ref"),
    [({"max_rows": 100}, "aud_given"), ({"max_amount": 500.0, "strict": True}, ""), ({"note": "e\u0301"}, "aud_x")],
)
async def test_a_recorded_decision_answers_as_it_reads_back(
    store: Store, make_decision: MakeDecision, constraints: dict[str, object], audit_ref: str
) -> None:
    record = make_decision("ALLOW")
    record = dataclasses.replace(
        record, decision=dataclasses.replace(record.decision, constraints=constraints, audit_ref=audit_ref)
    )
    answered = await store.record_decision(record)
    stored = await store.get_decision(answered.decision_id)
    assert stored is not None
    as_json = TypeAdapter(Decision).dump_json
    assert as_json(answered) == as_json(stored)  # 500.0 is answered as stored (500), é in NFC, the made audit_ref
    assert answered.audit_ref == (audit_ref or stored.audit_ref) and answered.audit_ref.startswith("aud_")


async def test_a_cancelled_request_leaves_its_batch_whole(store: Store, make_decision: MakeDecision) -> None:
    # A request cancelled while its decision waits for the group commit (a client gone, a timeout): the
    # batch's other decisions are answered, and the cancelled one is stored and audited all the same.
    records = [make_decision("ALLOW") for _ in range(3)]
    waiting = [asyncio.ensure_future(store.record_decision(record)) for record in records]
    await asyncio.sleep(0)  # each has joined the batch
    waiting[1].cancel()
    answered = [await waiting[0], await waiting[2]]
    with pytest.raises(asyncio.CancelledError):
        await waiting[1]
    for decision in answered:
        assert await store.get_decision(decision.decision_id) == decision
    cancelled = await store.get_decision(records[1].decision.decision_id)
    assert cancelled is not None and cancelled.outcome == "ALLOW"
    assert (await store.verify_chain()).valid
