"""The audit log: appending a record on its own, reading the chain (paged, or one decision's trail) and
verifying it (gaps, links, keyed hashes)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from aegis_sdk.models import AuditRecord, AuditVerification
from aegis_server.store.audit_append import HEAD_QUERY
from aegis_server.store.audit_checks import VERIFY_BATCH
from aegis_server.store.chain import ChainChecker
from aegis_server.store.cursors import keyset_page
from aegis_server.store.database import Room
from aegis_server.store.filters import DecisionFilters, where_equal
from aegis_server.store.rows import audit_from_row
from aegis_server.store.schema import audit_records, decisions

__all__ = ["AuditLog"]


class AuditLog(Room):
    """The audit chain of one database."""

    async def chain_head(self) -> tuple[int, str | None]:
        """(sequence, hash) of the last record in the database; (0, None) for an empty chain."""
        async with self._db.read() as conn:
            last = (await conn.execute(HEAD_QUERY)).first()
        return (int(last[0]), str(last[1])) if last is not None else (0, None)

    async def record_hash(self, sequence: int) -> str | None:
        """The stored hash of record `sequence`, or None when there is no such record."""
        async with self._db.read() as conn:
            value = await conn.scalar(sa.select(audit_records.c.hash).where(audit_records.c.sequence == sequence))
        return str(value) if value is not None else None

    async def append_audit(
        self,
        event_type: str,
        *,
        decision_id: str | None = None,
        actor_id: str | None = None,
        capability: str | None = None,
        outcome: str | None = None,
        session_id: str | None = None,
        payload: Mapping[str, Any],
    ) -> AuditRecord:
        """Append one record to the chain in its own transaction (e.g. a rejected token attempt)."""
        now = self._db.now()
        async with self._db.write() as conn:
            return await self._db.audit(conn, now).append(
                event_type,
                decision_id=decision_id,
                actor_id=actor_id,
                capability=capability,
                outcome=outcome,
                session_id=session_id,
                payload=payload,
            )

    async def append_audits(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Append several records (each the keyword arguments of `append_audit`) in one transaction."""
        if not entries:
            return
        now = self._db.now()
        async with self._db.write() as conn:
            await self._db.audit(conn, now).append_many(entries)

    async def audit_log(
        self, filters: DecisionFilters, limit: int, cursor: str | None
    ) -> tuple[list[AuditRecord], str | None]:
        """One page of audit records (chain order unless `filters.order == "desc"`) and the next cursor.
        `filters` may be `DecisionFilters` or `AuditFilters`; `review_status` selects the records of
        decisions in that review state."""
        query = where_equal(sa.select(audit_records), audit_records, filters)
        if filters.review_status is not None:
            query = query.where(
                audit_records.c.decision_id.in_(
                    sa.select(decisions.c.decision_id).where(decisions.c.review_status == filters.review_status)
                )
            )
        rows, next_cursor = await keyset_page(
            self._db,
            query,
            "audit",
            audit_records.c.sequence,
            audit_records.c.created_at,
            filters,
            filters.order or "asc",
            limit,
            cursor,
        )
        return [audit_from_row(row) for row in rows], next_cursor

    async def audit_trail(self, decision_id: str) -> list[AuditRecord]:
        """Every audit record of one decision, in chain order (proposal, decision, review, confirmation,
        execution...)."""
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(audit_records)
                    .where(audit_records.c.decision_id == decision_id)
                    .order_by(audit_records.c.sequence)
                )
            ).all()
        return [audit_from_row(row) for row in rows]

    async def verify_chain(self, *, batch_size: int = VERIFY_BATCH) -> AuditVerification:
        """Walk the whole chain in batches (constant memory) and report the first broken record:
        a sequence gap, a previous_hash that does not link, or contents that do not match the hash (the
        keyed HMAC from the database's `v2_from` on, under this store's audit key; a keyed record is
        unverifiable when the key is not available). `records_checked` counts the records examined, the
        broken one included; `head_sequence`, `chain_version` and `keyed_from` describe the chain."""
        state = await self._db.chain_state()
        linker = self._db.audit_linker() if state.v2_from is not None else None
        checker = ChainChecker(v2_from=state.v2_from, linker=linker)
        result = await self._walk_chain(checker, batch_size)
        head_sequence, _ = await self.chain_head() if checker.broken else (checker.head_sequence, None)
        keyed = state.v2_from is not None and head_sequence >= state.v2_from
        return result.model_copy(
            update={"head_sequence": head_sequence, "chain_version": 2 if keyed else 1, "keyed_from": state.v2_from}
        )

    async def _walk_chain(self, checker: ChainChecker, batch_size: int) -> AuditVerification:
        columns: list[Any] = [column for column in audit_records.c if column.name not in ("payload", "created_at")]
        payload_text: Any = sa.cast(audit_records.c.payload, sa.Text).label("payload_text")
        columns.append(audit_records.c.created_at)
        if not self._db.postgres:
            # SQLite keeps whatever bytes were written: read text as bytes, so a record whose bytes are not
            # UTF-8 (a tampered file) is reported as broken instead of failing the whole check.
            columns = [
                sa.cast(c, sa.LargeBinary).label(c.name)
                if isinstance(c.type, sa.String) or c.name == "created_at"
                else c
                for c in columns
            ]
            payload_text = sa.cast(audit_records.c.payload, sa.LargeBinary).label("payload_text")
        last = 0
        while True:
            async with self._db.read() as conn:
                rows = (
                    await conn.execute(
                        sa.select(*columns, payload_text)
                        .where(audit_records.c.sequence > last)
                        .order_by(audit_records.c.sequence)
                        .limit(batch_size)
                    )
                ).all()
            for row in rows:
                fields = {
                    name: value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
                    for name, value in row._mapping.items()
                    if name != "payload_text"
                }
                text = row.payload_text
                payload_error: str | None = None
                try:
                    fields["payload"] = json.loads(text) if text is not None else None
                except ValueError as exc:  # UnicodeDecodeError included: bytes that are not UTF-8
                    payload_error = str(exc)
                if not checker.check(fields, payload_error):
                    return checker.result()
            if len(rows) < batch_size:
                return checker.result()
            last = int(rows[-1].sequence)
