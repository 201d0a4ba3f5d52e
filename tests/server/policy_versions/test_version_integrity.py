"""Versions are tamper-evident and complete (SQLite file and PostgreSQL): each is chained into the audit
("policy_version_recorded") and `audit verify` checks every version against its content and that record;
moving an item between the API and a file is a version; an idle replica's readiness reports the version
it decides with."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from aegis_server.inprocess import InProcessServer
from aegis_server.store.schema import policy_versions

from .conftest import (
    EMAIL,
    ServerFactory,
    audit_records,
    email_allowed_then_denied,
    email_policy,
    proposal,
    save,
    send_email,
    versions,
)


async def _verify(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/v1/audit/verify")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _edit_version(server: InProcessServer, number: int, **values: Any) -> None:
    async with server.store.database.engine.begin() as conn:
        await conn.execute(sa.update(policy_versions).where(policy_versions.c.version == number).values(**values))


async def _content_of(server: InProcessServer, number: int) -> dict[str, Any]:
    async with server.store.database.engine.connect() as conn:
        content = await conn.scalar(sa.select(policy_versions.c.content).where(policy_versions.c.version == number))
    assert isinstance(content, dict)
    return content


def _with_outcome(content: dict[str, Any], outcome: str) -> dict[str, Any]:
    policies = [
        {**policy, "rules": [{**rule, "outcome": outcome} for rule in policy["rules"]]}
        if policy["name"] == "email"
        else policy
        for policy in content["policies"]
    ]
    return {**content, "policies": policies}


async def test_each_version_is_chained_into_the_audit(make_server: ServerFactory, store_url: str) -> None:
    async with make_server(db_url=store_url) as server:
        client = server.async_http_client()
        await email_allowed_then_denied(client)
        assert (await client.post("/api/v1/policy-versions/3/rollback")).status_code == 200
        recorded = await audit_records(client, "policy_version_recorded")
        listed = {v["version"]: v for v in await versions(client)}
        assert sorted(r["payload"]["version"] for r in recorded) == [1, 2, 3, 4, 5]
        for record in recorded:
            payload = record["payload"]
            version = listed[payload["version"]]
            assert (payload["digest"], payload["cause"], payload["created_by"], payload["rollback_of"]) == (
                version["digest"],
                version["cause"],
                version["created_by"],
                version["rollback_of"],
            )
        result = await _verify(client)
        assert result["valid"] is True and result["problems"] == []


async def test_audit_verify_finds_a_rewritten_version(make_server: ServerFactory, store_url: str) -> None:
    """D5: an insider rewrites what version 3 enforced (ALLOW -> DENY); then also its digest, so that the
    row is self-consistent; then deletes version 4. Each is a problem `audit verify` names."""
    async with make_server(db_url=store_url) as server:
        client = server.async_http_client()
        await email_allowed_then_denied(client)
        assert (await _verify(client))["valid"] is True

        forged = _with_outcome(await _content_of(server, 3), "DENY")
        await _edit_version(server, 3, content=forged)
        result = await _verify(client)
        assert result["valid"] is False
        [problem] = result["problems"]
        assert problem["code"] == "policy_version_mismatch" and "version 3's content" in problem["message"]

        from aegis_server.store.policy_versions import content_digest

        await _edit_version(server, 3, digest=content_digest(forged))
        [problem] = (await _verify(client))["problems"]
        assert problem["code"] == "policy_version_mismatch" and "differs from its audit record" in problem["message"]
        assert "digest" in problem["message"]

        async with server.store.database.engine.begin() as conn:
            await conn.execute(sa.delete(policy_versions).where(policy_versions.c.version == 4))
        codes = sorted(p["code"] for p in (await _verify(client))["problems"])
        assert codes == ["policy_version_mismatch", "policy_version_missing"]


async def test_audit_verify_finds_a_version_written_outside_the_server(
    make_server: ServerFactory, store_url: str
) -> None:
    """A forged version row (self-consistent: its digest hashes its content) has no chained record."""
    async with make_server(db_url=store_url) as server:
        client = server.async_http_client()
        await email_allowed_then_denied(client)
        async with server.store.database.engine.connect() as conn:
            row = (await conn.execute(sa.select(policy_versions).where(policy_versions.c.version == 3))).one()
        async with server.store.database.engine.begin() as conn:
            await conn.execute(sa.insert(policy_versions).values({**row._asdict(), "version": 99, "summary": "forged"}))
        [problem] = (await _verify(client))["problems"]
        assert problem["code"] == "policy_version_unaudited" and "version 99" in problem["message"]


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda content: {**content, "sources": dict.fromkeys(content["sources"], "p.yaml")}, id="sources"),
        pytest.param("summary", id="summary"),
        pytest.param("created_at", id="created_at"),
    ],
)
async def test_audit_verify_finds_an_edit_of_what_the_digest_does_not_cover(
    make_server: ServerFactory, store_url: str, edit: Any
) -> None:
    """Where each item came from decides what a rollback restores: relabelling an API policy as file-defined
    would make a rollback skip it. The sources, the summary and the time are chained with the version."""
    async with make_server(db_url=store_url) as server:
        client = server.async_http_client()
        await email_allowed_then_denied(client)
        if edit == "summary":
            await _edit_version(server, 3, summary="nothing happened")
        elif edit == "created_at":
            await _edit_version(server, 3, created_at=datetime(2020, 1, 1, tzinfo=timezone.utc))
        else:
            await _edit_version(server, 3, content=edit(await _content_of(server, 3)))
        [problem] = (await _verify(client))["problems"]
        assert problem["code"] == "policy_version_mismatch"
        assert "version 3 differs from its audit record" in problem["message"]
        assert "sources, summary or time" in problem["message"]


async def test_moving_a_policy_from_the_api_into_a_file_is_a_version(
    make_server: ServerFactory, policy_file: Path, tmp_path: Path
) -> None:
    """D8: the same policy and capability, now defined by a file: the set's digest is the same, but where
    they come from changed, so a version records it (history stops saying `api`)."""
    async with make_server() as server:
        client = server.async_http_client()
        await save(client, "POST", "/api/v1/capabilities", EMAIL)
        await save(client, "POST", "/api/v1/policies", email_policy("ALLOW"))
        saved = (await versions(client))[0]
    moved = tmp_path / "policies" / "email.yaml"
    import yaml

    moved.write_text(yaml.safe_dump({"capabilities": [EMAIL], "policies": [email_policy("ALLOW")]}))
    async with make_server(policy_paths=[policy_file, moved]) as restarted:
        client = restarted.async_http_client()
        newest = (await versions(client))[0]
        assert newest["version"] == saved["version"] + 1 and newest["cause"] == "files_loaded"
        assert newest["digest"] == saved["digest"]
        shown = (await client.get(f"/api/v1/policy-versions/{newest['version']}")).json()
        assert shown["sources"]["email"] == str(moved) and shown["sources"]["capability:email.send"] == str(moved)
        assert restarted.service.policies.active.version == newest["version"]
    async with make_server(policy_paths=[policy_file, moved]) as again:  # the same again: no new version
        assert again.service.policies.active.version == newest["version"]


async def test_an_idle_replica_reports_the_version_it_decides_with(make_server: ServerFactory, store_url: str) -> None:
    """Gap B: readiness (polled by load balancers) picks up another replica's change, so it and the
    aegis_policy_version metric are not stale until the replica's first request."""
    async with (
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as first,
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as second,
    ):
        await save(first.async_http_client(), "POST", "/api/v1/capabilities", EMAIL)  # v2
        anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=second.app), base_url="http://replica")
        ready = await anonymous.get("/api/v1/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["policies"]["version"] == 2
        metrics = (await anonymous.get("/metrics")).text
        assert "aegis_policy_version 2.0" in metrics.splitlines()


async def test_a_confirmation_token_issued_before_a_rollback_stays_spendable_as_documented(
    make_server: ServerFactory,
) -> None:
    """Gap A: a REQUIRE_CONFIRMATION token is bound to the decision made then (under its version); a later
    rollback does not revoke it, and the confirmation carries the parent's version. The docs say so."""
    async with make_server() as server:
        client = server.async_http_client()
        await save(client, "POST", "/api/v1/capabilities", EMAIL)  # v2
        await save(client, "POST", "/api/v1/policies", email_policy("REQUIRE_CONFIRMATION"))  # v3
        parent = await send_email(client)
        assert (parent["outcome"], parent["policy_version"]) == ("REQUIRE_CONFIRMATION", 3)
        assert (await client.post("/api/v1/policy-versions/2/rollback")).json()["version"] == 4
        assert (await send_email(client))["policy_version"] == 4
        resubmitted = {
            **proposal("email.send", to="a@corp.example"),
            "confirmation_token": parent["confirmation_token"],
        }
        confirmed = await client.post("/api/v1/governance/propose", json=resubmitted)
        assert confirmed.status_code == 200, confirmed.text
        assert (confirmed.json()["outcome"], confirmed.json()["policy_version"]) == ("ALLOW", 3)

    docs = Path(__file__).parents[3] / "docs"
    policies_md = " ".join((docs / "policies.md").read_text().split())
    api_md = " ".join((docs / "api.md").read_text().split())
    assert "A rollback does not revoke confirmation tokens" in policies_md
    assert "a rollback does not revoke" in api_md
