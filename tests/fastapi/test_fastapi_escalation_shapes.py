"""The status route in the shapes apps take: governed routes and the status route on nested `APIRouter`s,
an app governed by `AegisMiddleware` alone, an app without the route; and its configuration errors. Over a
uvicorn socket against the real aegis-server in-process. (No `from __future__ import annotations`: FastAPI
must see the endpoints' `Annotated` aliases defined inside functions.)"""

import asyncio
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi_support import ALICE, BOT, TOKENS, Refund, build_app, current_actor, serve
from starlette.requests import Request

from aegis_fastapi import DECISION_HEADER, Aegis, AegisMiddleware, Decision
from aegis_sdk import Actor
from aegis_server.inprocess import InProcessServer

LARGE = {"amount": 5000, "currency": "EUR"}


async def until_long_polling(server: InProcessServer) -> None:
    """Until a long poll subscribed to the platform's review notifications (at most 10 s)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 10.0
    while not server.service.notifier.waiting:
        assert loop.time() < give_up, "no long poll subscribed within 10 s"
        await asyncio.sleep(0.001)


async def approve(server: InProcessServer, status_url: str) -> None:
    """Approve the decision of `status_url` with a reviewer's own key."""
    reviewer = server.async_client(await server.acreate_key("operator", ["governance:review"]))
    await reviewer.decisions.review(status_url.rsplit("/", 1)[1], approve=True)


async def approve_while_polled(server: InProcessServer, http: httpx.AsyncClient, status_url: str) -> httpx.Response:
    """Long-poll `status_url` as the bot while a reviewer approves; the poll's answer."""
    poll = asyncio.create_task(http.get(status_url, params={"wait": 30}, headers=BOT))
    await until_long_polling(server)
    await approve(server, status_url)
    return await poll


def router_app(aegis: Aegis) -> FastAPI:
    """A shop built from routers: the governed route under /v1/shop, the status route under /api/aegis."""
    shop = APIRouter(prefix="/shop")
    refund_decision = Annotated[Decision, Depends(aegis.require("payments.refund"))]

    @shop.post("/orders/{order_id}/refunds")
    async def refund(order_id: str, body: Refund, decision: refund_decision) -> dict[str, Any]:
        return {"order_id": order_id, "confirmed_from": decision.parent_decision_id}

    v1 = APIRouter(prefix="/v1")
    v1.include_router(shop)
    api = APIRouter(prefix="/api")
    api.include_router(aegis.status_router(prefix="/aegis"))
    app = aegis.install(FastAPI())
    app.include_router(v1)
    app.include_router(api)
    return app


async def test_the_way_back_through_nested_routers(server: InProcessServer) -> None:
    aegis = Aegis(actor=current_actor, client=server.async_client())
    async with serve(router_app(aegis)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        first = await http.post("/v1/shop/orders/R-1/refunds", json=LARGE, headers=BOT)
        decision_id = first.json()["detail"]["decision_id"]
        status_url = first.links["status"]["url"]
        assert status_url == f"{url}/api/aegis/decisions/{decision_id}"
        assert (await http.get(status_url, headers=ALICE)).status_code == 404
        approved = await approve_while_polled(server, http, status_url)
        assert approved.json()["next_step"] == "repeat"
        repeat = {**BOT, approved.json()["confirmation_header"]: decision_id}
        ran = await http.post("/v1/shop/orders/R-1/refunds", json=LARGE, headers=repeat)
        schema = (await http.get("/openapi.json")).json()
    assert first.status_code == 403 and first.headers["Retry-After"] == "10"
    assert ran.status_code == 200 and ran.json()["confirmed_from"] == decision_id
    assert "404" in schema["paths"]["/api/aegis/decisions/{decision_id}"]["get"]["responses"]


def bearer_actor(request: Request) -> Actor | None:
    """A middleware app's resolver `(Request) -> actor`, usable by the status route as it is."""
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    return TOKENS.get(token)


async def test_an_app_governed_by_the_middleware_alone(server: InProcessServer) -> None:
    aegis = Aegis(client=server.async_client())
    app = aegis.install(FastAPI())
    app.include_router(aegis.status_router(actor=bearer_actor))

    @app.post("/orders/{order_id}/refunds")
    async def refund(order_id: str, request: Request) -> dict[str, str]:
        return {"order_id": order_id}

    app.add_middleware(
        AegisMiddleware, aegis=aegis, routes={"POST /orders/{order_id}/refunds": "payments.refund"}, actor=bearer_actor
    )
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        first = await http.post("/orders/M-1/refunds", json=LARGE, headers=BOT)
        decision_id = first.json()["detail"]["decision_id"]
        status_url = first.links["status"]["url"]
        others = await http.get(status_url, headers=ALICE)
        nobody = await http.get(status_url)
        approved = await approve_while_polled(server, http, status_url)
        ran = await http.post("/orders/M-1/refunds", json=LARGE, headers={**BOT, "AEGIS-Confirmation": decision_id})
    assert first.status_code == 403 and first.json()["detail"]["status_url"] == status_url
    assert status_url == f"{url}/aegis/decisions/{decision_id}"
    assert others.status_code == 404 and others.json()["detail"]["code"] == "decision_not_found"
    assert nobody.status_code == 401 and nobody.json()["detail"]["code"] == "actor_required"
    assert approved.json()["next_step"] == "repeat"
    assert ran.status_code == 200


async def test_without_the_status_route_the_answer_still_says_when(server: InProcessServer) -> None:
    aegis = Aegis(actor=current_actor, client=server.async_client(), review_retry_after=42)
    aegis.status_router()  # made but never included in this app: nothing to link to
    async with serve(build_app(aegis)) as url, httpx.AsyncClient(base_url=url) as http:
        first = await http.post("/orders/N-1/refunds", json=LARGE, headers=BOT)
    detail = first.json()["detail"]
    assert first.status_code == 403 and detail["code"] == "review_pending"
    assert first.headers["Retry-After"] == "42" and first.headers[DECISION_HEADER] == detail["decision_id"]
    assert detail["status_url"] is None and "Link" not in first.headers


async def test_an_actor_dependency_answering_none_is_401(server: InProcessServer) -> None:
    aegis = Aegis(actor=current_actor, client=server.async_client())
    app = build_app(aegis)
    app.include_router(aegis.status_router())
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/aegis/decisions/dec_abc", headers={"Authorization": "Bearer nobody"})
    assert response.status_code == 401 and response.json()["detail"]["code"] == "actor_required"


async def test_long_polls_past_max_waiting_are_answered_at_once(server: InProcessServer) -> None:
    """Long polls hold connections of the app's client, which the governed routes need: past the cap a poll
    does not wait."""
    aegis = Aegis(actor=current_actor, client=server.async_client())
    app = build_app(aegis)
    app.include_router(aegis.status_router(max_waiting=1))
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        first = await http.post("/orders/W-1/refunds", json=LARGE, headers=BOT)
        status_url = first.links["status"]["url"]
        holding = asyncio.create_task(http.get(status_url, params={"wait": 30}, headers=BOT))
        await until_long_polling(server)
        # The one slot is held by the poll above, which waits for the reviewer: this one is answered now.
        second = await http.get(status_url, params={"wait": 30}, headers=BOT)
        assert not holding.done()
        await approve(server, status_url)
        approved = await holding
        after = await http.get(status_url, params={"wait": 30}, headers=BOT)
    assert second.status_code == 200 and second.json()["next_step"] == "wait"
    assert second.headers["Retry-After"] == "10"  # it did not wait, so it should not come back at once
    assert approved.json()["next_step"] == "repeat"
    assert after.json()["next_step"] == "repeat"  # the slot was given back


def test_the_status_route_needs_to_know_who_asks() -> None:
    with pytest.raises(ValueError, match=r"status_router\(\) needs to know who asks"):
        Aegis().status_router()
    assert isinstance(Aegis().status_router(actor=bearer_actor), APIRouter)


@pytest.mark.parametrize("prefix", ["aegis", "/aegis/", 7])
def test_a_prefix_must_be_a_path(prefix: Any) -> None:
    with pytest.raises(ValueError, match="prefix must be empty or a path like '/aegis'"):
        Aegis(actor=current_actor).status_router(prefix)


@pytest.mark.parametrize("count", [-1, 1.5, True])
def test_max_waiting_is_a_count(count: Any) -> None:
    with pytest.raises(ValueError, match="max_waiting must be a whole number of long polls"):
        Aegis(actor=current_actor).status_router(max_waiting=count)


@pytest.mark.parametrize("seconds", [0, -5, 2.5, True])
def test_review_retry_after_is_whole_seconds(seconds: Any) -> None:
    with pytest.raises(ValueError, match="review_retry_after must be a whole number of seconds"):
        Aegis(actor=current_actor, review_retry_after=seconds)
