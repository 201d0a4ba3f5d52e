"""Execution reports of governed routes go through the client's background reporter: queued on the request's
path, sent batched off it, retried, flushed by `aegis.drain()` and at the lifespan's shutdown — against the real
server (router apps over uvicorn) and the fake platform (failures on the batch endpoint)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from fastapi_support import BOT, POLICIES, asgi_client, build_app, build_router_app, current_actor, serve

import aegis_sdk._reporter
from aegis_fastapi import DECISION_HEADER, Aegis
from aegis_sdk.testing import FakePlatform
from aegis_server.inprocess import InProcessServer

REFUND = {"amount": 10, "currency": "EUR"}


async def test_router_apps_report_each_governed_request_and_the_lifespan_flushes_at_shutdown() -> None:
    """Routes governed by `require` on a nested router, by a router's `dependencies=` and by
    `include_router(..., dependencies=...)`: each ALLOW ends with one execution record, sent by the reporter of
    the client the lifespan created, and flushed when the app shuts down (before the client is closed)."""
    async with InProcessServer(policy_paths=[POLICIES]) as platform:
        key = await platform.acreate_key("shop", ["governance:propose", "governance:read"])
        auditor = platform.async_client(await platform.acreate_key("auditor", ["audit:read"]))
        async with serve(platform.app, lifespan="off") as aegis_url:
            aegis = Aegis(actor=current_actor, endpoint=aegis_url, api_key=key, retries=0)
            app = build_router_app(aegis)
            async with serve(app) as app_url, httpx.AsyncClient(base_url=app_url) as http:
                answers = [
                    await http.post("/v1/orders/A-1/refunds", json=REFUND, headers=BOT),
                    await http.post("/v1/admin/refunds/A-2", json=REFUND, headers=BOT),
                    await http.post("/db/queries", params={"query": "SELECT 1", "database": "staging"}, headers=BOT),
                ]
                client = aegis.client
            # the app's lifespan has ended: it flushed the reports, then closed its client
            assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
            stats = client.report_stats
            assert (stats.queued, stats.sent, stats.failed, stats.pending, stats.synchronous) == (3, 3, 0, 0, 0)
            for answer in answers:
                trail = await auditor.audit.trail(answer.headers[DECISION_HEADER])
                executions = [r.payload["status"] for r in trail.records if r.event_type == "execution"]
                assert executions == ["SUCCESS"], answer.request.url
        await auditor.aclose()


async def test_a_report_whose_first_batch_meets_a_503_is_retried_and_lands() -> None:
    fake = FakePlatform()
    fake.fail_next(503, times=1, path="*/executions/batch", retry_after=0)
    aegis = Aegis(actor=current_actor, client=fake.async_client(retries=0, retry_delay=0.001))
    app = build_app(aegis)
    async with asgi_client(app) as http:
        response = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code == 200
    assert await aegis.drain()
    decision_id = response.headers[DECISION_HEADER]
    assert list(fake.executions) == [decision_id] and fake.executions[decision_id].status == "SUCCESS"
    stats = aegis.client.report_stats
    assert (stats.sent, stats.retried, stats.failed) == (1, 1, 0)
    batches = [r for r in fake.requests if r.path.endswith("/executions/batch")]
    assert len(batches) == 2  # the 503, then the batch that landed


async def test_a_refused_report_is_counted_and_logged_never_reaching_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakePlatform()
    fake.fail_next(403, times=1, path="*/executions/batch")
    aegis = Aegis(actor=current_actor, client=fake.async_client(retries=0))
    app = build_app(aegis)
    with caplog.at_level(logging.WARNING, logger="aegis_sdk"):
        async with asgi_client(app) as http:
            response = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
        assert await aegis.drain()
    assert response.status_code == 200
    assert fake.executions == {} and aegis.client.report_stats.failed == 1
    assert response.headers[DECISION_HEADER] in caplog.text


async def test_a_degraded_decision_is_never_queued() -> None:
    fake = FakePlatform()
    fake.fail_with_connect_error(times=1)
    aegis = Aegis(actor=current_actor, client=fake.async_client(retries=0), fail_open=True)
    async with asgi_client(build_app(aegis)) as http:
        response = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code == 200 and response.json()["degraded"] is True
    assert await aegis.drain()
    assert aegis.client.report_stats.queued == 0 and fake.executions == {}
    assert not [r for r in fake.requests if "execution" in r.path]


def test_a_loop_ending_without_a_flush_keeps_the_report_and_says_so(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No lifespan runs (httpx.ASGITransport) and nothing drains: when the request's event loop ends, the
    report stays queued (a WARNING says so and what to do) and the next `drain()` sends it."""
    monkeypatch.setattr(aegis_sdk._reporter, "REPORT_LINGER", 30.0)  # the worker is still waiting for a batch
    fake = FakePlatform()
    aegis = Aegis(actor=current_actor, client=fake.async_client())
    app = build_app(aegis)

    async def one_request() -> Any:
        async with asgi_client(app) as http:
            return await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)

    with caplog.at_level(logging.WARNING, logger="aegis_sdk"):
        response = asyncio.run(one_request())
    assert response.status_code == 200
    assert "event loop ended with 1 execution report(s) still queued" in caplog.text
    assert fake.executions == {} and aegis.client.report_stats.pending == 1

    async def drain() -> bool:
        return await aegis.drain()

    assert asyncio.run(drain())
    assert list(fake.executions) == [response.headers[DECISION_HEADER]]
