"""Appending to the audit chain inside a write transaction: the one way a record is linked.

`ChainWriter.link` turns audit entries (each the keyword arguments of `AuditAppender.append`) into
`audit_records` rows linked after the chain head with the keyed `ChainLinker` of `store/chain.py`; every
writer goes through it: `AuditAppender` on an async connection, `append_sync` on a synchronous one, and
the group commit on a SQLite driver connection. Each first takes the chain lock (PostgreSQL:
`pg_advisory_xact_lock(AUDIT_LOCK_KEY)`; SQLite: the transaction's own write lock) and reads the head.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis_sdk._wire.canonical import canonical_text
from aegis_sdk.models import AuditRecord
from aegis_server.ids import new_audit_ref
from aegis_server.store.chain import GENESIS_HASH, ChainLinker
from aegis_server.store.errors import AuditChainCut
from aegis_server.store.rows import audit_from_row, format_timestamp
from aegis_server.store.schema import audit_records

__all__ = [
    "AUDIT_LOCK_KEY",
    "HEAD_QUERY",
    "HEAD_SQL",
    "AuditAppender",
    "ChainState",
    "ChainWriter",
    "append_sync",
    "chained_rows",
    "head_of",
    "parse_chain_state",
]

AUDIT_LOCK_KEY = 0x4145_4749_535F_4155  # "AEGIS_AU": pg_advisory_xact_lock key of audit appends
logger = logging.getLogger("aegis_server.store")

HEAD_QUERY = (
    sa.select(audit_records.c.sequence, audit_records.c.hash).order_by(audit_records.c.sequence.desc()).limit(1)
)
# The same query as SQLite text, for the batch writers' driver connections.
HEAD_SQL = str(HEAD_QUERY.compile(dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True}))
_LOCK_QUERY = sa.select(sa.func.pg_advisory_xact_lock(AUDIT_LOCK_KEY))


@dataclasses.dataclass(frozen=True)
class ChainState:
    """Where the keyed chain starts (`v2_from`: the first version-2 record; None: every record is version
    1) and the fingerprint of the audit key it uses, as the database's `server_settings` records them."""

    v2_from: int | None
    key_id: str | None


def parse_chain_state(value: Any) -> ChainState:
    """The `audit_chain` setting as a `ChainState` (None: the chain is not keyed yet)."""
    if value is None:
        return ChainState(v2_from=None, key_id=None)
    try:
        document = json.loads(str(value))
        return ChainState(v2_from=int(document["v2_from"]), key_id=str(document["key_id"]))
    except (ValueError, KeyError, TypeError):
        # An edited row: the chain's checks then fail (no record is keyed) and the checkpoint disagrees.
        return ChainState(v2_from=None, key_id="unreadable")


def head_of(last: Any) -> tuple[int, str]:
    """(sequence, hash) of the chain's last record, from the row of `HEAD_QUERY` (None: empty chain)."""
    return (int(last[0]), str(last[1])) if last is not None else (0, GENESIS_HASH)


def chained_rows(
    head: tuple[int, str], entries: Sequence[Mapping[str, Any]], now: datetime, linker: ChainLinker
) -> tuple[list[dict[str, Any]], tuple[int, str]]:
    """The `audit_records` rows of `entries` (each the keyword arguments of `AuditAppender.append`)
    linked (keyed, version 2) after `head`, and the new head."""
    link = linker.link
    sequence, previous_hash = head
    timestamp = format_timestamp(now)
    rows = []
    for entry in entries:
        sequence += 1
        fields: dict[str, Any] = {
            "audit_ref": entry.get("audit_ref") or new_audit_ref(),
            "sequence": sequence,
            "event_type": entry["event_type"],
            "decision_id": entry.get("decision_id"),
            "actor_id": entry.get("actor_id"),
            "capability": entry.get("capability"),
            "outcome": entry.get("outcome"),
            "session_id": entry.get("session_id"),
            "timestamp": timestamp,
            "payload": canonical_text(entry["payload"]),  # encoded once: hashed and stored as it is
            "previous_hash": previous_hash,
        }
        fields["hash"] = previous_hash = link(fields)
        fields["created_at"] = now
        rows.append(fields)
    return rows, (sequence, previous_hash)


class ChainWriter:
    """The store's side of the chain: the keyed linker, and the highest head this process has seen under
    the chain lock (or checkpointed). A head read below it means records were deleted while the server
    ran: appending would fork the chain from the shortened head, so `link` raises `AuditChainCut`."""

    __slots__ = ("floor", "linker", "on_commit")

    def __init__(self, linker: ChainLinker, floor: int = 0, on_commit: Callable[[], None] | None = None) -> None:
        self.linker = linker
        self.floor = floor
        self.on_commit = on_commit  # told after every commit of records (the audit export wakes on it)

    def head(self, last: Any) -> tuple[int, str]:
        """The head read under the chain lock (the row of `HEAD_QUERY`), checked against the floor."""
        head = head_of(last)
        if head[0] < self.floor:
            logger.critical(
                "the audit chain was cut under the running server: the database head is record #%d, this "
                "server saw record #%d; refusing to append (fail closed)",
                head[0],
                self.floor,
            )
            raise AuditChainCut(head[0], self.floor)
        self.floor = head[0]
        return head

    def link(
        self, last: Any, entries: Sequence[Mapping[str, Any]], now: datetime
    ) -> tuple[list[dict[str, Any]], tuple[int, str]]:
        """The rows of `entries` linked after the head `last` (the row of `HEAD_QUERY`), and the new head."""
        return chained_rows(self.head(last), entries, now, self.linker)

    def committed(self, sequence: int) -> None:
        """Record `sequence` is committed: a head read below it afterwards is a cut."""
        if sequence > self.floor:
            self.floor = sequence
        if self.on_commit is not None:
            self.on_commit()


@dataclasses.dataclass
class AuditAppender:
    """Appends audit records inside one async write transaction (takes the chain lock on first use)."""

    conn: AsyncConnection
    postgres: bool
    now: datetime
    chain: ChainWriter
    head: tuple[int, str] | None = None

    async def append(self, event_type: str, *, payload: Mapping[str, Any], **fields: Any) -> AuditRecord:
        """Append one record; `fields`: decision_id, actor_id, capability, outcome, session_id, audit_ref."""
        rows = await self.append_many([{"event_type": event_type, "payload": payload, **fields}])
        return audit_from_row(rows[0])

    async def append_many(self, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Append several records (each the keyword arguments of `append`) with one INSERT; returns the rows."""
        if not entries:
            return []
        last: Any = self.head
        if last is None:
            if self.postgres:
                await self.conn.execute(_LOCK_QUERY)
            last = (await self.conn.execute(HEAD_QUERY)).first()
        rows, self.head = self.chain.link(last, entries, self.now)
        await self.conn.execute(sa.insert(audit_records), rows)
        return rows


def append_sync(
    conn: sa.Connection, chain: ChainWriter, entries: Sequence[Mapping[str, Any]], now: datetime, *, postgres: bool
) -> int:
    """`AuditAppender.append_many` on a synchronous connection (in the caller's write transaction).
    Returns the new head's sequence: the caller tells the chain once the transaction committed."""
    if postgres:
        conn.execute(_LOCK_QUERY)
    rows, head = chain.link(conn.execute(HEAD_QUERY).first(), entries, now)
    conn.execute(sa.insert(audit_records), rows)
    return head[0]
