"""The stored proposals of a time window, read fast for a replay.

Every decided proposal has a "proposal" audit record (its payload: the actor, the action with the parameters as
audited — sensitive values replaced by keyed hashes — the context, `confirmation`) written in the transaction
of its `decisions` row. A proposal is paired with its decision by `decision_id` in SQL (never by adjacency of
the audit records); the decision's row gives the rules, the policy version, the parent of a confirmation and
the time the engine decided at (`created_at`: the audit records are stamped when they are committed, a few
milliseconds later). The outcome is the one the engine decided: a reviewer's denial and a review's expiry
rewrite an ESCALATE's `decisions.outcome` to DENY, so a decision that went to review (`review_status` set,
only ever for an ESCALATE) is read as ESCALATE.

The window is `[since, until)` on the "proposal" audit records' `created_at`. `created_at` does not rise with
the sequence everywhere (concurrent writers, replicas with skewed clocks, records stamped with the request's
clock), so the window is first turned into the smallest and largest sequence numbers of the records created
in it (the `created_at` index), a range holding every record of the window and maybe others, and each slice
of that range (the primary key, and the `event_type, sequence` index) keeps only the records created in the
window. A slice costs the same wherever it is in a large table. Rows are read as raw columns (payload as
JSON text, parsed with orjson in a worker thread, so an event loop reading a window keeps serving): no
pydantic model per row.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, NamedTuple, cast

import orjson
import sqlalchemy as sa

from aegis_server.store.database import Room
from aegis_server.store.schema import audit_records

__all__ = ["DEFAULT_SLICE", "ProposalHistory", "SequenceRange", "StoredProposal"]

DEFAULT_SLICE = 20_000
"""Audit sequence numbers read per query (about half of them are "proposal" records)."""

_REDACTED_MARK = "hmac-sha256:"  # engine.SENSITIVE_PREFIX; the store does not import the engine

# One slice, for the driver itself (`exec_driver_sql`: no SQLAlchemy processing per row, a third of the read's
# time), with its placeholders. On PostgreSQL the JSON columns come as text, parsed here with orjson rather than
# by the driver's codec.
_SLICE_COLUMNS = (
    "a.sequence, a.decision_id, {payload}, d.created_at, "
    "CASE WHEN d.review_status IS NULL THEN d.outcome ELSE 'ESCALATE' END, {policy_ids}, d.policy_version, "
    "d.parent_decision_id"
)
_SLICE_FROM = (
    " FROM audit_records a JOIN decisions d ON d.decision_id = a.decision_id "
    "WHERE a.event_type = 'proposal' AND a.sequence >= {first} AND a.sequence < {end} "
    "AND a.created_at >= {since} AND a.created_at < {until} ORDER BY a.sequence"
)
_SQLITE_SLICE = (
    "SELECT "
    + _SLICE_COLUMNS.format(payload="a.payload", policy_ids="d.policy_ids")
    + _SLICE_FROM.format(first="?", end="?", since="?", until="?")
)
_POSTGRES_SLICE = (
    "SELECT "
    + _SLICE_COLUMNS.format(payload="CAST(a.payload AS TEXT)", policy_ids="CAST(d.policy_ids AS TEXT)")
    + _SLICE_FROM.format(first="$1", end="$2", since="$3", until="$4")
)


class StoredProposal(NamedTuple):
    """One decided proposal as stored. `payload` is the "proposal" audit record's payload; `redacted` says the
    payload holds at least one keyed hash of a sensitive value (found in the raw text, before parsing)."""

    sequence: int
    decision_id: str
    decided_at: datetime
    outcome: str
    policy_ids: list[str]
    policy_version: int | None
    parent_decision_id: str | None
    payload: dict[str, Any]
    redacted: bool


class SequenceRange(NamedTuple):
    """Audit sequence numbers `[first, end)` holding every record created in `[since, until)` (and maybe records
    created outside it, which a read skips); empty when `first >= end`."""

    first: int
    end: int
    since: datetime
    until: datetime

    def slices(self, size: int = DEFAULT_SLICE) -> list[SequenceRange]:
        return [
            SequenceRange(start, min(start + size, self.end), self.since, self.until)
            for start in range(self.first, self.end, size)
        ]

    def split(self, parts: int) -> list[SequenceRange]:
        """`parts` contiguous ranges of (nearly) equal length, in order; fewer when the range is shorter."""
        length = max(0, self.end - self.first)
        parts = max(1, min(parts, length or 1))
        bounds = [self.first + length * index // parts for index in range(parts + 1)]
        return [
            SequenceRange(bounds[i], bounds[i + 1], self.since, self.until)
            for i in range(parts)
            if bounds[i] < bounds[i + 1]
        ]


def _utc(value: Any) -> datetime:
    """A `created_at` as read raw: a datetime (PostgreSQL) or SQLite's naive UTC text."""
    if isinstance(value, str):  # naive UTC text (`UTCDateTime`): read as UTC in one call
        moment: datetime = datetime.fromisoformat(value + "+00:00")
        return moment
    aware: datetime = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return aware


def _json(value: Any) -> Any:
    if value is None or isinstance(value, (list, dict)):
        return value
    return orjson.loads(value)


class ProposalHistory(Room):
    """Reads the decided proposals of a window (see the module's docstring)."""

    async def sequence_range(self, since: datetime, until: datetime) -> SequenceRange:
        """The smallest and largest sequence numbers of the audit records created in `[since, until)`, as a
        range with the window (empty when no record was created in it)."""
        created = audit_records.c.created_at
        sequence = audit_records.c.sequence
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(sa.func.min(sequence), sa.func.max(sequence)).where(created >= since, created < until)
                )
            ).one()
        if row[0] is None:
            return SequenceRange(0, 0, since, until)
        return SequenceRange(int(row[0]), int(row[1]) + 1, since, until)

    async def read(
        self, sequences: SequenceRange, *, slice_size: int = DEFAULT_SLICE
    ) -> AsyncIterator[list[StoredProposal]]:
        """The decided proposals whose "proposal" record is in `sequences` and was created in its window, one
        batch per slice of the range (an empty slice yields nothing), in sequence order."""
        postgres = self._db.engine.dialect.paramstyle == "numeric_dollar"
        sql = _POSTGRES_SLICE if postgres else _SQLITE_SLICE
        window: tuple[Any, Any] = (sequences.since, sequences.until)
        since, until = window if postgres else (_sqlite_time(window[0]), _sqlite_time(window[1]))
        for part in sequences.slices(slice_size):
            async with self._db.read() as conn:
                rows = (await conn.exec_driver_sql(sql, (part.first, part.end, since, until))).all()
            if rows:
                yield await asyncio.to_thread(_stored_proposals, rows)


def _sqlite_time(moment: datetime) -> str:
    """`moment` as SQLite stores a `UTCDateTime` (naive UTC text of fixed width), for the driver itself."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _stored_proposals(rows: Any) -> list[StoredProposal]:
    batch: list[StoredProposal] = []
    append = batch.append
    for sequence, decision_id, payload, created_at, outcome, policy_ids, version, parent in cast(
        "list[tuple[Any, ...]]", rows
    ):
        if not isinstance(payload, str):  # a driver that decoded the JSON after all
            payload = orjson.dumps(payload).decode()
        append(
            StoredProposal(
                sequence,
                decision_id,
                _utc(created_at),
                outcome,
                _json(policy_ids) or [],
                version,
                parent,
                orjson.loads(payload),
                _REDACTED_MARK in payload,
            )
        )
    return batch
