"""The SQLite batch writer inserts rows through `BulkInsert` (the DB-API's executemany with the columns'
own conversions): what it stores must be byte for byte what SQLAlchemy's `insert()` stores."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aegis_server.store import upgrade_database
from aegis_server.store.bulk import BulkInsert, immediate_transaction
from aegis_server.store.engine import sqlite_batch_writer
from aegis_server.store.schema import decisions, idempotency_keys

_AT = datetime(2026, 12, 1, 9, 30, 0, tzinfo=timezone.utc)


def _decision_row(decision_id: str, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "decision_id": decision_id,
        "outcome": "ESCALATE",
        "reason": "needs a reviewer — über-risky",
        "risk_score": 0.75,
        "constraints": {"max_rows": 1000, "nested": [1, 2.5, None, "é"]},
        "policy_ids": ["payments/large-refunds"],
        "timestamp": "2026-12-01T09:30:00Z",
        "created_at": _AT,
        "audit_ref": "aud_" + decision_id[4:],
        "actor_id": "support-bot",
        "actor_type": "ai-agent",
        "capability": "payments.refund",
        "session_id": None,
        "params_hash": "ab" * 32,
        "api_key_id": "key_1",
        "parent_decision_id": None,
        "confirmation_token": None,
        "expires_at": "2026-12-01T10:30:00Z",
        "token_expires_at": None,
        "review_status": "pending",
        "review_deadline": _AT + timedelta(hours=1, microseconds=7),
    }
    row.update(changes)
    return row


async def _writer(tmp_path: Path, name: str) -> sa.Engine:
    url = f"sqlite+aiosqlite:///{tmp_path / name}"
    await upgrade_database(url)
    engine = sqlite_batch_writer(url)
    assert engine is not None
    return engine


def _driver(conn: sa.Connection) -> Any:
    return conn.connection.dbapi_connection


def _raw(path: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


async def test_bulk_insert_stores_what_sqlalchemy_insert_stores(tmp_path: Path) -> None:
    rows = [
        _decision_row("dec_" + "1" * 32),
        _decision_row("dec_" + "2" * 32, review_status=None, review_deadline=None, session_id="s-1"),
        _decision_row(
            "dec_" + "3" * 32,
            outcome="REQUIRE_CONFIRMATION",
            confirmation_token="tok",
            token_expires_at=_AT.astimezone(timezone(timedelta(hours=2))),  # any zone is stored as UTC
        ),
    ]
    routed, bulk = await _writer(tmp_path, "routed.db"), await _writer(tmp_path, "bulk.db")
    try:
        with routed.begin() as conn:
            conn.execute(sa.insert(decisions), rows)
        with bulk.begin() as conn:
            assert BulkInsert(decisions, bulk.dialect).execute(_driver(conn), rows) == len(rows)
    finally:
        routed.dispose()
        bulk.dispose()
    assert _raw(tmp_path / "bulk.db", "decisions") == _raw(tmp_path / "routed.db", "decisions")


async def test_conflicting_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    writer = await _writer(tmp_path, "keys.db")
    insert_keys = BulkInsert(idempotency_keys, writer.dialect, on_conflict_do_nothing=("api_key_id", "key"))
    decision_id = "dec_" + "1" * 32
    key = {"api_key_id": "key_1", "key": "k-1", "request_hash": "h", "decision_id": decision_id, "created_at": _AT}
    try:
        with writer.begin() as conn:
            BulkInsert(decisions, writer.dialect).execute(_driver(conn), [_decision_row(decision_id)])
            assert insert_keys.execute(_driver(conn), [key]) == 1
            assert insert_keys.execute(_driver(conn), [key, {**key, "key": "k-2"}]) == 1  # k-1 is there already
            assert insert_keys.execute(_driver(conn), []) == 0
    finally:
        writer.dispose()
    assert [row[1] for row in _raw(tmp_path / "keys.db", "idempotency_keys")] == ["k-1", "k-2"]


async def test_rows_must_name_columns_of_the_table(tmp_path: Path) -> None:
    writer = await _writer(tmp_path, "bad.db")
    try:
        with writer.begin() as conn, pytest.raises(ValueError, match="no_such_column"):
            unknown_column = {"decision_id": "dec_x", "no_such_column": 1}
            BulkInsert(decisions, writer.dialect).execute(_driver(conn), [unknown_column])
    finally:
        writer.dispose()


def test_immediate_transaction_commits_or_rolls_back_and_reports_a_held_lock(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    first = sqlite3.connect(path, isolation_level=None, timeout=0)
    second = sqlite3.connect(path, isolation_level=None, timeout=0)
    first.execute("PRAGMA journal_mode=WAL")
    first.execute("CREATE TABLE t (x INTEGER)")
    with immediate_transaction(first):
        first.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(RuntimeError), immediate_transaction(first):
        first.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("the batch failed")
    assert not first.in_transaction
    with immediate_transaction(first):  # holds the write lock: the other connection cannot begin
        with pytest.raises(sqlite3.OperationalError, match="locked"), immediate_transaction(second):
            pass
        assert not second.in_transaction
    assert second.execute("SELECT x FROM t").fetchall() == [(1,)]
    first.close()
    second.close()
