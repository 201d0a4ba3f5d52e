"""Policy writes of two replicas racing on one database (SQLite file and PostgreSQL): each write is planned
on what is stored, read under the policy-write lock, so no replica misses another's change, no version
records a set that never existed, and a rollback undoes exactly what was stored when it committed.

The race is made deterministic: replica B's write is held right after its revision check (the moment
its cache is as fresh as it gets) while replica A commits a change."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from aegis_server.inprocess import InProcessServer

from .conftest import EMAIL, ServerFactory, decide, email_policy, save, send_email, versions


def _after_revision_check(server: InProcessServer, race: Callable[[], Awaitable[None]]) -> None:
    """Run `race` once, right after `server`'s next revision check before a write (under its lock)."""
    manager = server.service.policies
    original = manager._refresh_locked

    async def checked_then_raced() -> None:
        await original()
        del manager._refresh_locked  # back to the class's method: `race` runs once
        await race()

    manager._refresh_locked = checked_then_raced  # type: ignore[method-assign]


async def _stored_policy_names(server: InProcessServer) -> list[str]:
    return sorted(policy.name for policy in await server.store.list_policies())


async def _content(client: httpx.AsyncClient, version: int) -> dict[str, Any]:
    response = await client.get(f"/api/v1/policy-versions/{version}")
    assert response.status_code == 200, response.text
    content: dict[str, Any] = response.json()
    return content


async def test_a_replica_saving_while_another_rolls_back_enforces_the_rollback(
    make_server: ServerFactory, store_url: str
) -> None:
    """D1 (fail-open): v4 holds the DENY policy `guard`, v5 deletes it; A rolls back to 4 while B saves an
    unrelated policy. Both replicas must deny afterwards, under the same version."""
    async with (
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as first,
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as second,
    ):
        a, b = first.async_http_client(), second.async_http_client()
        await save(a, "POST", "/api/v1/capabilities", EMAIL)  # v2
        await save(a, "PUT", "/api/v1/policies/good", {**email_policy("ALLOW"), "name": "good"})  # v3
        await save(a, "PUT", "/api/v1/policies/guard", {**email_policy("DENY"), "name": "guard"})  # v4
        assert (await a.delete("/api/v1/policies/guard")).status_code == 204  # v5
        assert (await send_email(b))["outcome"] == "ALLOW"

        async def roll_back() -> None:
            response = await a.post("/api/v1/policy-versions/4/rollback")
            assert response.status_code == 200 and response.json()["version"] == 6, response.text

        _after_revision_check(second, roll_back)
        await save(b, "PUT", "/api/v1/policies/other", {"name": "other", "rules": []})  # v7

        assert await _stored_policy_names(first) == ["good", "guard", "other"]
        decisions = [await send_email(client) for client in (a, b)]
        assert [(d["outcome"], d["policy_version"]) for d in decisions] == [("DENY", 7), ("DENY", 7)]
        assert {p.name for p in second.service.policies.active.policies} >= {"guard", "other"}


async def test_concurrent_saves_on_two_replicas_each_record_the_stored_set(
    make_server: ServerFactory, store_url: str
) -> None:
    """D2: A saves `a` while B saves `b`: B's version holds both (what is stored), B records no
    `replica_loaded` version afterwards, and both replicas hold both policies."""
    async with (
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as first,
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as second,
    ):
        a, b = first.async_http_client(), second.async_http_client()
        await save(a, "POST", "/api/v1/capabilities", EMAIL)  # v2
        await decide(b, "payments.transfer", amount=1)  # B at v2

        async def save_a() -> None:
            await save(a, "PUT", "/api/v1/policies/a", {**email_policy("ALLOW"), "name": "a"})  # v3

        _after_revision_check(second, save_a)
        await save(b, "PUT", "/api/v1/policies/b", {**email_policy("ALLOW"), "name": "b"})  # v4

        assert await _stored_policy_names(first) == ["a", "b"]
        recorded = await versions(a)
        assert [(v["version"], v["cause"]) for v in recorded[:2]] == [(4, "policy_saved"), (3, "policy_saved")]
        assert sorted(p["name"] for p in (await _content(a, 4))["policies"]) == ["a", "b", "baseline"]
        for server, client in ((first, a), (second, b)):
            assert (await send_email(client))["policy_version"] == 4
            assert {p.name for p in server.service.policies.active.policies} == {"a", "b", "baseline"}
        assert len(await versions(b)) == 4  # nothing recorded after B's own write


async def test_a_rollback_removes_what_another_replica_saved_just_before(
    make_server: ServerFactory, store_url: str
) -> None:
    """D2: B saves `new` after A's revision check and before A's rollback to v2 commits: the rollback
    (to a version without API policies) removes `new` too, and records exactly what is stored."""
    async with (
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as first,
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as second,
    ):
        a, b = first.async_http_client(), second.async_http_client()
        await save(a, "POST", "/api/v1/capabilities", EMAIL)  # v2
        await save(a, "PUT", "/api/v1/policies/base", {**email_policy("ALLOW"), "name": "base"})  # v3

        async def save_new() -> None:
            await save(b, "PUT", "/api/v1/policies/new", {**email_policy("DENY"), "name": "new"})  # v4

        _after_revision_check(first, save_new)
        response = await a.post("/api/v1/policy-versions/2/rollback")
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["version"] == 5 and result["removed_policies"] == ["base", "new"]

        assert await _stored_policy_names(first) == []
        assert [p["name"] for p in (await _content(a, 5))["policies"]] == ["baseline"]
        for server, client in ((first, a), (second, b)):
            assert (await send_email(client))["policy_version"] == 5
            assert [p.name for p in server.service.policies.active.policies] == ["baseline"]


async def test_a_replica_reloading_while_another_rolls_back_reads_one_consistent_set(
    make_server: ServerFactory, store_url: str
) -> None:
    """D4: B reloads (after another change) while A's rollback removes policies and the capability in one
    transaction, between B's read of the policies and of the capabilities: B must not compile (nor record
    as `replica_loaded`) a set mixing the two. It decides under a set that was stored (v4, read as a
    whole before the rollback, or v5), then under the rollback's."""
    async with (
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as first,
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as second,
    ):
        a, b = first.async_http_client(), second.async_http_client()
        await save(a, "POST", "/api/v1/capabilities", EMAIL)  # v2
        await save(a, "PUT", "/api/v1/policies/email", email_policy("DENY"))  # v3
        await decide(b, "payments.transfer", amount=1)  # B at v3
        await save(a, "PUT", "/api/v1/policies/extra", {**email_policy("ALLOW"), "name": "extra"})  # v4

        room = second.store.capabilities
        raced: list[bool] = []

        def racing(name: str) -> Callable[..., Awaitable[Any]]:
            original = getattr(room, name)

            async def read(*args: Any) -> Any:
                if not raced:
                    raced.append(True)
                    response = await a.post("/api/v1/policy-versions/1/rollback")  # v5: no API items at all
                    assert response.status_code == 200, response.text
                return await original(*args)

            return read

        # the capabilities' read of a reload (whichever method the store reads them with)
        for name in ("list_documents", "documents_in"):
            if hasattr(room, name):
                setattr(room, name, racing(name))
        decision = await decide(b, "payments.transfer", amount=1)
        assert raced

        assert decision["policy_version"] in (4, 5)
        assert second.service.policies.active.digest == (await _content(a, decision["policy_version"]))["digest"]
        assert (await decide(b, "payments.transfer", amount=1))["policy_version"] == 5
        assert [v["cause"] for v in await versions(a)] == [
            "rollback",
            "policy_saved",
            "policy_saved",
            "capability_saved",
            "files_loaded",
        ]
        assert "email.send" not in second.service.policies.active.capabilities


@pytest.mark.postgres
async def test_a_rollback_takes_its_row_locks_in_the_order_of_a_single_write(
    make_server: ServerFactory, postgres_url: str
) -> None:
    """D3: a rollback that restores `a` and deletes `b` while a write of `b` holds b's row and then needs
    the revision row (a document write's order): the rollback waits instead of deadlocking (40P01, 503)."""
    async with make_server(db_url=postgres_url) as server:
        client = server.async_http_client()
        await save(client, "POST", "/api/v1/capabilities", EMAIL)  # v2
        await save(client, "PUT", "/api/v1/policies/a", {**email_policy("ALLOW"), "name": "a"})  # v3
        await save(client, "PUT", "/api/v1/policies/a", {**email_policy("DENY"), "name": "a"})  # v4
        await save(client, "PUT", "/api/v1/policies/b", {**email_policy("DENY"), "name": "b"})  # v5

        engine = server.store.database.engine
        async with engine.connect() as other:
            transaction = await other.begin()
            await other.execute(sa.text("UPDATE policies SET updated_at = now() WHERE name = 'b'"))
            rollback = asyncio.create_task(client.post("/api/v1/policy-versions/3/rollback"))
            await asyncio.sleep(0.5)  # the rollback runs until it waits for a lock
            await other.execute(sa.text("UPDATE server_settings SET value = 'x' WHERE name = 'policy_version'"))
            await transaction.commit()
            response = await rollback
        assert response.status_code == 200, response.text
        assert response.json()["removed_policies"] == ["b"]


async def test_an_unrecorded_set_loaded_with_the_writers_files_is_not_recorded_as_this_replicas(
    make_server: ServerFactory, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """D4: `replica_loaded` means "this replica's policy files differ from the writer's". With the same
    files, a set no version holds (here: a policy written around the versioned path) is not passed off as
    one: the decisions carry no version, and the log says why."""
    from aegis_sdk.models import Policy

    async with (
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as first,
        make_server(db_url=store_url, policy_refresh_interval_seconds=0) as second,
    ):
        a, b = first.async_http_client(), second.async_http_client()
        await save(a, "POST", "/api/v1/capabilities", EMAIL)  # v2
        await first.store.put_policy(Policy.model_validate(email_policy("DENY")))
        with caplog.at_level("ERROR", logger="aegis_server.policies"):
            decision = await send_email(b)
        assert decision["outcome"] == "DENY" and decision.get("policy_version") is None
        assert [v["cause"] for v in await versions(b)] == ["capability_saved", "files_loaded"]
        assert any("policy files are those of version 2" in record.getMessage() for record in caplog.records)
