"""Two dispatchers (two stores, as two replicas) on one database never send one attempt twice: every
event is fanned out once per endpoint, and each attempt is claimed by one of them."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from datetime import datetime, timezone

import sqlalchemy as sa

from aegis_server.ids import new_id
from aegis_server.notifications import WebhookDispatcher
from aegis_server.settings import Settings
from aegis_server.store import Store
from aegis_server.store.schema import webhook_events

from .receiver import Received, Receiver

EVENTS = 30


def _event(index: int) -> dict[str, object]:
    now = datetime.now(timezone.utc)
    data = {"decision_id": f"dec_{index}", "outcome": "DENY", "risk_score": 0.6, "capability": "database.drop"}
    return {
        "event_id": new_id("msg_"),
        "event_type": "decision.denied",
        "decision_id": f"dec_{index}",
        "capability": "database.drop",
        "risk_score": 0.6,
        "data": data,
        "created_at": now,
        "dispatched_at": None,
    }


async def test_two_dispatchers_never_send_one_attempt_twice(store_url: str, receiver: Receiver) -> None:
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    lock = threading.Lock()

    def answer(request: Received) -> tuple[int, dict[str, str]]:
        with lock:
            seen[request.path, request.webhook_id] += 1
            first = seen[request.path, request.webhook_id] == 1
        time.sleep(0.005)  # widen the window in which the other replica could claim it again
        return (500, {}) if first else (200, {})

    receiver.answer = answer
    settings = Settings(
        policy_paths=(),
        db_url=store_url,
        webhook_timeout_seconds=5.0,
        webhook_retry_schedule_seconds=(0.02, 0.02, 0.02),
        webhook_poll_interval_seconds=0.02,
    )
    first = await Store.open(store_url)
    second = await Store.open(store_url)
    dispatchers = [WebhookDispatcher(store, settings, max_in_flight=4) for store in (first, second)]
    try:
        endpoint, _ = await first.webhooks.create_endpoint(receiver.url, ["*"])
        other, _ = await second.webhooks.create_endpoint(receiver.url + "/other", ["decision.denied"])
        for dispatcher in dispatchers:
            dispatcher.start()
        for batch in range(3):  # events keep arriving while both replicas deliver
            async with first.engine.begin() as conn:
                await conn.execute(sa.insert(webhook_events), [_event(batch * 100 + i) for i in range(EVENTS // 3)])
            await asyncio.sleep(0.05)
        await receiver.wait_for(lambda got: len(got) >= 2 * 2 * EVENTS, timeout=60)
        await _wait_delivered(first, [endpoint.endpoint_id, other.endpoint_id], EVENTS)
    finally:
        for dispatcher in dispatchers:
            await dispatcher.stop()
        await first.close()
        await second.close()

    requests = receiver.received()
    per_endpoint: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for request in requests:
        per_endpoint[request.path][request.webhook_id] += 1
    assert set(per_endpoint) == {"/hook", "/hook/other"}
    for counts in per_endpoint.values():
        assert len(counts) == EVENTS
        assert set(counts.values()) == {2}, counts  # the failed first attempt and its one retry, never more


async def _wait_delivered(store: Store, endpoint_ids: list[str], count: int) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 60
    while loop.time() < give_up:
        done = [await store.webhooks.list_deliveries(e, status="delivered", limit=1000) for e in endpoint_ids]
        if all(len(items) == count for items, _ in done):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not every delivery was delivered in time")
