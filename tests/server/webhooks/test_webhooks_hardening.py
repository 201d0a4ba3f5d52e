"""What a hostile review of the webhooks found, kept closed: URLs the sender cannot encode, a hanging
receiver taking every delivery slot, and the sender's log naming a webhook's URL."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from aegis_server.cli.serve import configure_logging
from aegis_server.inprocess import InProcessServer
from aegis_server.notifications import WebhookDispatcher
from aegis_server.store.schema import webhook_endpoints

from .conftest import create_endpoint, error_of, escalation, propose


@pytest.mark.parametrize(
    "url",
    ["http://a\x7fb.example/hook", "http://\u2603.net/hook", "http://xn--zz.com/hook", "http://a/\x01hook"],
)
async def test_a_url_the_sender_cannot_encode_is_refused(client: httpx.AsyncClient, url: str) -> None:
    response = await client.post("/api/v1/webhooks", json={"url": url, "event_types": ["*"]})
    assert response.status_code == 422, response.text
    assert "url" in str(error_of(response)).lower()


async def test_a_stored_url_that_cannot_be_requested_fails_the_delivery_at_once(
    server: InProcessServer, client: httpx.AsyncClient
) -> None:
    endpoint = await create_endpoint(client, "http://127.0.0.1:9/hook")
    async with server.store.database.write() as conn:  # as a database edited by hand (or an older check) has it
        await conn.execute(
            sa.update(webhook_endpoints)
            .where(webhook_endpoints.c.endpoint_id == endpoint["id"])
            .values(url="http://a\x7fb.example/hook")
        )
    await propose(client, escalation())
    dispatcher = WebhookDispatcher(server.store, server.app.state.settings)
    try:
        assert await dispatcher.run_once() == 1
    finally:
        await dispatcher.stop()
    deliveries = (await client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries")).json()["items"]
    assert [(d["status"], d["attempts"]) for d in deliveries] == [("failed", 1)]
    assert "cannot be requested" in deliveries[0]["last_error"]


async def test_one_endpoints_backlog_does_not_hide_the_others(
    server: InProcessServer, client: httpx.AsyncClient
) -> None:
    hanging = await create_endpoint(client, "http://127.0.0.1:9/hanging")
    for _ in range(12):  # twelve events due for both endpoints; the hanging one's come first in due order
        await propose(client, escalation())
    healthy = await create_endpoint(client, "http://127.0.0.1:9/healthy")
    await propose(client, escalation())
    webhooks = server.store.webhooks
    assert await webhooks.fan_out() == 13
    claims = await webhooks.claim_due(limit=8, lease_seconds=5, per_endpoint=2, in_flight={hanging["id"]: 2})
    assert [claim.endpoint_id for claim in claims] == [healthy["id"]]
    more = await webhooks.claim_due(limit=8, lease_seconds=5, per_endpoint=2)
    assert sorted(claim.endpoint_id for claim in more) == [hanging["id"], hanging["id"]]


def test_serve_keeps_httpx_from_logging_webhook_urls(caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    saved: dict[str, Any] = {"handlers": root.handlers[:], "level": root.level}
    try:
        configure_logging("debug")
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert not logging.getLogger("httpcore").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = saved["handlers"]
        root.setLevel(saved["level"])
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.NOTSET)


async def test_the_outbox_forgets_finished_work_after_its_retention(
    server: InProcessServer, client: httpx.AsyncClient
) -> None:
    from datetime import timedelta

    from aegis_server.store.schema import webhook_deliveries, webhook_events

    delivered = await create_endpoint(client, "http://127.0.0.1:9/delivered")
    paused = await create_endpoint(client, "http://127.0.0.1:9/paused", enabled=False)
    await propose(client, escalation())
    webhooks = server.store.webhooks
    await webhooks.fan_out()
    async with server.store.database.write() as conn:  # one delivery done, the paused one still waiting
        await conn.execute(
            sa.update(webhook_deliveries)
            .where(webhook_deliveries.c.endpoint_id == delivered["id"])
            .values(status="delivered")
        )
    later = server.store.database.now() + timedelta(days=31)
    assert await webhooks.prune(later) == 0  # the event is kept: the paused endpoint's delivery waits for it
    async with server.store.database.read() as conn:
        left = (await conn.execute(sa.select(webhook_deliveries.c.endpoint_id))).scalars().all()
    assert left == [paused["id"]]
    assert (await client.delete(f"/api/v1/webhooks/{paused['id']}")).status_code == 204
    assert await webhooks.prune(server.store.database.now() - timedelta(days=1)) == 0  # nothing that old
    assert await webhooks.prune(later) == 1
    async with server.store.database.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(webhook_events))).scalar_one() == 0
