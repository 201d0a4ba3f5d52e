"""The stored proposals of a time window, read fast for a replay.

Every decided proposal has a "proposal" audit record (its payload: the actor, the action with the parameters as
audited — sensitive values replaced by keyed hashes — the context, `confirmation`) written in the transaction
of its `decisions` row. A proposal is paired with its decision by `decision_id` in SQL (never by adjacency of
the audit records); the decision's row gives the outcome, the rules, the policy version, the parent of a
confirmation and the time the engine decided at (`created_at`: the audit records are stamped when they are
committed, a few milliseconds later).

The window is `[since, until)` on the audit records' `created_at` (indexed): it is turned into a range of
audit sequence numbers once, and the range is read in slices by sequence (the primary key, and the
`event_type, sequence` index), so a slice costs the same wherever it is in a large table. Rows are read
as raw columns (payload as JSON text, parsed with orjson): no pydantic model per row.
"""

from __future__ import annotations

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
    "a.sequence, a.decision_id, {payload}, d.created_at, d.outcome, {policy_ids}, d.policy_version, "
    "d.parent_decision_id"
)
_SLICE_FROM = (
    " FROM audit_records a JOIN decisions d ON d.decision_id = a.decision_id "
    "WHERE a.event_type = 'proposal' AND a.sequence >= {first} AND a.sequence < {end} ORDER BY a.sequence"
)
_SQLITE_SLICE = (
    "SELECT "
    + _SLICE_COLUMNS.format(payload="a.payload", policy_ids="d.policy_ids")
    + _SLICE_FROM.format(first="?", end="?")
)
_POSTGRES_SLICE = (
    "SELECT "
    + _SLICE_COLUMNS.format(payload="CAST(a.payload AS TEXT)", policy_ids="CAST(d.policy_ids AS TEXT)")
    + _SLICE_FROM.format(first="$1", end="$2")
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
    """Audit sequence numbers `[first, end)`; empty when `first >= end`."""

    first: int
    end: int

    def slices(self, size: int = DEFAULT_SLICE) -> list[SequenceRange]:
        return [SequenceRange(start, min(start + size, self.end)) for start in range(self.first, self.end, size)]

    def split(self, parts: int) -> list[SequenceRange]:
        """`parts` contiguous ranges of (nearly) equal length, in order; fewer when the range is shorter."""
        length = max(0, self.end - self.first)
        parts = max(1, min(parts, length or 1))
        bounds = [self.first + length * index // parts for index in range(parts + 1)]
        return [SequenceRange(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i] < bounds[i + 1]]


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
        """The audit sequence numbers of the records created in `[since, until)`: from the first record created
        at or after `since` to the first created at or after `until` (the end of the chain when none is)."""
        created = audit_records.c.created_at
        sequence = audit_records.c.sequence
        async with self._db.read() as conn:
            first = await conn.scalar(sa.select(sequence).where(created >= since).order_by(created, sequence).limit(1))
            if first is None:
                return SequenceRange(0, 0)
            end = await conn.scalar(sa.select(sequence).where(created >= until).order_by(created, sequence).limit(1))
            if end is None:
                end = int(await conn.scalar(sa.select(sa.func.max(sequence))) or 0) + 1
        return SequenceRange(int(first), max(int(first), int(end)))

    async def read(
        self, sequences: SequenceRange, *, slice_size: int = DEFAULT_SLICE
    ) -> AsyncIterator[list[StoredProposal]]:
        """The decided proposals whose "proposal" record is in `sequences`, one batch per slice of the range
        (an empty slice yields nothing), in sequence order."""
        sql = _POSTGRES_SLICE if self._db.engine.dialect.paramstyle == "numeric_dollar" else _SQLITE_SLICE
        for part in sequences.slices(slice_size):
            async with self._db.read() as conn:
                rows = (await conn.exec_driver_sql(sql, (part.first, part.end))).all()
            if not rows:
                continue
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
            yield batch
