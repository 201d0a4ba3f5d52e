"""Routers end to end: the router-built shop of fastapi_support on a uvicorn socket, its lifespan creating
the client, against the real aegis-server on another uvicorn socket with the example policies."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi_support import ALICE, BOT, POLICIES, build_router_app, current_actor, serve
from uvicorn.lifespan.on import LifespanOn

from aegis_fastapi import DECISION_HEADER, Aegis
from aegis_sdk import AsyncAegisClient
from aegis_server.inprocess import InProcessServer

ROUTES: dict[str, Any] = {
    "POST /v1/shop/orders/{order_id}/refunds": "payments.refund",
    "/v1/shop/queries": "database.query",
    "refund_by_name": "payments.refund",
    "POST /legacy/v0/orders/{order_id}/refunds": "payments.refund",
    "/health": None,
}


def refund(amount: float) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR"}


@asynccontextmanager
async def shop(routes: dict[str, Any] | None, **middleware: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any, Any]]:
    """(http client of the shop, the shop app, a reviewer's client of the platform)."""
    async with InProcessServer(policy_paths=[POLICIES]) as platform:
        key = await platform.acreate_key("shop", ["governance:propose", "governance:read"])
        reviewer = platform.async_client(await platform.acreate_key("operator", ["governance:review", "audit:read"]))
        async with serve(platform.app, lifespan="off") as aegis_url:
            aegis = Aegis(actor=current_actor, endpoint=aegis_url, api_key=key, retries=0)
            app = build_router_app(aegis, routes, **middleware)
            async with serve(app) as app_url, httpx.AsyncClient(base_url=app_url) as http:
                yield http, app, reviewer


async def route_of(reviewer: AsyncAegisClient, decision_id: str) -> str:
    proposal = next(r for r in (await reviewer.audit.trail(decision_id)).records if r.event_type == "proposal")
    return str(proposal.payload["context"]["metadata"]["route"])


async def test_require_through_nested_routers_and_router_level_dependencies() -> None:
    async with shop(None) as (http, app, reviewer):
        allowed = await http.post("/v1/orders/A-1/refunds", json=refund(40), headers=BOT)
        denied = await http.post(
            "/db/queries", params={"query": "DROP TABLE users", "database": "staging"}, headers=BOT
        )
        first = await http.post("/v1/admin/refunds/A-2", json=refund(250), headers=BOT)
        assert first.status_code == 428, first.text
        confirm = {**BOT, "AEGIS-Confirmation": first.json()["detail"]["decision_id"]}
        confirmed = await http.post("/v1/admin/refunds/A-2", json=refund(250), headers=confirm)
        escalated = await http.post("/v1/orders/A-3/refunds", json=refund(5000), headers=BOT)
        assert escalated.status_code == 403 and escalated.json()["detail"]["code"] == "review_pending"
        pending = escalated.json()["detail"]["decision_id"]
        await reviewer.decisions.review(pending, approve=True, note="verified")
        approved = await http.post(
            "/v1/orders/A-3/refunds", json=refund(5000), headers={**BOT, "AEGIS-Confirmation": pending}
        )
        schema = (await http.get("/openapi.json")).json()
        routes = [await route_of(reviewer, d) for d in (allowed.headers[DECISION_HEADER], pending)]
    assert allowed.status_code == 200 and allowed.json()["decision_id"] == allowed.headers[DECISION_HEADER]
    assert denied.status_code == 403 and "Destructive SQL" in denied.json()["detail"]["reason"]
    assert confirmed.status_code == 200 and confirmed.headers[DECISION_HEADER].startswith("dec_")
    assert approved.status_code == 200 and approved.json()["parent"] == pending
    assert app.state.ran == ["refund", "admin_refund", "refund"]
    assert routes == ["/v1/orders/{order_id}/refunds"] * 2
    for path in ("/v1/orders/{order_id}/refunds", "/v1/admin/refunds/{order_id}", "/db/queries"):
        assert {"403", "409", "428", "503"} <= set(schema["paths"][path]["post"]["responses"]), path


async def test_the_middleware_governs_routes_of_routers_and_mounted_apps() -> None:
    async with shop(ROUTES, deny_unmapped=True) as (http, app, reviewer):
        allowed = await http.post("/v1/shop/orders/A-1/refunds", json=refund(40), headers=BOT)
        read = await http.get("/v1/shop/queries", params={"query": "SELECT 1", "database": "staging"}, headers=BOT)
        dropped = await http.get(
            "/v1/shop/queries", params={"query": "DROP TABLE users", "database": "staging"}, headers=BOT
        )
        first = await http.post("/v1/shop/refunds/A-2", json=refund(250), headers=BOT)
        assert first.status_code == 428, first.text
        repeat = {"AEGIS-Confirmation": first.json()["detail"]["decision_id"]}
        other_actor = await http.post("/v1/shop/refunds/A-2", json=refund(250), headers={**ALICE, **repeat})
        confirmed = await http.post("/v1/shop/refunds/A-2", json=refund(250), headers={**BOT, **repeat})
        mounted = await http.post("/legacy/v0/orders/A-3/refunds", json=refund(5000), headers=BOT)
        unmapped = await http.get("/v1/shop/orders/A-1", headers=BOT)
        health = await http.get("/health")
        mounted_route = await route_of(reviewer, mounted.json()["detail"]["decision_id"])
    assert allowed.status_code == 200 and allowed.json()["decision_id"] == allowed.headers[DECISION_HEADER]
    assert read.status_code == 200 and read.json() == {"max_rows": 1000}  # the endpoint read decision_of(request)
    assert dropped.status_code == 403 and dropped.json()["detail"]["code"] == "governance_denied"
    assert other_actor.status_code == 409 and other_actor.json()["detail"]["code"] == "confirmation_mismatch"
    assert confirmed.status_code == 200 and confirmed.json()["decision_id"] == confirmed.headers[DECISION_HEADER]
    assert mounted.status_code == 403 and mounted.json()["detail"]["code"] == "review_pending"
    assert mounted_route == "/legacy/v0/orders/{order_id}/refunds"
    assert unmapped.status_code == 403 and unmapped.json()["detail"]["code"] == "route_not_governed"
    assert health.status_code == 200
    assert app.state.ran == ["shop_refund", "shop_query", "refund_by_name", "health"]


async def test_a_mapping_naming_no_route_keeps_uvicorn_from_starting_the_app() -> None:
    aegis = Aegis(actor=current_actor, endpoint="http://127.0.0.1:9", api_key="aegis_sk_unused")
    app = build_router_app(aegis, {"POST /accounts/{user_id}/close": "shop.delete_account"})
    # uvicorn's default lifespan mode ("auto") would take an exception for "no lifespan support" and serve
    # anyway; the middleware answers lifespan.startup.failed, which stops it in every mode.
    config = uvicorn.Config(app, lifespan="auto", log_level="critical")
    config.load()
    lifespan = LifespanOn(config)
    await lifespan.startup()
    assert lifespan.startup_failed and lifespan.should_exit
    assert app.state.ran == []
