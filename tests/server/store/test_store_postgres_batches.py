"""On PostgreSQL the group commit writes its batches on an engine of its own whose connections are not
pinged at checkout (a ping is three round trips). A connection that died since its last batch must cost
nothing but time: the batch fails before writing, each of its records is written alone through the pinged
engine, and the next batch connects afresh."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from _store_support import MakeDecision

from aegis_sdk.models import Decision
from aegis_server.store import NewDecision, Store

pytestmark = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)


async def _batch_backend_pids(store: Store) -> list[int]:
    writer = store.group_commit._postgres_writer
    assert writer is not None
    async with writer.connect() as conn:
        return [int((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())]


async def test_batches_survive_a_batch_connection_that_died(
    store: Store, make_decision: MakeDecision, monkeypatch: pytest.MonkeyPatch
) -> None:
    written_alone: list[str] = []
    write_alone = store.group_commit._write_alone

    async def counting(record: NewDecision) -> Decision:
        written_alone.append(record.decision.decision_id)
        return await write_alone(record)

    monkeypatch.setattr(store.group_commit, "_write_alone", counting)
    first = await asyncio.gather(*(store.record_decision(make_decision("ALLOW")) for _ in range(5)))
    assert written_alone == []
    pids = await _batch_backend_pids(store)
    async with store.database.read() as conn:  # as a PostgreSQL restart or an idle timeout would
        for pid in pids:
            await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    second = await asyncio.gather(*(store.record_decision(make_decision("ALLOW")) for _ in range(5)))
    assert written_alone == [d.decision_id for d in second]  # the dead connection's batch, written alone
    third = await asyncio.gather(*(store.record_decision(make_decision("ALLOW")) for _ in range(5)))
    assert len(written_alone) == 5  # the next batch connected afresh
    for decision in (*first, *second, *third):
        assert await store.get_decision(decision.decision_id) == decision
    verdict = await store.verify_chain()
    assert verdict.valid
    async with store.database.read() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM decisions"))).scalar_one() == 15


async def test_the_batch_engine_is_disposed_with_the_store(store_url: str) -> None:
    opened = await Store.open(store_url)
    writer = opened.group_commit._postgres_writer
    assert writer is not None
    await opened.close()
    assert writer.pool.checkedout() == 0
