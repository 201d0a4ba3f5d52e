"""`Store.statistics.overview` against the known decisions of `_seed`, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest
from _seed import NOW, XSS_CAPABILITY, seed

from aegis_server.store import Store
from aegis_server.store.statistics import MAX_BUCKETS, Bucket, Count, bucket_starts


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(store_url, clock=lambda: NOW)
    try:
        yield opened
    finally:
        await opened.close()


def _non_empty(buckets: list[Bucket] | tuple[Bucket, ...]) -> dict[str, dict[str, int]]:
    return {b.start.strftime("%m-%d %H"): dict(b.counts) for b in buckets if b.total}


async def test_the_last_24_hours(store: Store) -> None:
    await seed(store)
    overview = await store.statistics.overview(NOW - timedelta(hours=24), NOW, "hour")

    # 25 hourly buckets: the one holding 12:30 yesterday to the one holding 12:30 today
    assert len(overview.outcomes) == 25
    assert overview.outcomes[0].start == datetime(2029, 12, 31, 12, tzinfo=timezone.utc)
    assert overview.outcomes[-1].start == datetime(2030, 1, 1, 12, tzinfo=timezone.utc)
    # an outcome counts as the decision is now: denied and expired ESCALATEs are DENYs
    assert _non_empty(list(overview.outcomes)) == {
        "12-31 16": {"DENY": 1},  # expired
        "01-01 05": {"DENY": 1},  # denied
        "01-01 06": {"DENY": 1},  # denied
        "01-01 07": {"ESCALATE": 1},  # approved
        "01-01 10": {"REQUIRE_CONFIRMATION": 1},
        "01-01 11": {"ALLOW": 1, "DENY": 1},
        "01-01 12": {"ALLOW": 2, "ESCALATE": 1},
    }
    assert overview.total == 10
    # deciles: 0.05 | 0.15 0.15 | - | - | 0.45 | 0.55 | 0.65 | 0.75 | 0.85 | 0.95 1.0
    assert list(overview.risk) == [1, 2, 0, 0, 1, 1, 1, 1, 1, 2]
    assert list(overview.top_capabilities) == [
        Count("database.query", 3),
        Count("files.delete", 3),
        Count("payments.refund", 3),
        Count(XSS_CAPABILITY, 1),
    ]
    assert list(overview.top_actors) == [
        Count("agent-1", 4),
        Count("agent-3", 3),
        Count("agent-2", 2),
        Count("agent-4", 1),
    ]
    # reviews resolved 60, 120 and 600 s after their decisions: median 120, p90 = 120 + 0.8 * 480
    assert overview.review_latency.resolved == 3
    assert overview.review_latency.median_seconds == pytest.approx(120, abs=0.01)
    assert overview.review_latency.p90_seconds == pytest.approx(504, abs=0.01)
    assert overview.expired_reviews == 1
    assert overview.pending_reviews == 1


async def test_daily_buckets_over_7_and_30_days(store: Store) -> None:
    await seed(store)
    week = await store.statistics.overview(NOW - timedelta(days=7), NOW, "day")
    assert [b.start.day for b in week.outcomes] == [25, 26, 27, 28, 29, 30, 31, 1]
    assert _non_empty(list(week.outcomes)) == {
        "12-31 00": {"ALLOW": 1, "DENY": 1},  # 30 h ago, and the expired review
        "01-01 00": {"ALLOW": 3, "DENY": 3, "REQUIRE_CONFIRMATION": 1, "ESCALATE": 2},
    }
    assert week.total == 11
    assert week.risk[2] == 1  # the 0.25 of 30 h ago

    month = await store.statistics.overview(NOW - timedelta(days=30), NOW, "day")
    assert len(month.outcomes) == 31
    assert month.total == 12
    assert _non_empty(list(month.outcomes))["12-22 00"] == {"DENY": 1}
    assert month.top_actors[0] == Count("agent-1", 6)


async def test_a_window_with_nothing_in_it(store: Store) -> None:
    await seed(store)
    since = NOW + timedelta(days=1)
    overview = await store.statistics.overview(since, since + timedelta(hours=2), "hour")
    assert [b.total for b in overview.outcomes] == [0, 0, 0]
    assert list(overview.risk) == [0] * 10
    assert list(overview.top_capabilities) == [] and list(overview.top_actors) == []
    assert overview.review_latency.resolved == 0
    assert overview.review_latency.median_seconds is None and overview.review_latency.p90_seconds is None
    assert overview.expired_reviews == 0
    assert overview.pending_reviews == 1  # pending now, whatever the window


async def test_top_is_limited_and_ties_break_by_name(store: Store) -> None:
    await seed(store)
    overview = await store.statistics.overview(NOW - timedelta(hours=24), NOW, "hour", top=2)
    assert list(overview.top_capabilities) == [Count("database.query", 3), Count("files.delete", 3)]


async def test_bad_windows_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        await store.statistics.overview(NOW, NOW - timedelta(hours=1), "hour")
    with pytest.raises(ValueError, match="shorter window"):
        await store.statistics.overview(NOW - timedelta(hours=MAX_BUCKETS + 1), NOW, "hour")
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.statistics.overview(NOW.replace(tzinfo=None), NOW, "hour")
    with pytest.raises(ValueError, match="top"):
        await store.statistics.overview(NOW - timedelta(hours=1), NOW, "hour", top=0)


def test_bucket_starts_are_aligned_to_utc_hours_and_days() -> None:
    plus_two = timezone(timedelta(hours=2))
    since = datetime(2030, 1, 1, 23, 59, tzinfo=plus_two)  # 21:59 UTC
    assert bucket_starts(since, since + timedelta(minutes=2), "hour") == [
        datetime(2030, 1, 1, 21, tzinfo=timezone.utc),
        datetime(2030, 1, 1, 22, tzinfo=timezone.utc),
    ]
    assert bucket_starts(since, since + timedelta(hours=3), "day") == [
        datetime(2030, 1, 1, tzinfo=timezone.utc),
        datetime(2030, 1, 2, tzinfo=timezone.utc),
    ]
