"""Statistics of the decisions over a time window, for the console's overview: outcomes per hour or day,
the risk distribution, the top capabilities and actors, review latency and expiries.

Every number is aggregated in SQL (GROUP BY, COUNT, and ORDER BY ... OFFSET for the percentiles), on SQLite
and PostgreSQL alike, so a query returns at most one row per bucket, per risk decile or per top entry,
however many decisions the window holds. Only the time-bucket key and the review latency need an
expression per dialect (`_Dialect`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis_server.store.database import Room
from aegis_server.store.rows import format_timestamp
from aegis_server.store.schema import decisions

__all__ = [
    "MAX_BUCKETS",
    "RISK_BUCKETS",
    "Bucket",
    "BucketSize",
    "Count",
    "Overview",
    "ReviewLatency",
    "Statistics",
    "bucket_starts",
]

BucketSize = Literal["hour", "day"]
RISK_BUCKETS = 10  # deciles of the 0..1 risk score; a score of exactly 1.0 falls in the last one
MAX_BUCKETS = 1000  # a window cut into more time buckets than this is refused
_RESOLVED = ("approved", "denied")
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
# The bucket key as text of the same shape on both backends, parsed back with `_KEY_FORMAT`.
_KEY_FORMAT = {"hour": "%Y-%m-%d %H", "day": "%Y-%m-%d"}
_PG_KEY_FORMAT = {"hour": "YYYY-MM-DD HH24", "day": "YYYY-MM-DD"}
# SQLite keeps UTCDateTime as fixed-width naive UTC text ("2025-01-02 03:04:05.000000"): a prefix is the key.
_SQLITE_KEY_LENGTH = {"hour": 13, "day": 10}


@dataclass(frozen=True)
class Bucket:
    """The decisions created in one hour or day (`start`, UTC) of the window, by outcome."""

    start: datetime
    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Count:
    """A name (a capability, an actor) and how many decisions it had in the window."""

    name: str
    count: int


@dataclass(frozen=True)
class ReviewLatency:
    """Time from a decision to its review's resolution (approved or denied; expiries are not counted), in
    seconds, over the reviews resolved in the window. The percentiles interpolate linearly between the two
    nearest reviews (as PostgreSQL's `percentile_cont`); None when no review was resolved."""

    resolved: int
    median_seconds: float | None
    p90_seconds: float | None


@dataclass(frozen=True)
class Overview:
    """The statistics of the decisions created in [since, until] (the reviews resolved or expired in it).

    `outcomes` has one bucket per hour or day from the one holding `since` to the one holding `until`
    (zeros included); an outcome counts as the decision is now (a denied or expired ESCALATE is a DENY).
    `risk` holds the count of each decile of the risk score, lowest first. `pending_reviews` is the count
    of reviews pending at the time of the query, whatever their age."""

    since: datetime
    until: datetime
    bucket_size: BucketSize
    outcomes: Sequence[Bucket]
    risk: Sequence[int]
    top_capabilities: Sequence[Count]
    top_actors: Sequence[Count]
    review_latency: ReviewLatency
    expired_reviews: int
    pending_reviews: int

    @property
    def total(self) -> int:
        return sum(bucket.total for bucket in self.outcomes)


def _floor(moment: datetime, size: BucketSize) -> datetime:
    moment = moment.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if size == "day" else moment


def bucket_starts(since: datetime, until: datetime, size: BucketSize) -> list[datetime]:
    """The start of every hour or day (UTC) from the one holding `since` to the one holding `until`.
    Raises ValueError when `until` is before `since` or the window would have more than MAX_BUCKETS."""
    if until < since:
        raise ValueError("the window ends before it starts; give `until` after `since`")
    first, last = _floor(since, size), _floor(until, size)
    count = int((last - first) / _STEP[size]) + 1
    if count > MAX_BUCKETS:
        raise ValueError(f"the window holds {count} {size}s; choose a shorter window or a larger bucket")
    return [first + index * _STEP[size] for index in range(count)]


class _Dialect:
    """The expressions that differ between SQLite and PostgreSQL."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres

    def bucket_key(self, size: BucketSize) -> sa.ColumnElement[str]:
        if self.postgres:
            utc = sa.func.timezone(sa.literal_column("'UTC'"), decisions.c.created_at)
            return sa.func.to_char(utc, sa.literal_column(f"'{_PG_KEY_FORMAT[size]}'"), type_=sa.String())
        length: sa.ColumnElement[int] = sa.literal_column(str(_SQLITE_KEY_LENGTH[size]))
        return sa.func.substr(decisions.c.created_at, sa.literal_column("1"), length, type_=sa.String())

    def risk_decile(self) -> sa.ColumnElement[int]:
        # Constants as literals, not parameters: the expression is grouped by, and PostgreSQL only matches a
        # GROUP BY expression with the selected one when both are the same text.
        scaled = decisions.c.risk_score * sa.literal_column(str(RISK_BUCKETS))
        # PostgreSQL rounds a float cast to integer; SQLite truncates (the score is never negative).
        return sa.cast(sa.func.floor(scaled) if self.postgres else scaled, sa.Integer())

    def review_latency(self) -> sa.ColumnElement[float]:
        """Seconds from `created_at` to `review_resolved_at` (RFC 3339 text)."""
        if self.postgres:
            resolved = sa.cast(decisions.c.review_resolved_at, sa.DateTime(timezone=True))
            return sa.cast(sa.extract("epoch", resolved - decisions.c.created_at), sa.Float())
        days = sa.func.julianday(decisions.c.review_resolved_at) - sa.func.julianday(decisions.c.created_at)
        return sa.cast(days * 86400.0, sa.Float())


class Statistics(Room):
    """The aggregate reads behind the console's overview."""

    async def overview(self, since: datetime, until: datetime, bucket_size: BucketSize, *, top: int = 10) -> Overview:
        """The statistics of the decisions created in [since, until] (aware datetimes), in time buckets of
        `bucket_size`, with the `top` capabilities and actors. Raises ValueError for a window
        `bucket_starts` refuses, or a `top` below 1."""
        if since.tzinfo is None or until.tzinfo is None:
            raise ValueError("naive datetime given for the overview window; pass timezone-aware times")
        if top < 1:
            raise ValueError(f"top must be at least 1, got {top}")
        starts = bucket_starts(since, until, bucket_size)
        dialect = _Dialect(self._db.postgres)
        in_window = sa.and_(decisions.c.created_at >= since, decisions.c.created_at <= until)
        resolved_in_window = sa.and_(
            decisions.c.review_resolved_at >= format_timestamp(since),
            decisions.c.review_resolved_at <= format_timestamp(until),
        )
        async with self._db.read() as conn:
            outcomes = await _outcomes(conn, dialect, in_window, starts, bucket_size)
            risk = await _risk(conn, dialect, in_window)
            capabilities = await _top(conn, decisions.c.capability, in_window, top)
            actors = await _top(conn, decisions.c.actor_id, in_window, top)
            latency = await _latency(conn, dialect, resolved_in_window)
            expired = await _count(conn, sa.and_(decisions.c.review_status == "expired", resolved_in_window))
            pending = await _count(conn, decisions.c.review_status == "pending")
        return Overview(
            since=since,
            until=until,
            bucket_size=bucket_size,
            outcomes=outcomes,
            risk=risk,
            top_capabilities=capabilities,
            top_actors=actors,
            review_latency=latency,
            expired_reviews=expired,
            pending_reviews=pending,
        )


async def _outcomes(
    conn: AsyncConnection,
    dialect: _Dialect,
    in_window: sa.ColumnElement[bool],
    starts: Sequence[datetime],
    size: BucketSize,
) -> list[Bucket]:
    key = dialect.bucket_key(size).label("bucket")
    query = (
        sa.select(key, decisions.c.outcome, sa.func.count().label("n"))
        .where(in_window)
        .group_by(key, decisions.c.outcome)
    )
    counts: dict[datetime, dict[str, int]] = {start: {} for start in starts}
    for row in await conn.execute(query):
        start = datetime.strptime(str(row.bucket), _KEY_FORMAT[size]).replace(tzinfo=timezone.utc)
        if start in counts:
            counts[start][str(row.outcome)] = int(row.n)
    return [Bucket(start=start, counts=counts[start]) for start in starts]


async def _risk(conn: AsyncConnection, dialect: _Dialect, in_window: sa.ColumnElement[bool]) -> list[int]:
    decile = dialect.risk_decile().label("decile")
    histogram = [0] * RISK_BUCKETS
    for row in await conn.execute(sa.select(decile, sa.func.count().label("n")).where(in_window).group_by(decile)):
        histogram[min(max(int(row.decile), 0), RISK_BUCKETS - 1)] += int(row.n)
    return histogram


async def _top(
    conn: AsyncConnection, column: sa.Column[Any], in_window: sa.ColumnElement[bool], top: int
) -> list[Count]:
    n = sa.func.count().label("n")
    query = sa.select(column, n).where(in_window).group_by(column).order_by(n.desc(), column).limit(top)
    return [Count(name=str(row[0]), count=int(row.n)) for row in await conn.execute(query)]


async def _count(conn: AsyncConnection, condition: sa.ColumnElement[bool]) -> int:
    return int(await conn.scalar(sa.select(sa.func.count()).select_from(decisions).where(condition)) or 0)


async def _latency(
    conn: AsyncConnection, dialect: _Dialect, resolved_in_window: sa.ColumnElement[bool]
) -> ReviewLatency:
    resolved = sa.and_(decisions.c.review_status.in_(_RESOLVED), resolved_in_window)
    total = await _count(conn, resolved)
    if total == 0:
        return ReviewLatency(resolved=0, median_seconds=None, p90_seconds=None)
    seconds = dialect.review_latency()
    ordered = sa.select(seconds.label("seconds")).where(resolved).order_by(seconds)

    async def percentile(fraction: float) -> float:
        # Linear interpolation between the two nearest ranks; only those two rows are read.
        position = fraction * (total - 1)
        lower = math.floor(position)
        values = [float(row.seconds) for row in await conn.execute(ordered.offset(lower).limit(2))]
        if len(values) == 1 or position == lower:
            return values[0]
        return values[0] + (values[1] - values[0]) * (position - lower)

    return ReviewLatency(resolved=total, median_seconds=await percentile(0.5), p90_seconds=await percentile(0.9))
