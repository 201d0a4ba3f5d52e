"""Capabilities and policies through the API: file items are read-only, writes recompile the whole set and
swap it only if it compiles, other replicas pick changes up; health, readiness, metrics, OpenAPI."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import ServerFactory, error_of, proposal, propose

from aegis_server.inprocess import InProcessServer

EMAIL = {
    "name": "email.send",
    "description": "Send an email.",
    "risk_level": "medium",
    "parameter_schema": {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]},
}
EMAIL_POLICY = {
    "name": "email",
    "description": "Internal mail only.",
    "rules": [
        {
            "id": "internal",
            "capability": "email.send",
            "condition": "action.parameters.to.endsWith('@corp.example')",
            "outcome": "ALLOW",
        },
        {
            "id": "external",
            "capability": "email.send",
            "condition": "!action.parameters.to.endsWith('@corp.example')",
            "outcome": "REQUIRE_CONFIRMATION",
        },
    ],
}


async def test_file_items_are_listed(client: httpx.AsyncClient) -> None:
    capabilities = (await client.get("/api/v1/capabilities")).json()
    assert [c["name"] for c in capabilities] == ["database.drop", "database.query", "payments.transfer"]
    one = (await client.get("/api/v1/capabilities/database.query")).json()
    assert one["parameter_schema"]["properties"]["password"]["x-sensitive"] is True
    policies = (await client.get("/api/v1/policies")).json()
    assert [p["name"] for p in policies] == ["baseline"]
    assert (await client.get("/api/v1/policies/baseline")).json()["rules"][0]["id"] == "read"


@pytest.mark.parametrize("path", ["/api/v1/capabilities/nope", "/api/v1/policies/nope"])
async def test_unknown_items_are_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found"


async def test_register_a_capability_and_a_policy_then_use_them(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/capabilities", json=EMAIL)
    assert created.status_code == 201
    assert created.json()["name"] == "email.send"
    replaced = await client.post("/api/v1/capabilities", json={**EMAIL, "description": "v2"})
    assert replaced.status_code == 200
    # A capability without rules is default-deny.
    assert (await propose(client, proposal("email.send", to="a@corp.example"))).json()["outcome"] == "DENY"

    response = await client.post("/api/v1/policies", json=EMAIL_POLICY)
    assert response.status_code == 201
    assert (await propose(client, proposal("email.send", to="a@corp.example"))).json()["outcome"] == "ALLOW"
    external = (await propose(client, proposal("email.send", to="x@else.example"))).json()
    assert external["outcome"] == "REQUIRE_CONFIRMATION"

    again = await client.post("/api/v1/policies", json=EMAIL_POLICY)
    assert (again.status_code, error_of(again)["code"]) == (409, "policy_conflict")

    deny_all = {**EMAIL_POLICY, "rules": [{"capability": "email.*", "outcome": "DENY"}]}
    put = await client.put("/api/v1/policies/email", json=deny_all)
    assert put.status_code == 200
    assert (await propose(client, proposal("email.send", to="a@corp.example"))).json()["outcome"] == "DENY"

    assert (await client.delete("/api/v1/policies/email")).status_code == 204
    assert (await client.get("/api/v1/policies/email")).status_code == 404
    assert (await client.delete("/api/v1/policies/email")).status_code == 404
    put_new = await client.put("/api/v1/policies/email", json=EMAIL_POLICY)
    assert put_new.status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/policies", {"name": "baseline", "rules": []}),
        ("PUT", "/api/v1/policies/baseline", {"name": "baseline", "rules": []}),
        ("DELETE", "/api/v1/policies/baseline", None),
        ("POST", "/api/v1/capabilities", {"name": "database.query"}),
    ],
)
async def test_file_defined_items_cannot_be_changed(
    client: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == 409
    error = error_of(response)
    assert (error["type"], error["code"]) == ("governance_error", "policy_conflict")
    assert "policies.yaml" in error["details"]["source"]


async def test_a_policy_that_does_not_compile_changes_nothing(client: httpx.AsyncClient) -> None:
    before = (await client.get("/api/v1/ready")).json()["checks"]["policies"]["digest"]
    broken = {
        "name": "broken",
        "rules": [{"id": "bad", "capability": "database.query", "condition": "actor.id ==", "outcome": "DENY"}],
    }
    response = await client.post("/api/v1/policies", json=broken)
    assert response.status_code == 422
    error = error_of(response)
    assert (error["type"], error["code"]) == ("governance_error", "invalid_policy")
    assert error["details"]["errors"][0]["policy"] == "broken"
    assert error["details"]["errors"][0]["rule"] == "bad"
    assert (await client.get("/api/v1/policies/broken")).status_code == 404
    assert (await client.get("/api/v1/ready")).json()["checks"]["policies"]["digest"] == before
    assert (await propose(client, proposal())).json()["outcome"] == "ALLOW"


async def test_put_with_another_name_in_the_body_is_422(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/v1/policies/one", json={**EMAIL_POLICY, "name": "two"})
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_request"


async def test_validate_is_a_dry_run(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/capabilities", json=EMAIL)
    ok = (await client.post("/api/v1/policies/validate", json=EMAIL_POLICY)).json()
    assert ok == {"valid": True, "errors": []}
    assert (await client.get("/api/v1/policies/email")).status_code == 404
    bad = {**EMAIL_POLICY, "rules": [{"capability": "email.send", "condition": "nope.x == 1", "outcome": "ALLOW"}]}
    result = (await client.post("/api/v1/policies/validate", json=bad)).json()
    assert result["valid"] is False
    assert result["errors"][0]["policy"] == "email"
    file_one = (await client.post("/api/v1/policies/validate", json={"name": "baseline", "rules": []})).json()
    assert file_one["valid"] is False


async def test_other_replicas_pick_up_api_changes(make_server: ServerFactory) -> None:
    async with (
        make_server(policy_refresh_interval_seconds=0) as first,
        make_server(policy_refresh_interval_seconds=0) as second,
    ):
        a, b = first.async_http_client(), second.async_http_client()
        assert (await a.post("/api/v1/capabilities", json=EMAIL)).status_code == 201
        assert (await a.post("/api/v1/policies", json=EMAIL_POLICY)).status_code == 201
        decision = (await propose(b, proposal("email.send", to="a@corp.example"))).json()
        assert decision["outcome"] == "ALLOW"
        assert [p["name"] for p in (await b.get("/api/v1/policies")).json()] == ["baseline", "email"]


async def test_api_items_survive_a_restart(make_server: ServerFactory) -> None:
    async with make_server() as server:
        client = server.async_http_client()
        await client.post("/api/v1/capabilities", json=EMAIL)
        await client.post("/api/v1/policies", json=EMAIL_POLICY)
    async with make_server() as server:
        decision = (await propose(server.async_http_client(), proposal("email.send", to="a@corp.example"))).json()
    assert decision["outcome"] == "ALLOW"


# -- health, readiness, metrics, OpenAPI ----------------------------------------------------------


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    health = (await client.get("/api/v1/health")).json()
    assert health["status"] == "ok"
    ready = (await client.get("/api/v1/ready")).json()
    assert ready["status"] == "ready"
    assert ready["checks"]["store"] == {"ok": True}
    assert ready["checks"]["policies"]["rules"] == 5


async def test_not_ready_when_the_store_is_down(server: InProcessServer, client: httpx.AsyncClient) -> None:
    async def down() -> bool:
        return False

    server.store.ping = down  # type: ignore[method-assign]
    response = await client.get("/api/v1/ready")
    assert response.status_code == 503
    error = error_of(response)
    assert (error["type"], error["code"]) == ("server_error", "unavailable")
    # Since issue 13 the store check names the cause (docs/api.md, /ready).
    assert error["details"]["checks"]["store"] == {
        "ok": False,
        "cause": "unreachable",
        "message": "the database cannot be reached",
    }
    assert response.headers["retry-after"] == "1"


async def test_metrics_count_decisions_and_requests(client: httpx.AsyncClient) -> None:
    await propose(client, proposal())
    await propose(client, proposal("database.drop"))
    await propose(client, proposal("no.such"))
    text = (await client.get("/metrics")).text
    assert 'aegis_decisions_total{outcome="ALLOW"} 1.0' in text
    assert 'aegis_decisions_total{outcome="DENY"} 1.0' in text
    assert 'aegis_proposals_rejected_total{code="unknown_capability"} 1.0' in text
    assert "aegis_decision_latency_seconds_count 2.0" in text
    assert "aegis_audit_failures_total 0.0" in text
    assert 'route="/api/v1/governance/propose"' in text
    assert "aegis_policy_rules 5.0" in text


async def test_each_app_has_its_own_registry(make_server: ServerFactory, tmp_path: Any) -> None:
    async with make_server() as one, make_server(db_url=f"sqlite+aiosqlite:///{tmp_path / 'two.db'}") as two:
        await propose(one.async_http_client(), proposal())
        text = (await two.async_http_client().get("/metrics")).text
    assert 'aegis_decisions_total{outcome="ALLOW"} 0.0' in text


async def test_openapi_documents_every_route_and_the_envelope(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    assert {
        "/api/v1/governance/propose",
        "/api/v1/governance/decisions",
        "/api/v1/governance/decisions/{decision_id}",
        "/api/v1/governance/decisions/{decision_id}/review",
        "/api/v1/governance/decisions/{decision_id}/execution",
        "/api/v1/capabilities",
        "/api/v1/capabilities/{name}",
        "/api/v1/policies",
        "/api/v1/policies/{name}",
        "/api/v1/policies/validate",
        "/api/v1/audit/log",
        "/api/v1/audit/log/{decision_id}",
        "/api/v1/audit/verify",
        "/api/v1/health",
        "/api/v1/ready",
    } <= set(paths)
    propose_doc = paths["/api/v1/governance/propose"]["post"]
    assert propose_doc["responses"]["409"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorEnvelope")
    assert any(p["name"] == "Idempotency-Key" for p in propose_doc["parameters"])
    assert "HTTPBearer" in document["components"]["securitySchemes"]
