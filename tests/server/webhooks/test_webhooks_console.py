"""`/console/webhooks`: endpoints and failed deliveries for admin keys, a Retry that re-queues the same
webhook-id, and refusals without admin, without a session or without the CSRF token."""

from __future__ import annotations

import re
from html import unescape

import httpx

from aegis_server.inprocess import InProcessServer
from aegis_server.store.webhooks import DeliveryResult

ORIGIN = "http://testserver"
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
SECRET_PATH = "/services/T000/B000/secret-path"


def _browser(server: InProcessServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app), base_url=ORIGIN)


async def _sign_in(client: httpx.AsyncClient, key: str) -> None:
    response = await client.post("/console/sign-in", data={"api_key": key})
    assert response.status_code == 303, response.text


def _messages(html: str) -> list[tuple[str, str]]:
    return [(role, unescape(text.strip())) for role, text in re.findall(r'role="(status|alert)"[^>]*>([^<]*)<', html)]


async def _failed_delivery(server: InProcessServer) -> tuple[str, int, str]:
    """An endpoint with one failed delivery (a test event whose only attempt got a 500): ids and webhook-id."""
    endpoint, _ = await server.store.webhooks.create_endpoint(
        "https://hooks.example.test" + SECRET_PATH, ["*"], description="ops <channel>"
    )
    queued = await server.store.webhooks.queue_test_event(endpoint.endpoint_id)
    assert queued is not None
    [claim] = await server.store.webhooks.claim_due(limit=1, lease_seconds=5)
    failed = DeliveryResult(delivered=False, status_code=500, error="HTTP 500")
    assert await server.store.webhooks.record_attempt(claim, failed, server.store.database.now())
    return endpoint.endpoint_id, queued.delivery_id, queued.event_id


async def _status(server: InProcessServer, endpoint_id: str, delivery_id: int) -> str:
    delivery = await server.store.webhooks.get_delivery(endpoint_id, delivery_id)
    assert delivery is not None
    return delivery.status


async def test_admin_sees_endpoints_and_failures_and_retries_one(server: InProcessServer) -> None:
    endpoint_id, delivery_id, event_id = await _failed_delivery(server)
    async with _browser(server) as admin:
        await _sign_in(admin, server.api_key)
        page = await admin.get("/console/webhooks")
        assert page.status_code == 200, page.text
        html = page.text
        assert "<h1>Webhooks</h1>" in html
        assert "https://hooks.example.test/…" in html
        assert SECRET_PATH not in html  # the URL's path may be a credential
        assert "ops &lt;channel&gt;" in html  # escaped
        assert event_id in html and "HTTP 500" in html
        assert 'aria-label="Console"' in html and ">Webhooks</a>" in html
        token = CSRF.search(html)
        assert token is not None

        retry = await admin.post(
            f"/console/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry", data={"csrf_token": token.group(1)}
        )
        assert retry.status_code == 303
        assert retry.headers["location"] == "/console/webhooks"
        assert await _status(server, endpoint_id, delivery_id) == "pending"
        after = await admin.get("/console/webhooks")
        [(role, text)] = _messages(after.text)
        assert role == "status" and event_id in text

        again = await admin.post(
            f"/console/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry", data={"csrf_token": token.group(1)}
        )
        assert again.status_code == 303
        [(role, text)] = _messages((await admin.get("/console/webhooks")).text)
        assert role == "alert" and "pending" in text


async def test_a_key_without_admin_is_refused(server: InProcessServer) -> None:
    endpoint_id, delivery_id, _ = await _failed_delivery(server)
    key = await server.acreate_key("rita-reviewer", ["governance:review", "audit:read", "policies:manage"])
    async with _browser(server) as reviewer:
        await _sign_in(reviewer, key)
        page = await reviewer.get("/console/webhooks")
        assert page.status_code == 403
        assert any("admin" in text for role, text in _messages(page.text) if role == "alert")
        assert ">Webhooks</a>" not in (await reviewer.get("/console/inbox")).text
        token = CSRF.search((await reviewer.get("/console/inbox")).text)
        assert token is not None
        refused = await reviewer.post(
            f"/console/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry", data={"csrf_token": token.group(1)}
        )
        assert refused.status_code == 403
    assert await _status(server, endpoint_id, delivery_id) == "failed"


async def test_no_session_and_forged_posts_change_nothing(server: InProcessServer) -> None:
    endpoint_id, delivery_id, _ = await _failed_delivery(server)
    path = f"/console/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry"
    async with _browser(server) as anonymous:
        page = await anonymous.get("/console/webhooks")
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/sign-in?next=")
        assert (await anonymous.post(path, data={"csrf_token": "0" * 64})).status_code in (303, 401)
    async with _browser(server) as admin:
        await _sign_in(admin, server.api_key)
        token = CSRF.search((await admin.get("/console/webhooks")).text)
        assert token is not None
        missing = await admin.post(path, data={})
        wrong = await admin.post(path, data={"csrf_token": "0" * len(token.group(1))})
        foreign = await admin.post(
            path, data={"csrf_token": token.group(1)}, headers={"Origin": "https://evil.example"}
        )
        for response in (missing, wrong, foreign):
            assert response.status_code == 403
            assert (
                "alert",
                "This form expired or came from another site. Reload the page and try again.",
            ) in _messages(response.text)
        unknown = await admin.post(
            f"/console/webhooks/{endpoint_id}/deliveries/999999/retry", data={"csrf_token": token.group(1)}
        )
        assert unknown.status_code == 303
        [(role, _)] = _messages((await admin.get("/console/webhooks")).text)
        assert role == "alert"
    assert await _status(server, endpoint_id, delivery_id) == "failed"


async def test_empty_page(server: InProcessServer) -> None:
    async with _browser(server) as admin:
        await _sign_in(admin, server.api_key)
        page = await admin.get("/console/webhooks")
    assert page.status_code == 200
    assert "No webhook endpoints" in page.text and "No failed deliveries" in page.text
