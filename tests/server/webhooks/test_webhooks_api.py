"""`/api/v1/webhooks`: CRUD, validation, the secret shown once, scopes, test events, deliveries, retries."""

from __future__ import annotations

import base64

import httpx
import pytest

from aegis_server.inprocess import InProcessServer
from aegis_server.security import SCOPES
from aegis_server.store.outbox import EVENT_TYPES

from .conftest import create_endpoint, error_of

URL = "https://hooks.example.test/aegis"


async def test_create_shows_the_secret_once_and_never_again(client: httpx.AsyncClient) -> None:
    created = await create_endpoint(
        client, URL, event_types=["decision.escalated"], capability="refunds.*", min_risk=0.5, description="ops"
    )
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert created["event_types"] == ["decision.escalated"]
    assert (created["capability"], created["min_risk"], created["format"], created["enabled"]) == (
        "refunds.*",
        0.5,
        "standard",
        True,
    )
    assert created["deliveries"] == {"pending": 0, "delivered": 0, "failed": 0}

    shown = await client.get(f"/api/v1/webhooks/{created['id']}")
    listed = await client.get("/api/v1/webhooks")
    assert shown.status_code == listed.status_code == 200
    assert "secret" not in shown.json()
    assert [item["id"] for item in listed.json()["items"]] == [created["id"]]
    assert secret not in shown.text + listed.text
    audit = await client.get("/api/v1/audit/log", params={"event_type": "webhook_endpoint_created"})
    assert audit.status_code == 200
    assert secret not in audit.text and "/aegis" not in audit.text  # nor the URL's path (a credential for Slack)


async def test_rotate_gives_a_new_secret_once(client: httpx.AsyncClient) -> None:
    created = await create_endpoint(client, URL)
    rotated = await client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]
    assert rotated.json()["secret"] not in (await client.get("/api/v1/webhooks")).text


async def test_update_changes_only_what_is_sent_and_null_clears_a_filter(client: httpx.AsyncClient) -> None:
    created = await create_endpoint(client, URL, capability="refunds.*", min_risk=0.7)
    path = f"/api/v1/webhooks/{created['id']}"
    changed = await client.patch(path, json={"capability": None, "enabled": False, "format": "slack"})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["capability"], body["min_risk"], body["enabled"], body["format"]) == (None, 0.7, False, "slack")
    assert body["url"] == URL

    nothing = await client.patch(path, json={})
    assert nothing.status_code == 422
    null_url = await client.patch(path, json={"url": None})
    assert null_url.status_code == 422
    assert error_of(null_url)["details"]["field"] == "url"


async def test_delete_removes_it(client: httpx.AsyncClient) -> None:
    created = await create_endpoint(client, URL)
    path = f"/api/v1/webhooks/{created['id']}"
    assert (await client.delete(path)).status_code == 204
    assert (await client.get(path)).status_code == 404
    assert (await client.delete(path)).status_code == 404
    assert (await client.post(f"{path}/rotate-secret")).status_code == 404
    assert (await client.post(f"{path}/test")).status_code == 404
    assert (await client.get(f"{path}/deliveries")).status_code == 404


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("ftp://hooks.example.test/x", "http"),
        ("https:///no-host", "host"),
        ("https://user:pw@hooks.example.test/x", "credentials"),
        ("https://hooks.example.test:99999/x", "malformed"),
        ("not a url", "spaces"),
        ("https://hooks.example.test/x#frag", "fragment"),
        ("", "1 to"),
    ],
)
async def test_bad_urls_are_refused_with_what_to_fix(client: httpx.AsyncClient, url: str, hint: str) -> None:
    response = await client.post("/api/v1/webhooks", json={"url": url, "event_types": ["*"]})
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["details"]["field"] == "url"
    assert hint in error["message"]
    assert (await client.get("/api/v1/webhooks")).json()["items"] == []


async def test_unknown_event_type_lists_the_known_ones(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/webhooks", json={"url": URL, "event_types": ["decision.allowed"]})
    assert response.status_code == 422
    error = error_of(response)
    assert error["details"]["known_event_types"] == list(EVENT_TYPES)
    assert all(event_type in error["message"] for event_type in EVENT_TYPES)
    mixed = await client.post("/api/v1/webhooks", json={"url": URL, "event_types": ["*", "review.expired"]})
    assert mixed.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"url": URL, "event_types": []},
        {"url": URL, "event_types": ["*"], "min_risk": 1.5},
        {"url": URL, "event_types": ["*"], "format": "teams"},
        {"url": URL, "event_types": ["*"], "capability": ""},
        {"url": URL, "event_types": ["*"], "secret": "whsec_mine"},
        {"event_types": ["*"]},
    ],
)
async def test_invalid_bodies_are_422(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    response = await client.post("/api/v1/webhooks", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["type"] == "validation_error"


@pytest.mark.parametrize("scope", [s for s in SCOPES if s != "admin"])
async def test_only_admin_keys_manage_webhooks(server: InProcessServer, scope: str) -> None:
    admin = server.async_http_client()
    created = await create_endpoint(admin, URL)
    other = server.async_http_client(await server.acreate_key(f"only-{scope}", [scope]))
    path = f"/api/v1/webhooks/{created['id']}"
    attempts = [
        other.post("/api/v1/webhooks", json={"url": URL, "event_types": ["*"]}),
        other.get("/api/v1/webhooks"),
        other.get(path),
        other.patch(path, json={"enabled": False}),
        other.delete(path),
        other.post(f"{path}/rotate-secret"),
        other.post(f"{path}/test"),
        other.get(f"{path}/deliveries"),
        other.post(f"{path}/deliveries/1/retry"),
    ]
    for attempt in attempts:
        response = await attempt
        assert response.status_code == 403, response.text
        assert error_of(response)["code"] == "missing_scope"
    unchanged = (await admin.get(path)).json()
    assert unchanged["enabled"] is True
    assert len((await admin.get("/api/v1/webhooks")).json()["items"]) == 1


async def test_no_key_is_401(server: InProcessServer) -> None:
    anonymous = httpx.AsyncClient(transport=server.async_transport(), base_url=server.endpoint)
    async with anonymous:
        assert (await anonymous.get("/api/v1/webhooks")).status_code == 401
        assert (await anonymous.post("/api/v1/webhooks", json={"url": URL, "event_types": ["*"]})).status_code == 401


async def test_test_event_is_queued_for_that_endpoint_only(client: httpx.AsyncClient) -> None:
    first = await create_endpoint(client, URL, event_types=["decision.denied"])
    second = await create_endpoint(client, URL + "/2")
    queued = await client.post(f"/api/v1/webhooks/{first['id']}/test")
    assert queued.status_code == 202, queued.text
    delivery = queued.json()
    assert (delivery["event_type"], delivery["status"], delivery["endpoint_id"]) == (
        "webhook.test",
        "pending",
        first["id"],
    )
    assert delivery["event_id"].startswith("msg_")
    pending = (await client.get(f"/api/v1/webhooks/{first['id']}/deliveries", params={"status": "pending"})).json()
    assert [item["id"] for item in pending["items"]] == [delivery["id"]]
    assert (await client.get(f"/api/v1/webhooks/{second['id']}/deliveries")).json()["items"] == []


async def test_deliveries_page_with_a_cursor(client: httpx.AsyncClient) -> None:
    created = await create_endpoint(client, URL)
    path = f"/api/v1/webhooks/{created['id']}"
    ids = [(await client.post(f"{path}/test")).json()["id"] for _ in range(5)]
    first = (await client.get(f"{path}/deliveries", params={"limit": 2})).json()
    assert [item["id"] for item in first["items"]] == ids[::-1][:2]
    second = (await client.get(f"{path}/deliveries", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    third = (await client.get(f"{path}/deliveries", params={"limit": 2, "cursor": second["next_cursor"]})).json()
    assert [item["id"] for item in second["items"] + third["items"]] == ids[::-1][2:]
    assert third["next_cursor"] is None
    forged = await client.get(f"{path}/deliveries", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert forged.status_code == 422
    assert error_of(forged)["details"]["field"] == "cursor"
    bad_status = await client.get(f"{path}/deliveries", params={"status": "lost"})
    assert bad_status.status_code == 422


async def test_retry_refuses_what_is_not_failed_or_not_there(client: httpx.AsyncClient) -> None:
    created = await create_endpoint(client, URL)
    other = await create_endpoint(client, URL + "/other")
    path = f"/api/v1/webhooks/{created['id']}"
    delivery = (await client.post(f"{path}/test")).json()
    pending = await client.post(f"{path}/deliveries/{delivery['id']}/retry")
    assert pending.status_code == 409
    assert error_of(pending)["code"] == "delivery_not_failed"
    assert (await client.post(f"{path}/deliveries/999999/retry")).status_code == 404
    # a delivery of one endpoint cannot be reached through another's path
    assert (await client.post(f"/api/v1/webhooks/{other['id']}/deliveries/{delivery['id']}/retry")).status_code == 404
    assert (await client.post(f"{path}/deliveries/not-a-number/retry")).status_code == 422
    assert (await client.post(f"{path}/deliveries/{10**30}/retry")).status_code == 422
    assert (await client.post(f"{path}/deliveries/0/retry")).status_code == 422
