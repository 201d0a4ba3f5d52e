"""A server SIGKILLed while a delivery is in flight loses nothing: after a restart the event is delivered
(with the same webhook-id), and every event of the outbox reached the receiver."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from aegis_server.cli.command_support import with_store
from aegis_server.store import Store
from aegis_server.store.schema import webhook_deliveries, webhook_events

from .conftest import POLICIES, escalation
from .processes import ServerProcess, run_async
from .receiver import Receiver

pytestmark = pytest.mark.slow


def _prepare(db_url: str, receiver_url: str) -> tuple[str, str]:
    """An admin key and an endpoint, written as the CLI writes (the audit chain checkpointed after)."""

    async def work(store: Store) -> tuple[str, str]:
        key, _ = await store.create_api_key("agent", ["admin"], ["*"])
        _, secret = await store.webhooks.create_endpoint(receiver_url, ["*"])
        return key, secret

    return run_async(lambda: with_store(db_url, work, migrate=True, writes=True))


def _outbox(db_url: str) -> tuple[set[str], dict[str, str]]:
    async def work() -> tuple[set[str], dict[str, str]]:
        store = await Store.open(db_url, migrate=False)
        try:
            async with store.engine.connect() as conn:
                events = {row.event_id for row in await conn.execute(sa.select(webhook_events.c.event_id))}
                statuses = {
                    row.event_id: row.status
                    for row in await conn.execute(sa.select(webhook_deliveries.c.event_id, webhook_deliveries.c.status))
                }
            return events, statuses
        finally:
            await store.close()

    return run_async(work)


def _wait(condition: object, timeout: float = 30.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigkill_mid_delivery_loses_nothing(tmp_path: Path, receiver: Receiver) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
    key, secret = _prepare(db_url, receiver.url)
    env = {
        "AEGIS_WEBHOOK_TIMEOUT_SECONDS": "1.5",  # the lease: 1.5 s + 1.5 s
        "AEGIS_WEBHOOK_RETRY_SCHEDULE_SECONDS": "0.05,0.05,0.05,0.05,0.05",
        "AEGIS_WEBHOOK_POLL_INTERVAL_SECONDS": "0.05",
        "AEGIS_PUBLIC_URL": "https://aegis.example.test",
    }
    server = ServerProcess(db_url, POLICIES, tmp_path / "server.log", env)
    receiver.hold()  # the first request stays open until the server is dead
    try:
        server.start()
        with httpx.Client(base_url=server.endpoint, headers={"Authorization": f"Bearer {key}"}) as client:
            first = client.post("/api/v1/governance/propose", json=escalation()).json()
        assert receiver.arrived.wait(timeout=30), server.logs()
        server.kill()
        in_flight = receiver.received()[0].webhook_id
        receiver.answer = lambda _: (200, {})
        receiver.release()

        server.start()
        with httpx.Client(base_url=server.endpoint, headers={"Authorization": f"Bearer {key}"}) as client:
            second = client.post("/api/v1/governance/propose", json=escalation(9000)).json()
            _wait(lambda: set(_outbox(db_url)[1].values()) == {"delivered"} and len(_outbox(db_url)[1]) == 2)
    finally:
        receiver.release()
        server.stop()

    events, statuses = _outbox(db_url)
    requests = receiver.received()
    assert set(statuses) == events  # every event of the outbox has its delivery...
    assert {r.webhook_id for r in requests} == events  # ...and reached the receiver, under its own id
    assert [r.webhook_id for r in requests].count(in_flight) >= 2  # the attempt cut by the kill, then again
    bodies = {r.webhook_id: r.verify(secret) for r in requests}
    assert {body["data"]["decision_id"] for body in bodies.values()} == {first["decision_id"], second["decision_id"]}
    assert bodies[in_flight]["data"]["decision_id"] == first["decision_id"]
