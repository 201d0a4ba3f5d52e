"""The status route against the SDK's fake platform, so that it also runs where aegis-server cannot: on the
lowest FastAPI the package supports (scripts/test_sdk_pythons.sh), with routers as most apps are built."""

from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.testclient import TestClient
from fastapi_support import ALICE, BOT, Refund, asgi_client, current_actor

from aegis_fastapi import Aegis, AegisMiddleware, Decision
from aegis_sdk.testing import FakePlatform

LARGE = {"amount": 5000, "currency": "EUR"}


def shop(aegis: Aegis) -> FastAPI:
    orders = APIRouter(prefix="/v1")
    refund_decision = Annotated[Decision, Depends(aegis.require("payments.refund"))]

    @orders.post("/orders/{order_id}/refunds")
    async def refund(order_id: str, body: Refund, decision: refund_decision) -> dict[str, Any]:
        return {"confirmed_from": decision.parent_decision_id}

    app = aegis.install(FastAPI())
    app.include_router(orders)
    app.include_router(aegis.status_router(prefix="/aegis"))
    return app


async def test_the_way_back_on_the_fake_platform() -> None:
    fake = FakePlatform()
    fake.script("payments.refund", "ESCALATE", reason="large refund")
    aegis = Aegis(actor=current_actor, client=fake.async_client())
    async with asgi_client(shop(aegis)) as http:
        first = await http.post("/v1/orders/F-1/refunds", json=LARGE, headers=BOT)
        decision_id = first.json()["detail"]["decision_id"]
        status_url = first.links["status"]["url"]
        pending = await http.get(status_url, headers=BOT)
        others = await http.get(status_url, headers=ALICE)
        unknown = await http.get("/aegis/decisions/dec_0000", headers=ALICE)
        too_long = await http.get(status_url, params={"wait": 61}, headers=BOT)
        fake.approve(decision_id)
        approved = await http.get(status_url, params={"wait": 5}, headers=BOT)
        ran = await http.post("/v1/orders/F-1/refunds", json=LARGE, headers={**BOT, "AEGIS-Confirmation": decision_id})
    assert first.status_code == 403 and first.headers["Retry-After"] == "10"
    assert status_url == f"http://testserver/aegis/decisions/{decision_id}"
    assert first.headers["Link"] == f'<{status_url}>; rel="status"'
    assert pending.json()["next_step"] == "wait" and pending.headers["Retry-After"] == "10"
    assert others.status_code == unknown.status_code == 404
    assert others.json()["detail"]["code"] == unknown.json()["detail"]["code"] == "decision_not_found"
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["loc"] == ["query", "wait"]
    assert approved.json()["next_step"] == "repeat"
    assert ran.status_code == 200 and ran.json()["confirmed_from"] == decision_id


def request_actor(request: Request) -> Any:
    """The test app's auth as the middleware calls it: `(Request) -> actor`."""
    return current_actor(request.headers.get("authorization"))


def middleware_shop(aegis: Aegis, routes: dict[str, Any]) -> FastAPI:
    """A shop governed by AegisMiddleware alone, denying unmapped routes, with the status route."""
    orders = APIRouter(prefix="/v1")

    @orders.post("/orders/{order_id}/refunds")
    async def refund(order_id: str, body: Refund) -> dict[str, Any]:
        return {"refunded": order_id}

    app = FastAPI()
    app.include_router(orders)
    app.include_router(aegis.status_router(prefix="/aegis", actor=current_actor))
    app.add_middleware(AegisMiddleware, aegis=aegis, routes=routes, actor=request_actor, deny_unmapped=True)
    return app


async def test_the_middleware_links_to_the_status_route_which_deny_unmapped_lets_through() -> None:
    # Ahead of routing, the Starlette of FastAPI 0.115 has no scope["router"]: the link must still be built.
    fake = FakePlatform()
    fake.script("payments.refund", "ESCALATE", reason="large refund")
    aegis = Aegis(client=fake.async_client())
    app = middleware_shop(aegis, {"POST /v1/orders/{order_id}/refunds": "payments.refund"})
    async with asgi_client(app) as http:
        first = await http.post("/v1/orders/F-2/refunds", json=LARGE, headers=BOT)
        status = await http.get(first.links["status"]["url"], headers=BOT)
    assert first.status_code == 403 and first.json()["detail"]["code"] == "review_pending"
    assert status.status_code == 200 and status.json()["next_step"] == "wait"


def test_a_fixed_actor_cannot_answer_statuses_without_an_actor_dependency() -> None:
    aegis = Aegis(actor={"id": "billing-service", "type": "automation"}, client=FakePlatform().async_client())
    with pytest.raises(ValueError, match="fixed actor"):
        aegis.status_router()
    assert aegis.status_router(actor=current_actor).routes  # with the callers' own authentication it works


def test_a_route_name_shared_by_several_routes_cannot_exempt_them() -> None:
    aegis = Aegis(client=FakePlatform().async_client())
    app = FastAPI()
    admin = APIRouter(prefix="/admin")

    @app.get("/")
    async def index() -> dict[str, str]:
        return {}

    @admin.get("/")
    async def index_of_admin() -> dict[str, str]:
        return {}

    admin.routes[-1].name = "index"  # type: ignore[attr-defined]  # as two functions named index would
    app.include_router(admin)
    app.add_middleware(AegisMiddleware, aegis=aegis, routes={"index": None}, deny_unmapped=True)
    with pytest.raises(RuntimeError, match="several routes share"), TestClient(app):
        pass


async def test_a_capability_that_cannot_be_one_is_422_and_a_bad_actor_source_503() -> None:
    fake = FakePlatform()
    bad_type = {"id": "bot", "type": "robot"}
    aegis = Aegis(actor=current_actor, client=fake.async_client())
    broken = Aegis(actor=lambda: bad_type, client=fake.async_client())
    app = FastAPI()

    @app.post("/jobs/{kind}")
    async def job(
        kind: str, decision: Annotated[Decision, Depends(aegis.require(lambda i: f"jobs.{i.path_params['kind']}"))]
    ) -> dict[str, str]:
        return {"ran": kind}

    @app.post("/broken")
    async def uses_a_broken_auth(decision: Annotated[Decision, Depends(broken.require("jobs.run"))]) -> dict[str, str]:
        return {"ran": "broken"}

    async with asgi_client(app) as http:
        spaced = await http.post("/jobs/a b", headers=BOT)
        misconfigured = await http.post("/broken", headers=BOT)
    assert spaced.status_code == 422 and spaced.json()["detail"]["code"] == "invalid_parameters"
    assert misconfigured.status_code == 503 and misconfigured.json()["detail"]["code"] == "governance_misconfigured"
    assert fake.requests == []  # nothing was proposed
