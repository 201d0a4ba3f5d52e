"""`POST /api/v1/policy-versions/{version}/rollback`: V's API-defined items replace the stored ones in one
transaction with the new version and its audit record; every replica picks it up; file-defined items are
the files' to roll back, and the answer says so."""

from __future__ import annotations

from pathlib import Path

import httpx

from aegis_sdk.models import Policy
from aegis_server.inprocess import InProcessServer
from aegis_server.store.policy_versions import NewPolicyVersion

from .conftest import (
    ServerFactory,
    audit_records,
    decide,
    email_allowed_then_denied,
    error_of,
    send_email,
    stricter_files,
    versions,
)


async def test_rollback_restores_the_earlier_behaviour(server: InProcessServer) -> None:
    key = await server.acreate_key("operator", ["policies:manage", "governance:read", "governance:propose"])
    client = server.async_http_client(key)
    await email_allowed_then_denied(client)
    assert (await send_email(client))["outcome"] == "DENY"

    response = await client.post("/api/v1/policy-versions/3/rollback")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["changed"] is True
    assert (result["from_version"], result["to_version"], result["version"]) == (4, 3, 5)
    assert result["restored_policies"] == ["email"] and result["removed_policies"] == []
    assert result["restored_capabilities"] == result["removed_capabilities"] == []
    assert result["file_defined"] == []
    assert result["message"] == "Rolled back to version 3: restored policies 'email' (new version 5)."

    decision = await send_email(client)
    assert decision["outcome"] == "ALLOW" and decision["policy_version"] == 5
    newest = (await versions(client))[0]
    assert (newest["version"], newest["cause"], newest["rollback_of"], newest["active"]) == (5, "rollback", 3, True)
    assert newest["created_by"] == (await server.store.authenticate(key)).key_id  # type: ignore[union-attr]
    same = (await client.get("/api/v1/policy-versions/5/diff", params={"against": 3})).json()
    assert same["identical"] is True


async def test_rollback_is_audited(server: InProcessServer, client: httpx.AsyncClient) -> None:
    await email_allowed_then_denied(client)
    assert (await client.post("/api/v1/policy-versions/1/rollback")).status_code == 200
    [record] = await audit_records(client, "policy_rollback")
    payload = record["payload"]
    assert payload["from_version"] == 4 and payload["to_version"] == 1 and payload["policy_version"] == 5
    assert payload["by"] == (await server.store.authenticate(server.api_key)).key_id  # type: ignore[union-attr]
    assert payload["removed_policies"] == ["email"] and payload["removed_capabilities"] == ["email.send"]
    assert payload["restored_policies"] == [] and payload["file_defined"] == []
    assert (await client.get("/api/v1/audit/verify")).json()["valid"] is True


async def test_rollback_to_before_an_item_existed_removes_it(client: httpx.AsyncClient) -> None:
    await email_allowed_then_denied(client)
    result = (await client.post("/api/v1/policy-versions/1/rollback")).json()
    assert result["removed_policies"] == ["email"] and result["removed_capabilities"] == ["email.send"]
    assert (await client.get("/api/v1/policies/email")).status_code == 404
    response = await client.post("/api/v1/governance/propose", json={
        "actor": {"id": "agent-1", "type": "ai-agent"},
        "action": {"capability": "email.send", "parameters": {"to": "a@corp.example"}},
    })  # fmt: skip
    assert error_of(response)["code"] == "unknown_capability"
    # and forward again: rolling back to 4 restores both
    forward = (await client.post("/api/v1/policy-versions/4/rollback")).json()
    assert forward["restored_policies"] == ["email"] and forward["restored_capabilities"] == ["email.send"]
    assert (await send_email(client))["outcome"] == "DENY"


async def test_a_rollback_that_changes_nothing_writes_nothing(client: httpx.AsyncClient) -> None:
    await email_allowed_then_denied(client)
    assert (await client.post("/api/v1/policy-versions/3/rollback")).json()["changed"] is True
    again = await client.post("/api/v1/policy-versions/3/rollback")
    assert again.status_code == 200
    result = again.json()
    assert result["changed"] is False and result["version"] == 5 and result["restored_policies"] == []
    assert result["message"].startswith("Nothing to roll back")
    assert len(await versions(client)) == 5
    assert len(await audit_records(client, "policy_rollback")) == 1


async def test_file_defined_items_are_the_files_to_roll_back(make_server: ServerFactory, policy_file: Path) -> None:
    async with make_server() as first:
        client = first.async_http_client()
        assert (await decide(client, "payments.transfer", amount=800))["outcome"] == "ALLOW"
    stricter_files(policy_file)
    async with make_server() as restarted:
        client = restarted.async_http_client()
        assert restarted.service.policies.active.version == 2
        response = await client.post("/api/v1/policy-versions/1/rollback")
        assert response.status_code == 200
        result = response.json()
        assert result["changed"] is False
        assert result["file_defined"] == [
            {"kind": "policy", "name": "baseline", "in_version": str(policy_file), "in_files": str(policy_file)}
        ]
        assert "policies 'baseline'" in result["message"]
        assert "restore those files from version 1 (`aegis-server policy show 1 --files`)" in result["message"]
        assert "restart the servers" in result["message"]
        assert (await decide(client, "payments.transfer", amount=800))["outcome"] != "ALLOW"  # the files rule


async def test_a_version_that_no_longer_compiles_is_refused_and_nothing_is_written(
    server: InProcessServer, client: httpx.AsyncClient
) -> None:
    latest = await server.store.policy_versions.latest()
    assert latest is not None
    broken = Policy.model_validate(
        {"name": "broken", "rules": [{"capability": "payments.transfer", "condition": "(", "outcome": "DENY"}]}
    )
    await server.store.policy_versions.record(
        NewPolicyVersion(
            digest="sha256:" + "0" * 64,
            policies=(*latest.policies, broken),
            capabilities=latest.capabilities,
            sources={**latest.sources, "broken": "api"},
            cause="policy_saved",
            summary="a version an older engine accepted",
        )
    )
    response = await client.post("/api/v1/policy-versions/2/rollback")
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_policy" and "Version 2's API-defined" in error["message"]
    assert error["details"]["errors"][0]["policy"] == "broken"
    assert len(await versions(client)) == 2
    assert await audit_records(client, "policy_rollback") == []
    assert (await client.get("/api/v1/policies/broken")).status_code == 404
