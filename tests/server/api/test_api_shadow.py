"""Shadow mode through the real app: a policy saved with `mode: shadow` is evaluated on every proposal, its
entries are on the decision (propose response, GET decision, SDK), in the audit and in /metrics, and the
enforced decision is what it would be without it."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from conftest import POLICIES, Clock, error_of, proposal, propose

from aegis_server.inprocess import InProcessServer

# Tried on database.query: DENY queries on production, ALLOW everything (an agreeing entry).
TRIAL = {
    "name": "trial",
    "description": "stricter rules, tried before they are enforced",
    "mode": "shadow",
    "rules": [
        {
            "id": "no-production",
            "capability": "database.query",
            "condition": "has(action.parameters.database) && action.parameters.database == 'production'",
            "outcome": "DENY",
            "reason": "production is off limits for agents",
        },
        {"id": "drop-allowed", "capability": "database.drop", "outcome": "ALLOW"},
    ],
}


async def with_trial(client: httpx.AsyncClient, body: dict[str, Any] | None = None) -> None:
    response = await client.post("/api/v1/policies", json=body or TRIAL)
    assert response.status_code == 201, response.text


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of `name` with exactly these labels in the Prometheus text (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def test_a_shadow_policy_is_recorded_and_changes_nothing(client: httpx.AsyncClient) -> None:
    body = proposal(query="SELECT 1", database="production")
    before = (await propose(client, body)).json()
    await with_trial(client)
    after = (await propose(client, body)).json()
    for field in ("outcome", "reason", "policy_ids", "constraints", "risk_score"):
        assert after[field] == before[field], field
    assert after["outcome"] == "REQUIRE_CONFIRMATION" and after["confirmation_token"]
    assert after["shadow"] == [
        {
            "policy_id": "trial/no-production",
            "outcome": "DENY",
            "reason": after["shadow"][0]["reason"],
        }
    ]
    assert after["shadow"][0]["reason"].startswith("DENY by trial/no-production: production is off limits")
    assert "policy_version" in after

    stored = (await client.get(f"/api/v1/governance/decisions/{after['decision_id']}")).json()
    assert stored["shadow"] == after["shadow"]
    assert stored["policy_version"] == after["policy_version"]


async def test_shadow_is_absent_from_the_json_when_empty(client: httpx.AsyncClient) -> None:
    await with_trial(client)
    decision = (await propose(client, proposal(query="SELECT 1", database="staging"))).json()
    assert decision["outcome"] == "ALLOW"
    assert "shadow" not in decision
    stored = (await client.get(f"/api/v1/governance/decisions/{decision['decision_id']}")).json()
    assert "shadow" not in stored
    records = (await client.get(f"/api/v1/audit/log/{decision['decision_id']}")).json()["records"]
    (decided,) = [record for record in records if record["event_type"] == "decision"]
    assert "shadow" not in decided["payload"]


async def test_the_audit_keeps_the_shadow_entries(client: httpx.AsyncClient) -> None:
    await with_trial(client)
    decision = (await propose(client, proposal("database.drop"))).json()
    assert decision["outcome"] == "DENY" and decision["policy_ids"] == ["baseline/no-drop"]
    assert [(e["policy_id"], e["outcome"]) for e in decision["shadow"]] == [("trial/drop-allowed", "DENY")]
    records = (await client.get(f"/api/v1/audit/log/{decision['decision_id']}")).json()["records"]
    (decided,) = [record for record in records if record["event_type"] == "decision"]
    assert decided["payload"]["shadow"] == decision["shadow"]
    assert decided["payload"]["policy_version"] == decision["policy_version"]
    verification = (await client.get("/api/v1/audit/verify")).json()
    assert verification["valid"] is True, verification["problems"]


async def test_metrics_count_shadow_outcomes_and_only_differing_ones_as_disagreements(
    client: httpx.AsyncClient,
) -> None:
    await with_trial(client)
    await propose(client, proposal(query="SELECT 1", database="production"))  # enforced REQUIRE_CONFIRMATION
    await propose(client, proposal(query="SELECT 2", database="production"))
    await propose(client, proposal("database.drop"))  # the would-be is DENY too: no disagreement
    text = (await client.get("/metrics")).text
    disagreements = "aegis_shadow_disagreements_total"
    assert metric(
        text, disagreements, policy_id="trial/no-production", enforced="REQUIRE_CONFIRMATION", shadow="DENY"
    ) == pytest.approx(2.0)
    assert metric(text, disagreements, policy_id="trial/drop-allowed", enforced="DENY", shadow="DENY") == 0.0
    assert f'{disagreements}{{policy_id="trial/drop-allowed"' not in text
    outcomes = "aegis_shadow_outcomes_total"
    assert metric(text, outcomes, policy_id="trial/no-production", differs="true") == pytest.approx(2.0)
    assert metric(text, outcomes, policy_id="trial/drop-allowed", differs="false") == pytest.approx(1.0)


async def test_a_confirmation_carries_no_shadow_entries_and_is_not_counted_again(client: httpx.AsyncClient) -> None:
    await with_trial(client)
    body = proposal(query="SELECT 1", database="production")
    first = (await propose(client, body)).json()
    confirmed = (await propose(client, {**body, "confirmation_token": first["confirmation_token"]})).json()
    assert confirmed["outcome"] == "ALLOW" and confirmed["parent_decision_id"] == first["decision_id"]
    assert "shadow" not in confirmed  # the entries belong to the decision that was made: the parent's
    assert confirmed["policy_version"] == first["policy_version"]
    text = (await client.get("/metrics")).text
    assert metric(text, "aegis_shadow_outcomes_total", policy_id="trial/no-production", differs="true") == 1.0


async def test_an_idempotent_retry_answers_the_same_entries_without_counting_them_twice(
    client: httpx.AsyncClient,
) -> None:
    await with_trial(client)
    body = proposal(query="SELECT 1", database="production")
    first = (await propose(client, body, **{"Idempotency-Key": "once"})).json()
    again = (await propose(client, body, **{"Idempotency-Key": "once"})).json()
    assert again == first and again["shadow"]
    text = (await client.get("/metrics")).text
    assert metric(text, "aegis_shadow_outcomes_total", policy_id="trial/no-production", differs="true") == 1.0


def test_the_sdk_client_reads_the_shadow_entries(tmp_path: Any, clock: Clock) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sdk.db'}"
    with InProcessServer(policy_paths=[POLICIES], db_url=url, clock=clock, run_background_tasks=False) as server:
        assert server.http_client().post("/api/v1/policies", json=TRIAL).status_code == 201
        client = server.client()
        decision = client.propose(
            {"id": "agent-1", "type": "ai-agent"},
            {"capability": "database.query", "parameters": {"query": "SELECT 1", "database": "production"}},
        )
        assert decision.outcome == "REQUIRE_CONFIRMATION"
        assert decision.shadow[0].policy_id == "trial/no-production"
        assert decision.shadow[0].outcome == "DENY"
        assert "production is off limits" in decision.shadow[0].reason
        plain = client.propose(
            {"id": "agent-1", "type": "ai-agent"}, {"capability": "database.query", "parameters": {"query": "x"}}
        )
        assert plain.shadow == []


async def test_a_policy_saved_with_mode_shadow_round_trips(client: httpx.AsyncClient) -> None:
    mixed = {
        **TRIAL,
        "name": "mixed",
        "rules": [{**TRIAL["rules"][0], "mode": "enforce"}, {**TRIAL["rules"][1], "mode": "shadow"}],
    }
    await with_trial(client, mixed)
    await with_trial(client)
    saved = (await client.get("/api/v1/policies/trial")).json()
    assert saved["mode"] == "shadow"
    assert [rule.get("mode") for rule in saved["rules"]] == [None, None]
    saved_mixed = (await client.get("/api/v1/policies/mixed")).json()
    assert [rule["mode"] for rule in saved_mixed["rules"]] == ["enforce", "shadow"]
    listed = {p["name"]: p for p in (await client.get("/api/v1/policies")).json()}
    assert listed["trial"]["mode"] == "shadow" and listed["baseline"]["mode"] == "enforce"
    # The explicit `mode: enforce` rule of the shadow-mode policy decides.
    decision = (await propose(client, proposal(query="SELECT 1", database="production"))).json()
    assert decision["outcome"] == "DENY" and decision["policy_ids"][0] == "mixed/no-production"
    # Promoting: the same policy saved with mode enforce.
    put = await client.put("/api/v1/policies/trial", json={**TRIAL, "mode": "enforce"})
    assert put.status_code == 200
    assert (await client.get("/api/v1/policies/trial")).json()["mode"] == "enforce"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({**TRIAL, "mode": "dry-run"}, "mode"),
        ({**TRIAL, "rules": [{**TRIAL["rules"][0], "mode": "off"}]}, "rules.0.mode"),
    ],
)
async def test_an_unknown_mode_is_a_clear_422(client: httpx.AsyncClient, body: dict[str, Any], where: str) -> None:
    response = await client.post("/api/v1/policies", json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert f"{where}: Input should be 'enforce' or 'shadow'" in error["message"]
    assert (await client.get("/api/v1/policies/trial")).status_code == 404


async def test_a_key_without_policies_manage_cannot_add_a_shadow_policy(server: InProcessServer) -> None:
    proposer = server.async_http_client(await server.acreate_key("agent", ["governance:propose", "governance:read"]))
    response = await proposer.post("/api/v1/policies", json=TRIAL)
    assert response.status_code == 403
    assert "policies:manage" in error_of(response)["message"]
    decision = (await propose(proposer, proposal(query="SELECT 1", database="production"))).json()
    assert "shadow" not in decision


async def test_shadow_entries_on_each_backend(store_url: str, clock: Clock) -> None:
    async with InProcessServer(policy_paths=[POLICIES], db_url=store_url, clock=clock) as server:
        client = server.async_http_client()
        await with_trial(client)
        decision = (await propose(client, proposal(query="SELECT 1", database="production"))).json()
        stored = (await client.get(f"/api/v1/governance/decisions/{decision['decision_id']}")).json()
        assert stored["shadow"] == decision["shadow"] and decision["shadow"][0]["outcome"] == "DENY"
        plain = (await propose(client, proposal())).json()
        assert "shadow" not in (await client.get(f"/api/v1/governance/decisions/{plain['decision_id']}")).json()
        verification = (await client.get("/api/v1/audit/verify")).json()
        assert verification["valid"] is True, verification["problems"]
