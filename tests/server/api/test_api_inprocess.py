"""InProcessServer: the real SDK clients, sync and async, against the app without a socket."""

from __future__ import annotations

import pytest
from conftest import POLICIES

from aegis_sdk import AegisClient, AsyncAegisClient, ConfirmationUsedError, UnknownCapabilityError
from aegis_server.inprocess import InProcessServer

ACTOR = {"id": "agent-001", "type": "ai-agent"}
QUERY = {"capability": "database.query", "parameters": {"query": "SELECT 1", "database": "production"}}


def test_sync_client_round_trip() -> None:
    with InProcessServer(policy_paths=[POLICIES]) as server:
        client = server.client()
        assert isinstance(client, AegisClient)
        decision = client.propose(actor=ACTOR, action=QUERY, context={"session_id": "s1"})
        assert decision.outcome == "REQUIRE_CONFIRMATION"
        confirmed = client.confirm(decision)
        assert confirmed.allowed
        assert confirmed.parent_decision_id == decision.decision_id
        with pytest.raises(ConfirmationUsedError):
            client.propose(
                actor=ACTOR, action=QUERY, context={"session_id": "s1"}, confirmation_token=decision.confirmation_token
            )
        with pytest.raises(UnknownCapabilityError) as caught:
            client.propose(actor=ACTOR, action={"capability": "database.qury"})
        assert "database.query" in caught.value.details["suggestions"]
        assert client.audit.verify().valid
        assert client.ready().status == "ready"


def test_sync_mode_also_serves_the_async_client() -> None:
    import asyncio

    with InProcessServer(policy_paths=[POLICIES]) as server:
        client = server.async_client()

        async def run() -> str:
            decision = await client.propose(
                actor=ACTOR, action={"capability": "database.query", "parameters": {"query": "x"}}
            )
            return decision.outcome

        assert asyncio.run(run()) == "ALLOW"


async def test_async_client_with_review() -> None:
    async with InProcessServer(policy_paths=[POLICIES]) as server:
        client = server.async_client()
        assert isinstance(client, AsyncAegisClient)
        pending = await client.propose(
            actor=ACTOR, action={"capability": "payments.transfer", "parameters": {"amount": 5000}}
        )
        assert pending.outcome == "ESCALATE"
        reviewer = server.async_client(await server.acreate_key("ops", ["governance:review"]))
        approved = await reviewer.decisions.review(pending.decision_id, approve=True, note="ok")
        assert approved.review is not None and approved.review.reviewer == "ops"
        allowed = await client.wait_for_review(pending, timeout=5)  # resubmits with the approval token
        assert allowed.outcome == "ALLOW"
        assert allowed.parent_decision_id == pending.decision_id


async def test_sync_client_in_async_mode_is_refused_with_a_reason() -> None:
    async with InProcessServer(policy_paths=[POLICIES]) as server:
        with pytest.raises(RuntimeError, match="async_client"):
            server.client()


def test_using_a_stopped_server_says_so() -> None:
    server = InProcessServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.api_key


def test_given_database_url_and_extra_keys(tmp_path: object) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/given.db"
    with InProcessServer(policy_paths=[POLICIES], db_url=url) as server:
        reader = server.client(server.create_key("reader", ["governance:read"]))
        assert [c.name for c in reader.capabilities.list()][:1] == ["database.drop"]
    with InProcessServer(policy_paths=[POLICIES], db_url=url) as server:
        assert len(server.http_client().get("/api/v1/capabilities").json()) == 3
