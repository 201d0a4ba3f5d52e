"""The audit chain: concurrent appends (tasks and OS processes), tamper detection, listing and verification."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from _store_support import T0, MakeDecision

from aegis_server.store import (
    GENESIS_HASH,
    AuditFilters,
    DecisionFilters,
    NotFound,
    SchemaNotReady,
    Store,
    verify_database,
)
from aegis_server.store.chain import link_hash

WORKER = Path(__file__).with_name("_store_worker.py")


async def _run_worker(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().strip()


async def test_first_record_links_to_genesis_and_hash_is_recomputable(store: Store) -> None:
    first = await store.append_audit("test", actor_id="a", payload={"x": 1})
    second = await store.append_audit("test", payload={"é": [1.5, None]})
    assert (first.sequence, first.previous_hash) == (1, GENESIS_HASH)
    assert (second.sequence, second.previous_hash) == (2, first.hash)
    # New records are keyed (chain version 2): HMAC-SHA256 under the store's audit key, not plain SHA-256.
    linker = store.audit_linker()
    assert linker is not None
    assert linker.link(second.model_dump()) == second.hash
    assert link_hash(second.model_dump()) != second.hash
    result = await store.verify_chain()
    assert result.valid and result.records_checked == 2 and result.head_hash == second.hash
    assert result.first_broken is None


async def test_empty_chain_is_valid(store: Store) -> None:
    result = await store.verify_chain()
    assert result.valid and result.records_checked == 0 and result.head_hash is None


async def test_200_concurrent_appends_keep_one_chain(store: Store, make_decision: MakeDecision) -> None:
    appends = [store.append_audit("load", payload={"i": i}) for i in range(150)]
    decisions = [store.record_decision(make_decision()) for _ in range(50)]  # 2 records each
    await asyncio.gather(*appends, *decisions)
    result = await store.verify_chain(batch_size=37)  # several batches, uneven last one
    assert result.valid, result.first_broken
    assert result.records_checked == 250
    records, cursor = await store.audit_log(DecisionFilters(), 1000, None)
    assert [r.sequence for r in records] == list(range(1, 251)) and cursor is None


async def test_concurrent_appends_from_two_processes_keep_one_chain(store_url: str) -> None:
    # Both processes start on an empty database: they also race to run the migrations.
    outputs = await asyncio.gather(
        _run_worker("append", store_url, "p1", "60"), _run_worker("append", store_url, "p2", "60")
    )
    assert outputs == ["done", "done"]
    result = await verify_database(store_url)
    assert result.valid, result.first_broken
    assert result.records_checked == 120
    store = await Store.open(store_url, migrate=False)
    try:
        records, _ = await store.audit_log(AuditFilters(event_type="worker"), 1000, None)
    finally:
        await store.close()
    assert Counter(r.payload["tag"] for r in records) == {"p1": 60, "p2": 60}


async def test_token_consumed_once_across_two_processes(store_url: str, make_decision: MakeDecision) -> None:
    store = await Store.open(store_url)
    try:
        parent = await store.record_decision(make_decision("REQUIRE_CONFIRMATION"))
    finally:
        await store.close()
    outputs = await asyncio.gather(
        _run_worker("consume", store_url, parent.decision_id, "dec_child_a"),
        _run_worker("consume", store_url, parent.decision_id, "dec_child_b"),
    )
    assert sorted(outputs) == ["lost", "won"]
    assert (await verify_database(store_url)).valid


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("payload", '{"i": 999}', "hash mismatch"),
        ("hash", "f" * 64, "hash mismatch"),
        ("actor_id", "mallory", "hash mismatch"),
        ("payload", "{not json", "hash mismatch"),
    ],
)
async def test_a_tampered_row_is_found_by_its_sequence(store: Store, column: str, value: str, reason: str) -> None:
    for i in range(10):
        await store.append_audit("test", actor_id="alice", payload={"i": i})
    async with store.engine.begin() as conn:
        target = sa.text(f"UPDATE audit_records SET {column} = :value WHERE sequence = 6")
        if column == "payload" and store.dialect == "postgresql" and value.startswith("{not"):
            # PostgreSQL's json type refuses malformed text; tamper with a value it accepts instead.
            value = '{"i": "six"}'
        await conn.execute(target, {"value": value})
    result = await store.verify_chain(batch_size=4)
    assert not result.valid
    assert result.first_broken is not None
    assert result.first_broken.sequence == 6
    assert reason in result.first_broken.reason
    records, _ = await store.audit_log(AuditFilters(), 10, None) if column != "payload" else ([], None)
    if records:
        assert result.first_broken.audit_ref == records[5].audit_ref
    assert result.records_checked == 6


async def test_rewriting_a_record_and_its_hash_breaks_the_next_link(store: Store) -> None:
    for i in range(5):
        await store.append_audit("test", payload={"i": i})
    records, _ = await store.audit_log(AuditFilters(), 10, None)
    forged = records[2].model_dump()
    forged["payload"] = {"i": 100}
    linker = store.audit_linker()
    assert linker is not None
    forged_hash = linker.link(forged)  # an attacker holding the audit key
    async with store.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE audit_records SET payload = :p, hash = :h WHERE sequence = 3"),
            {"p": '{"i": 100}', "h": forged_hash},
        )
    result = await store.verify_chain()
    assert result.first_broken is not None
    assert (result.first_broken.sequence, result.first_broken.audit_ref) == (4, records[3].audit_ref)
    assert result.first_broken.reason.startswith("previous_hash mismatch")


async def test_rewriting_a_keyed_record_with_the_unkeyed_formula_is_a_keyed_hash_mismatch(store: Store) -> None:
    for i in range(5):
        await store.append_audit("test", payload={"i": i})
    records, _ = await store.audit_log(AuditFilters(), 10, None)
    forged = records[2].model_dump()
    forged["payload"] = {"i": 100}
    async with store.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE audit_records SET payload = :p, hash = :h WHERE sequence = 3"),
            {"p": '{"i": 100}', "h": link_hash(forged)},  # version 1: no key needed
        )
    result = await store.verify_chain()
    assert result.first_broken is not None
    assert result.first_broken.sequence == 3
    assert "keyed hash" in result.first_broken.reason


async def test_a_deleted_record_is_a_sequence_gap(store: Store) -> None:
    for i in range(5):
        await store.append_audit("test", payload={"i": i})
    async with store.engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM audit_records WHERE sequence = 2"))
    result = await store.verify_chain()
    assert result.first_broken is not None
    assert result.first_broken.sequence == 3 and result.first_broken.reason.startswith("sequence gap")


async def test_verify_database_names_the_first_broken_record(sqlite_url: str) -> None:
    store = await Store.open(sqlite_url)
    for i in range(3):
        await store.append_audit("test", payload={"i": i})
    async with store.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE audit_records SET payload = '{}' WHERE sequence = 2"))
    await store.close()
    result = await verify_database(sqlite_url)
    assert not result.valid and result.first_broken is not None and result.first_broken.sequence == 2


async def test_verify_database_refuses_a_database_without_schema(tmp_path: Path) -> None:
    with pytest.raises(SchemaNotReady, match="no SQLite database"):
        await verify_database(f"sqlite:///{tmp_path / 'missing' / 'none.db'}")
    assert not (tmp_path / "missing").exists()  # verifying never creates a database
    (tmp_path / "empty.db").touch()
    with pytest.raises(SchemaNotReady, match="db upgrade"):
        await verify_database(f"sqlite:///{tmp_path / 'empty.db'}")


async def test_audit_log_filters_and_pages(store: Store, make_decision: MakeDecision) -> None:
    allowed = await store.record_decision(make_decision("ALLOW", actor_id="alice", session_id="s1"))
    escalated = await store.record_decision(make_decision("ESCALATE", actor_id="bob", session_id="s2"))
    await store.append_audit("note", actor_id="carol", payload={})

    by_actor, _ = await store.audit_log(DecisionFilters(actor_id="alice"), 10, None)
    assert {r.decision_id for r in by_actor} == {allowed.decision_id} and len(by_actor) == 2
    by_outcome, _ = await store.audit_log(DecisionFilters(outcome="ESCALATE"), 10, None)
    assert [r.audit_ref for r in by_outcome] == [escalated.audit_ref]
    pending, _ = await store.audit_log(DecisionFilters(review_status="pending"), 10, None)
    assert {r.decision_id for r in pending} == {escalated.decision_id}
    by_event, _ = await store.audit_log(AuditFilters(event_type="note"), 10, None)
    assert [r.actor_id for r in by_event] == ["carol"]
    by_decision, _ = await store.audit_log(AuditFilters(decision_id=allowed.decision_id), 10, None)
    assert [r.event_type for r in by_decision] == ["proposal", "decision"]
    in_window, _ = await store.audit_log(DecisionFilters(since=T0, until=T0), 10, None)
    assert in_window == []

    newest_first: list[int] = []
    cursor: str | None = None
    while True:
        page, cursor = await store.audit_log(DecisionFilters(order="desc"), 2, cursor)
        newest_first.extend(r.sequence for r in page)
        if cursor is None:
            break
    assert newest_first == [5, 4, 3, 2, 1]


async def test_audit_trail_of_unknown_decision_is_empty(store: Store) -> None:
    assert await store.audit_trail("dec_unknown") == []
    with pytest.raises(NotFound):
        await store.resolve_review("dec_unknown", approve=False, reviewer="x", note=None, now=T0)
