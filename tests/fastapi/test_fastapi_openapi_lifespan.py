"""OpenAPI responses of governed routes, lifespan wiring, and the example app over real uvicorn sockets."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi_support import BOT, POLICIES, asgi_client, build_app, current_actor, load_example, serve

from aegis_fastapi import Aegis, Decision
from aegis_sdk.testing import FakePlatform
from aegis_server.inprocess import InProcessServer


async def test_governed_routes_document_their_refusals() -> None:
    app = build_app(Aegis(actor=current_actor, client=FakePlatform().async_client()))
    async with asgi_client(app) as http:
        schema = (await http.get("/openapi.json")).json()
    refund = schema["paths"]["/orders/{order_id}/refunds"]["post"]
    assert {"403", "409", "428", "503"} <= set(refund["responses"])
    assert refund["responses"]["428"]["content"]["application/json"]["schema"]["properties"]["detail"]
    assert "Retry-After" in refund["responses"]["503"]["headers"]
    assert any(p["name"] == "AEGIS-Confirmation" and p["in"] == "header" for p in refund["parameters"])
    assert {"403", "428", "503"} <= set(schema["paths"]["/queries"]["post"]["responses"])
    assert set(schema["paths"]["/health"]["get"]["responses"]) == {"200"}


async def test_documentation_keeps_your_own_responses_and_works_without_startup() -> None:
    aegis = Aegis(actor=current_actor)
    app = FastAPI()

    @app.post("/pay", responses={403: {"description": "Our own words"}})
    async def pay(decision: Annotated[Decision, Depends(aegis.require("payments.refund"))]) -> dict[str, Any]:
        return {}

    aegis.install(app)
    operation = app.openapi()["paths"]["/pay"]["post"]
    assert operation["responses"]["403"]["description"] == "Our own words"
    assert "428" in operation["responses"]
    aegis.install(app)  # twice is harmless
    assert "428" in app.openapi()["paths"]["/pay"]["post"]["responses"]


async def test_lifespan_creates_one_client_and_closes_it_keeping_the_apps_lifespan() -> None:
    fake = FakePlatform()
    events: list[str] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        events.append("start")
        yield {"ready": "yes"}
        events.append("stop")

    aegis = Aegis(actor=current_actor, endpoint="http://aegis.test", api_key="aegis_sk_test")
    app = FastAPI(lifespan=own)
    aegis.install(app)
    with pytest.raises(RuntimeError):
        _ = aegis.client
    async with app.router.lifespan_context(app) as state:
        client = aegis.client
        assert state == {"ready": "yes"} and events == ["start"]
        assert aegis.get_client() is client
    assert events == ["start", "stop"]
    assert client._closed  # closed at shutdown
    with pytest.raises(RuntimeError):
        _ = aegis.client
    assert fake.proposals == []


async def test_an_injected_client_is_left_open() -> None:
    client = FakePlatform().async_client()
    aegis = Aegis(actor=current_actor, client=client)
    app = FastAPI(lifespan=aegis.lifespan)
    async with app.router.lifespan_context(app):
        assert aegis.client is client
    assert aegis.client is client and not client._closed


async def test_the_example_app_over_uvicorn_against_the_server_over_uvicorn() -> None:
    """What the demo does: the platform and the governed app each on a loopback port; the app's lifespan
    creates its client from (endpoint, api_key)."""
    async with InProcessServer(policy_paths=[POLICIES]) as platform:
        key = await platform.acreate_key("fastapi-app", ["governance:propose", "governance:read"])
        async with serve(platform.app, lifespan="off") as aegis_url:
            app = load_example().create_app(aegis_url, key)
            async with serve(app) as app_url, httpx.AsyncClient(base_url=app_url) as http:
                allowed = await http.post("/orders/A-1/refunds", json={"amount": 40, "currency": "EUR"}, headers=BOT)
                first = await http.post("/orders/A-2/refunds", json={"amount": 250, "currency": "EUR"}, headers=BOT)
                repeat = {**BOT, "AEGIS-Confirmation": first.json()["detail"]["decision_id"]}
                confirmed = await http.post(
                    "/orders/A-2/refunds", json={"amount": 250, "currency": "EUR"}, headers=repeat
                )
            # The app has shut down: its lifespan drained the execution reports before closing the client.
        reader = platform.async_client()
        trail = await reader.audit.trail(allowed.json()["decision_id"])
    assert allowed.status_code == 200
    assert first.status_code == 428
    assert confirmed.status_code == 200 and confirmed.json()["confirmed_from"] == repeat["AEGIS-Confirmation"]
    assert [r.event_type for r in trail.records][-1] == "execution"


async def test_the_example_app_fails_closed_when_the_platform_is_not_there() -> None:
    async with serve(FastAPI(), lifespan="off") as url:
        dead_endpoint = url  # once this block ends, nothing listens on that loopback port any more
    app = load_example().create_app(dead_endpoint, "aegis_sk_unused")
    async with serve(app) as app_url, httpx.AsyncClient(base_url=app_url) as http:
        response = await http.post("/orders/A-1/refunds", json={"amount": 40, "currency": "EUR"}, headers=BOT)
    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "governance_unavailable"
    assert int(response.headers["Retry-After"]) > 0
