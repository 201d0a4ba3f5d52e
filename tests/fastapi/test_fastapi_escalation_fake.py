"""The status route against the SDK's fake platform, so that it also runs where aegis-server cannot: on the
lowest FastAPI the package supports (scripts/test_sdk_pythons.sh), with routers as most apps are built."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi_support import ALICE, BOT, Refund, asgi_client, current_actor

from aegis_fastapi import Aegis, Decision
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
