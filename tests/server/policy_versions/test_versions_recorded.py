"""Every change of the active set records a version, and every decision carries the version it was made
under: the files loaded (once per distinct set), API saves and deletes (in the write's transaction), and
another replica's change."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from aegis_server.inprocess import InProcessServer

from .conftest import (
    EMAIL,
    ServerFactory,
    audit_records,
    decide,
    email_allowed_then_denied,
    email_policy,
    error_of,
    save,
    send_email,
    stricter_files,
    versions,
)


async def test_the_files_loaded_make_version_1(server: InProcessServer, client: httpx.AsyncClient) -> None:
    [first] = await versions(client)
    assert first["version"] == 1 and first["cause"] == "files_loaded" and first["created_by"] is None
    assert first["active"] is True and first["rollback_of"] is None
    assert first["digest"] == server.service.policies.active.digest
    assert server.service.policies.active.version == 1
    ready = (await client.get("/api/v1/ready")).json()
    assert ready["checks"]["policies"]["version"] == 1
    assert "aegis_policy_version 1.0" in (await client.get("/metrics")).text


async def test_each_api_change_is_a_version_made_by_the_key(server: InProcessServer) -> None:
    key = await server.acreate_key("policy-admin", ["policies:manage", "governance:read", "audit:read"])
    client = server.async_http_client(key)
    key_id = (await server.store.authenticate(key)).key_id  # type: ignore[union-attr]
    await email_allowed_then_denied(client)
    response = await client.delete("/api/v1/policies/email")
    assert response.status_code == 204
    history = await versions(client)
    assert [(v["version"], v["cause"]) for v in history] == [
        (5, "policy_deleted"),
        (4, "policy_saved"),
        (3, "policy_saved"),
        (2, "capability_saved"),
        (1, "files_loaded"),
    ]
    assert {v["created_by"] for v in history[:4]} == {key_id}
    assert history[0]["summary"] == "policy 'email' deleted" and history[-2]["summary"].startswith("capability")
    assert [v["active"] for v in history] == [True, False, False, False, False]
    saved = [r["payload"] for r in await audit_records(client, "policy_saved")]
    assert [p["policy_version"] for p in saved] == [3, 4]
    deleted = [r["payload"] for r in await audit_records(client, "policy_deleted")]
    assert deleted == [{"name": "email", "policy_version": 5}]
    capability = [r["payload"] for r in await audit_records(client, "capability_saved")]
    assert capability[0]["policy_version"] == 2


async def test_a_decision_carries_the_active_version_and_so_does_its_audit(client: httpx.AsyncClient) -> None:
    assert (await decide(client, "payments.transfer", amount=10))["policy_version"] == 1
    await email_allowed_then_denied(client)
    decision = await send_email(client)
    assert decision["outcome"] == "DENY" and decision["policy_version"] == 4
    trail = (await client.get(f"/api/v1/audit/log/{decision['decision_id']}")).json()["records"]
    [record] = [r for r in trail if r["event_type"] == "decision"]
    assert record["payload"]["policy_version"] == 4


async def test_a_change_that_does_not_compile_writes_no_version(client: httpx.AsyncClient) -> None:
    await save(client, "POST", "/api/v1/capabilities", EMAIL)
    bad = email_policy("ALLOW", condition="action.parameters.to.nope(")
    response = await client.put("/api/v1/policies/email", json=bad)
    assert response.status_code == 422 and error_of(response)["code"] == "invalid_policy"
    assert [v["version"] for v in await versions(client)] == [2, 1]
    assert await audit_records(client, "policy_saved") == []
    assert (await client.get("/api/v1/policies/email")).status_code == 404


async def test_a_write_of_a_file_defined_name_writes_no_version(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/v1/policies/baseline", json={"name": "baseline", "rules": []})
    assert response.status_code == 409
    assert len(await versions(client)) == 1


async def test_replicas_with_the_same_files_share_one_version(make_server: ServerFactory) -> None:
    async with make_server() as first, make_server() as second:
        assert first.service.policies.active.version == second.service.policies.active.version == 1
        assert len(await versions(second.async_http_client())) == 1
    async with make_server() as restarted:  # a restart with the same files and stored items: no new version
        assert restarted.service.policies.active.version == 1


async def test_a_replica_with_other_files_makes_its_own_version_and_warns(
    make_server: ServerFactory, policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_server() as first:
        assert first.service.policies.active.version == 1
        stricter_files(policy_file)
        with caplog.at_level(logging.WARNING, logger="aegis_server.policies"):
            async with make_server() as second:
                assert second.service.policies.active.version == 2
                [newest, _] = await versions(second.async_http_client())
                assert newest["cause"] == "files_loaded" and newest["active"] is True
        assert any("differ from those of policy-set version 1" in r.getMessage() for r in caplog.records)


async def test_another_replicas_change_keeps_its_version(make_server: ServerFactory) -> None:
    async with (
        make_server(policy_refresh_interval_seconds=0) as first,
        make_server(policy_refresh_interval_seconds=0) as second,
    ):
        a, b = first.async_http_client(), second.async_http_client()
        await email_allowed_then_denied(a)
        decision = await send_email(b)
        assert decision["outcome"] == "DENY" and decision["policy_version"] == 4
        assert len(await versions(b)) == 4  # no version of its own: the set is the one version 4 holds


async def test_a_replica_whose_files_differ_records_what_it_loaded(
    make_server: ServerFactory, policy_file: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.yaml"
    stricter_files(policy_file, other)
    async with (
        make_server(policy_refresh_interval_seconds=0) as first,
        make_server(policy_refresh_interval_seconds=0, policy_paths=[other]) as second,
    ):
        assert second.service.policies.active.version == 2  # its own files_loaded version
        await save(first.async_http_client(), "POST", "/api/v1/capabilities", EMAIL)  # version 3: first's view
        b = second.async_http_client()
        assert (await decide(b, "payments.transfer", amount=10))["policy_version"] == 4
        newest = (await versions(b))[0]
        assert newest["version"] == 4 and newest["cause"] == "replica_loaded"
