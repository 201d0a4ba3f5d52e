"""The scope matrix of every route, asserted from one table: 401 without / with a bad key, 403 without the
scope, through with the scope or with `admin`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import error_of, proposal

from aegis_server.inprocess import InProcessServer
from aegis_server.security import SCOPES

POLICY = {"name": "scoped", "rules": [{"capability": "database.query", "outcome": "ALLOW"}]}
CAPABILITY = {"name": "scoped.cap", "risk_level": "low"}

# (method, path, json body, scope) — every authenticated route of the contract.
ROUTES: list[tuple[str, str, Any, str]] = [
    ("POST", "/api/v1/governance/propose", proposal(), "governance:propose"),
    ("GET", "/api/v1/governance/decisions/dec_x", None, "governance:read"),
    ("GET", "/api/v1/governance/decisions", None, "governance:read"),
    ("POST", "/api/v1/governance/decisions/dec_x/review", {"approve": True}, "governance:review"),
    ("POST", "/api/v1/governance/decisions/dec_x/execution", {"status": "SUCCESS"}, "governance:propose"),
    (
        "POST",
        "/api/v1/governance/executions/batch",
        {"reports": [{"decision_id": "dec_x", "status": "SUCCESS"}]},
        "governance:propose",
    ),
    ("GET", "/api/v1/capabilities", None, "governance:read"),
    ("POST", "/api/v1/capabilities", CAPABILITY, "policies:manage"),
    ("GET", "/api/v1/capabilities/database.query", None, "governance:read"),
    ("GET", "/api/v1/policies", None, "governance:read"),
    ("POST", "/api/v1/policies", POLICY, "policies:manage"),
    ("POST", "/api/v1/policies/validate", POLICY, "policies:manage"),
    ("POST", "/api/v1/policies/replay", {"since": "1h", "candidate": {"version": 1}}, "policies:manage"),
    ("GET", "/api/v1/policies/baseline", None, "governance:read"),
    ("PUT", "/api/v1/policies/scoped", POLICY, "policies:manage"),
    ("DELETE", "/api/v1/policies/scoped", None, "policies:manage"),
    ("GET", "/api/v1/audit/log", None, "audit:read"),
    ("GET", "/api/v1/audit/log/dec_x", None, "audit:read"),
    ("GET", "/api/v1/audit/verify", None, "audit:read"),
    ("GET", "/api/v1/keys", None, "admin"),
    ("POST", "/api/v1/keys", {"name": "made-by-the-matrix", "scopes": ["governance:read"]}, "admin"),
    ("GET", "/api/v1/keys/key_x", None, "admin"),
    ("PATCH", "/api/v1/keys/key_x", {"rate_limit_per_minute": 10}, "admin"),
    ("DELETE", "/api/v1/keys/key_x", None, "admin"),
    ("POST", "/api/v1/webhooks", {"url": "https://hooks.example.test/x", "event_types": ["*"]}, "admin"),
    ("GET", "/api/v1/webhooks", None, "admin"),
    ("GET", "/api/v1/webhooks/whe_x", None, "admin"),
    ("PATCH", "/api/v1/webhooks/whe_x", {"enabled": False}, "admin"),
    ("DELETE", "/api/v1/webhooks/whe_x", None, "admin"),
    ("POST", "/api/v1/webhooks/whe_x/rotate-secret", None, "admin"),
    ("POST", "/api/v1/webhooks/whe_x/test", None, "admin"),
    ("GET", "/api/v1/webhooks/whe_x/deliveries", None, "admin"),
    ("POST", "/api/v1/webhooks/whe_x/deliveries/1/retry", None, "admin"),
    ("GET", "/api/v1/policy-versions", None, "governance:read"),
    ("GET", "/api/v1/policy-versions/1", None, "governance:read"),
    ("GET", "/api/v1/policy-versions/1/diff", None, "governance:read"),
    ("POST", "/api/v1/policy-versions/1/rollback", None, "policies:manage"),
]
OPEN_ROUTES = ["/api/v1/health", "/api/v1/ready", "/metrics", "/openapi.json"]
IDS = [f"{method} {path}" for method, path, _, _ in ROUTES]


async def _call(client: httpx.AsyncClient, method: str, path: str, body: Any, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    client.headers.pop("Authorization", None)
    return await client.request(method, path, json=body, headers=headers)


def test_the_table_covers_every_authenticated_route(server: InProcessServer) -> None:
    # From the OpenAPI document, not `app.routes`: FastAPI 0.137+ keeps an included router (the keys routes)
    # as one entry there, which would hide its routes from this check.
    routes = {
        (method.upper(), path)
        for path, operations in server.app.openapi()["paths"].items()
        for method in operations
        if path.startswith("/api/")
    }
    assert ("POST", "/api/v1/keys") in routes
    documented = {
        (m, p.replace("dec_x", "{decision_id}").replace("key_x", "{key_id}").replace("whe_x", "{endpoint_id}"))
        for m, p, _, _ in ROUTES
    }
    documented = {(m, p.replace("/deliveries/1/", "/deliveries/{delivery_id}/")) for m, p in documented}
    documented = {(m, p.replace("/policy-versions/1", "/policy-versions/{version}")) for m, p in documented}
    documented |= {("GET", "/api/v1/capabilities/{name}"), ("GET", "/api/v1/policies/{name}")}
    documented |= {("PUT", "/api/v1/policies/{name}"), ("DELETE", "/api/v1/policies/{name}")}
    documented |= {("GET", "/api/v1/health"), ("GET", "/api/v1/ready")}
    assert routes <= documented, routes - documented


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES, ids=IDS)
async def test_scope_matrix(server: InProcessServer, method: str, path: str, body: Any, scope: str) -> None:
    client = server.async_http_client()
    missing = await _call(client, method, path, body, None)
    assert missing.status_code == 401
    assert error_of(missing)["code"] == "missing_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"

    invalid = await _call(client, method, path, body, "aegis_sk_not-a-real-key")
    assert invalid.status_code == 401
    assert (error_of(invalid)["type"], error_of(invalid)["code"]) == ("authentication_error", "invalid_api_key")

    for other in SCOPES:
        key = await server.acreate_key(f"only-{other}", [other])
        response = await _call(client, method, path, body, key)
        if other in (scope, "admin"):
            assert response.status_code not in (401, 403), (other, response.text)
        else:
            assert response.status_code == 403, (other, response.text)
            error = error_of(response)
            assert (error["type"], error["code"]) == ("permission_error", "missing_scope")
            assert error["details"]["required_scope"] == scope


@pytest.mark.parametrize("path", OPEN_ROUTES)
async def test_open_routes_need_no_key(server: InProcessServer, path: str) -> None:
    client = server.async_http_client()
    assert (await _call(client, "GET", path, None, None)).status_code == 200


async def test_a_revoked_key_is_rejected(make_server: Any) -> None:
    async with make_server(auth_cache_seconds=0) as server:
        key = await server.acreate_key("temp", ["governance:read"])
        client = server.async_http_client(key)
        assert (await client.get("/api/v1/capabilities")).status_code == 200
        [stored] = [k for k in await server.store.list_api_keys() if k.name == "temp"]
        assert await server.store.revoke_api_key(stored.key_id)
        response = await client.get("/api/v1/capabilities")
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"
