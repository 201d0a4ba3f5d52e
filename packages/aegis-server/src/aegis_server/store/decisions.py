"""Decisions: recording one (through the group commit, or alone when it consumes a token), reading it,
what its confirmation token is bound to, and the keyset-paged listing."""

from __future__ import annotations

import sqlalchemy as sa

from aegis_sdk.models import Decision
from aegis_server.store.cursors import keyset_page
from aegis_server.store.database import Database, Room
from aegis_server.store.errors import NotFound, TokenAlreadyUsed
from aegis_server.store.filters import DecisionFilters, where_equal
from aegis_server.store.group_commit import GroupCommit
from aegis_server.store.idempotency import IdempotencyKeys, IdempotentReplay
from aegis_server.store.outbox import decision_event_rows
from aegis_server.store.records import DecisionBinding, NewDecision
from aegis_server.store.rows import (
    as_stored,
    binding_from_row,
    decision_audit_entries,
    decision_from_row,
    decision_row,
    idempotency_row,
)
from aegis_server.store.schema import decisions, webhook_events

__all__ = ["Decisions"]


class Decisions(Room):
    """The decisions of one database. `group_commit` writes the decisions that consume no token."""

    def __init__(self, database: Database, idempotency: IdempotencyKeys) -> None:
        super().__init__(database)
        self._idempotency = idempotency
        self.group_commit: GroupCommit | None = None  # set by the store; None: every record written alone

    async def record_decision(self, record: NewDecision) -> Decision:
        """Store a decision with its audit records ("proposal", then "decision", then "confirmation" on the
        parent when a token is consumed), its idempotency key and the token consumption, in one
        transaction committed before this returns.

        Raises `TokenAlreadyUsed` when `consumes_token_of` names a decision whose token was used,
        `NotFound` when that decision does not exist, `IdempotencyConflict` (carrying the stored
        `request_hash` and `decision`) when the idempotency key is already stored for a different request
        hash. When it is stored for the same request hash (a race between two deliveries of one request),
        nothing is written and the stored decision is returned.
        """
        if record.consumes_token_of is None and self.group_commit is not None:
            return await self.group_commit.submit(record)
        return await self.record_alone(record)

    async def record_alone(self, record: NewDecision) -> Decision:
        """`record_decision` in a transaction of its own (token consumption, and a batch's fallback)."""
        now = self._db.now()
        row = decision_row(record, now)
        key = idempotency_row(record, now)
        parent = record.consumes_token_of
        try:
            async with self._db.write() as conn:
                if (
                    parent is not None
                    and (await conn.scalar(sa.select(decisions.c.decision_id).where(decisions.c.decision_id == parent)))
                    is None
                ):
                    raise NotFound("decision", parent)
                await conn.execute(sa.insert(decisions).values(**row))
                if key is not None:
                    await self._idempotency.claim(conn, [key])
                if parent is not None:
                    consumed = await conn.execute(
                        sa.update(decisions)
                        .where(decisions.c.decision_id == parent, decisions.c.token_used_at.is_(None))
                        .values(token_used_at=now, token_used_by=record.decision.decision_id)
                    )
                    if consumed.rowcount != 1:
                        raise TokenAlreadyUsed(parent)
                await self._db.audit(conn, now).append_many(decision_audit_entries(record, row))
                events = decision_event_rows(record, row, now)
                if events:
                    await conn.execute(sa.insert(webhook_events), events)
        except IdempotentReplay:
            assert record.idempotency is not None
            stored = await self._idempotency.settle(record.idempotency)
            if stored is None:  # the other request's transaction was rolled back after all: try again
                return await self.record_alone(record)
            return stored
        if events:
            self._db.events_written()
        return as_stored(record, row)

    async def find_idempotent(self, api_key_id: str, key: str) -> tuple[str, Decision] | None:
        """The (request_hash, decision) stored for this API key's Idempotency-Key, or None."""
        return await self._idempotency.find(api_key_id, key)

    async def get_decision(self, decision_id: str) -> Decision | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(decisions).where(decisions.c.decision_id == decision_id))).first()
        return decision_from_row(row) if row is not None else None

    async def get_decision_binding(self, decision_id: str) -> DecisionBinding | None:
        """What a token issued for `decision_id` must match, and whether it was used."""
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(decisions).where(decisions.c.decision_id == decision_id))).first()
        return binding_from_row(row) if row is not None else None

    async def list_decisions(
        self, filters: DecisionFilters, limit: int, cursor: str | None
    ) -> tuple[list[Decision], str | None]:
        """One page of decisions (newest first unless `filters.order == "asc"`) and the cursor of the next
        page (None on the last). Keyset paging: a page never repeats or skips a decision that existed
        when the first page was read."""
        query = where_equal(sa.select(decisions), decisions, filters)
        rows, next_cursor = await keyset_page(
            self._db,
            query,
            "decisions",
            decisions.c.row_id,
            decisions.c.created_at,
            filters,
            filters.order or "desc",
            limit,
            cursor,
        )
        return [decision_from_row(row) for row in rows], next_cursor
