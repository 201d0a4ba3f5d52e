"""The main flows on both store backends (SQLite and PostgreSQL), through the API."""

from __future__ import annotations

import asyncio

from conftest import POLICIES, Clock, proposal, propose

from aegis_server.inprocess import InProcessServer


async def test_flows_on_each_backend(store_url: str, clock: Clock) -> None:
    async with InProcessServer(policy_paths=[POLICIES], db_url=store_url, clock=clock) as server:
        client = server.async_http_client()
        production = proposal(query="SELECT 1", database="production")
        first = (await propose(client, production, **{"Idempotency-Key": "k"})).json()
        assert (await propose(client, production, **{"Idempotency-Key": "k"})).json() == first
        confirmed = (await propose(client, {**production, "confirmation_token": first["confirmation_token"]})).json()
        assert confirmed["outcome"] == "ALLOW"
        replay = await propose(client, {**production, "confirmation_token": first["confirmation_token"]})
        assert replay.json()["error"]["code"] == "confirmation_used"

        pending = (await propose(client, proposal("payments.transfer", amount=5000))).json()
        url = f"/api/v1/governance/decisions/{pending['decision_id']}"
        reviewer = server.async_http_client(await server.acreate_key("reviewer", ["governance:review"]))
        assert (await client.post(f"{url}/review", json={"approve": True})).json()["error"]["code"] == "self_review"
        assert (await reviewer.post(f"{url}/review", json={"approve": True})).json()["review"]["status"] == "approved"
        expiring = (await propose(client, proposal("payments.transfer", amount=7000))).json()
        clock.advance(601)
        assert await server.service.expire_due() == [expiring["decision_id"]]

        racing = await asyncio.gather(*(propose(client, proposal(), **{"Idempotency-Key": "r"}) for _ in range(4)))
        assert len({r.json()["decision_id"] for r in racing}) == 1
        verification = (await client.get("/api/v1/audit/verify")).json()
        assert verification["valid"] is True, verification["problems"]
        assert verification["records_checked"] > 10
