"""What the replay reads as each stored proposal's original decision and which proposals a window holds, on
SQLite and PostgreSQL: the outcome the engine decided (not the one a review wrote later), and every proposal
whose "proposal" audit record was created in the window however the records' times are ordered."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from conftest import STRICTER, Clock, Recorded, record_session

from aegis_server.engine import EngineConfig
from aegis_server.inprocess import InProcessServer
from aegis_server.replay import ReplayReport, candidate_from_files, replay_stored

WIDE = (datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))


async def _replay(server: InProcessServer, window: tuple[datetime, datetime] = WIDE) -> ReplayReport:
    store = server.service.store
    candidate = await candidate_from_files(store, STRICTER)
    return await replay_stored(
        store, candidate.policy_set, since=window[0], until=window[1], config=EngineConfig(), samples=100
    )


async def _review(server: InProcessServer, clock: Clock, item: Recorded, *, approve: bool) -> None:
    """Approve or deny `item` at the time it was decided (within its review deadline)."""
    clock.now, then = item.decided_at, clock.now
    decision_id = item.decision_id
    reviewer = server.async_http_client(await server.acreate_key(f"reviewer-{decision_id}", ["governance:review"]))
    response = await reviewer.post(
        f"/api/v1/governance/decisions/{decision_id}/review", json={"approve": approve, "note": "checked"}
    )
    assert response.status_code == 200, response.text
    clock.now = then


async def test_reviewed_and_expired_escalations_replay_unchanged_under_their_own_set(
    store_url: str, clock: Clock
) -> None:
    async with InProcessServer(policy_paths=[STRICTER], db_url=store_url, clock=clock) as server:
        recorded = await record_session(server, clock, 24)
        escalated = [item for item in recorded if item.outcome == "ESCALATE"]
        assert len(escalated) >= 3
        await _review(server, clock, escalated[0], approve=False)
        await _review(server, clock, escalated[1], approve=True)
        expired = await server.service.store.reviews.expire_due_reviews(clock.now + timedelta(days=30))
        assert escalated[2].decision_id in expired
        denied = await server.service.store.get_decision(escalated[0].decision_id)
        assert denied is not None and denied.outcome == "DENY"  # what a reviewer's denial writes

        report = await _replay(server)
        assert report.transitions == []
        assert report.totals.changed == 0
        assert report.totals.unchanged == report.totals.replayed > len(escalated)


async def test_the_window_holds_the_proposals_created_in_it_whatever_else_was_written_between(
    store_url: str, clock: Clock
) -> None:
    # The review's audit record is stamped with the decision clock (2030), the proposals' with the real time:
    # created_at does not rise with the sequence.
    async with InProcessServer(policy_paths=[STRICTER], db_url=store_url, clock=clock) as server:
        before = await record_session(server, clock, 24)
        escalated = next(item for item in before if item.outcome == "ESCALATE")
        await _review(server, clock, escalated, approve=False)
        after = await record_session(server, clock, 12, seed=18)
        real_now = datetime.now(timezone.utc)

        around_now = await _replay(server, (real_now - timedelta(hours=1), real_now + timedelta(hours=1)))
        assert around_now.totals.stored == len(before) + len(after)

        around_review = await _replay(server, (clock.now - timedelta(days=1), clock.now + timedelta(days=1)))
        assert WIDE[0] < clock.now - timedelta(days=1) and real_now + timedelta(hours=1) < clock.now - timedelta(days=1)
        assert around_review.totals.stored == 0

        later = await _replay(server, (real_now + timedelta(minutes=1), datetime(2100, 1, 1, tzinfo=timezone.utc)))
        assert later.totals.stored == 0
