"""The SQLite group commit is written on the event loop's thread, which must never wait: when another
process holds the file's write lock the batch is written from the writer thread instead (the loop keeps
serving), and the WAL is checkpointed from that thread, not by the loop's commits."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from _store_support import MakeDecision

from aegis_server.store import Store

# The store fixture on a SQLite file only (what these tests are about).
pytestmark = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


def _database_file(sqlite_url: str) -> Path:
    return Path(sqlite_url.split("///", 1)[1])


async def test_a_batch_waits_for_another_process_without_blocking_the_loop(
    store: Store, sqlite_url: str, make_decision: MakeDecision
) -> None:
    other = sqlite3.connect(_database_file(sqlite_url), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write transaction holds the file's write lock
    try:
        recording = asyncio.ensure_future(store.record_decision(make_decision("ALLOW")))
        ticks = 0
        started = time.monotonic()
        while time.monotonic() - started < 0.5:  # the loop keeps running while the batch waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert not recording.done()
        assert ticks >= 20
    finally:
        other.execute("COMMIT")
        other.close()
    stored = await asyncio.wait_for(recording, timeout=10)
    assert await store.get_decision(stored.decision_id) == stored
    assert (await store.verify_chain()).valid


async def test_the_wal_is_checkpointed_from_the_writer_thread(
    store: Store, sqlite_url: str, make_decision: MakeDecision, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.group_commit, "checkpoint_interval_seconds", 0.0)
    database = _database_file(sqlite_url)
    size_before = database.stat().st_size
    await asyncio.gather(*(store.record_decision(make_decision("ALLOW")) for _ in range(200)))
    for _ in range(100):  # the checkpoint started by the last batch runs in the writer thread
        if store.group_commit.checkpoint is None and database.stat().st_size > size_before:
            break
        await asyncio.sleep(0.02)
    assert database.stat().st_size > size_before  # the decisions' pages reached the database file
    with sqlite3.connect(database) as conn:
        busy, wal_frames, checkpointed = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and wal_frames == checkpointed


async def test_an_idempotency_lookup_reads_on_the_loop_even_while_another_process_writes(
    store: Store, sqlite_url: str, make_decision: MakeDecision
) -> None:
    stored = await store.record_decision(make_decision("ALLOW", idempotency=("key_1", "retry-1", "h1")))
    other = sqlite3.connect(_database_file(sqlite_url), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        found = await asyncio.wait_for(store.find_idempotent("key_1", "retry-1"), timeout=5)
        assert time.monotonic() - started < 1.0  # a WAL reader does not wait for the write lock
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert found == ("h1", stored)
    assert await store.find_idempotent("key_1", "no-such-key") is None


async def test_a_full_wal_is_finished_with_this_process_s_writes_paused(
    store: Store, make_decision: MakeDecision, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aegis_server.store import group_commit

    calls: list[bool] = []  # per checkpoint: were this process's writes paused?

    def spying_checkpoint(engine: object) -> int:
        calls.append(store.database.write_lock.locked())
        return 10**6  # frames in the WAL: more than the limit

    monkeypatch.setattr(group_commit, "checkpoint_wal", spying_checkpoint)
    monkeypatch.setattr(store.group_commit, "checkpoint_interval_seconds", 0.0)
    await store.record_decision(make_decision("ALLOW"))
    for _ in range(100):
        if store.group_commit.checkpoint is None and calls:
            break
        await asyncio.sleep(0.01)
    # Copied beside the commits, once more to catch up (this pass was quick, so only once), then
    # finished with writes paused.
    assert calls[:3] == [False, False, True]


async def test_an_execution_report_is_written_through_the_async_engine_while_another_process_writes(
    store: Store, sqlite_url: str, make_decision: MakeDecision
) -> None:
    from aegis_sdk.models import ExecutionReport

    allowed = await store.record_decision(make_decision("ALLOW"))
    other = sqlite3.connect(_database_file(sqlite_url), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        reporting = asyncio.ensure_future(
            store.record_execution(allowed.decision_id, ExecutionReport(status="SUCCESS"))
        )
        await asyncio.sleep(0.3)  # the loop is free meanwhile: this sleep ends on time
        assert not reporting.done()
    finally:
        other.execute("COMMIT")
        other.close()
    record = await asyncio.wait_for(reporting, timeout=10)
    trail = await store.audit_trail(allowed.decision_id)
    assert [r.event_type for r in trail] == ["proposal", "decision", "execution"]
    assert trail[-1].audit_ref == record.audit_ref
    assert (await store.verify_chain()).valid
