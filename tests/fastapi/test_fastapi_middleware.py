"""AegisMiddleware: one mapping governs many routes; unmapped routes pass untouched unless denied."""

from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi_support import POLICIES, asgi_client
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

from aegis_fastapi import DECISION_HEADER, Aegis, AegisMiddleware, RouteInputs, decision_of
from aegis_sdk.testing import FakePlatform
from aegis_server.inprocess import InProcessServer


class TokenAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = conn.headers.get("authorization", "").removeprefix("Bearer ")
        return (AuthCredentials(["authenticated"]), SimpleUser(token)) if token else None


def build(aegis: Aegis, routes: dict[str, Any], **options: Any) -> FastAPI:
    app = FastAPI()

    @app.post("/orders/{order_id}/refunds")
    async def refund(order_id: str, request: Request) -> dict[str, Any]:
        decision = decision_of(request)
        return {"order_id": order_id, "decision_id": decision.decision_id if decision else None}

    @app.get("/reports/{year}")
    def report(year: int, request: Request) -> dict[str, Any]:
        decision = decision_of(request)
        return {"year": year, "governed": decision is not None}

    @app.delete("/users/{user_id}", name="delete_user")
    async def delete_user(user_id: str) -> dict[str, str]:
        return {"deleted": user_id}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/broken")
    async def broken() -> None:
        raise ValueError("boom")

    app.add_middleware(AegisMiddleware, aegis=aegis, routes=routes, **options)
    app.add_middleware(AuthenticationMiddleware, backend=TokenAuth())  # outermost: runs first
    return app


ROUTES: dict[str, Any] = {
    "POST /orders/{order_id}/refunds": "payments.refund",
    "/reports/{year}": "reports.read",
    "delete_user": "users.delete",
    "/health": None,
    "/broken": "things.break",
    "/upload": "files.upload",
}
ALICE = {"Authorization": "Bearer alice"}


async def test_mapped_routes_are_governed_by_template_and_name() -> None:
    fake = FakePlatform()
    aegis = Aegis(client=fake.async_client())
    app = build(aegis, ROUTES)
    async with asgi_client(app) as http:
        refund = await http.post(
            "/orders/A-1/refunds?channel=web&tag=a&tag=b", json={"amount": 10, "note": None}, headers=ALICE
        )
        report = await http.get("/reports/2025", headers=ALICE)
        deleted = await http.delete("/users/u-9", headers=ALICE)
        health = await http.get("/health")
    assert refund.status_code == 200 and refund.json()["decision_id"] == refund.headers[DECISION_HEADER]
    assert report.json() == {"year": 2025, "governed": True}
    assert deleted.status_code == 200 and health.status_code == 200
    assert DECISION_HEADER not in health.headers
    refund_proposal = fake.assert_proposed("payments.refund")
    assert refund_proposal.action.parameters == {"order_id": "A-1", "channel": "web", "tag": ["a", "b"], "amount": 10}
    assert refund_proposal.actor.id == "alice" and refund_proposal.actor.type == "human"
    assert refund_proposal.context.metadata["route"] == "/orders/{order_id}/refunds"
    fake.assert_proposed("users.delete", user_id="u-9")
    assert [p.action.capability for p in fake.proposals] == ["payments.refund", "reports.read", "users.delete"]
    await aegis.drain()
    assert {r.status for r in fake.executions.values()} == {"SUCCESS"}


async def test_outcomes_unmapped_routes_and_denying_them() -> None:
    fake = FakePlatform()
    fake.script("payments.refund", "DENY", reason="frozen")
    aegis = Aegis(client=fake.async_client())
    partial = {k: v for k, v in ROUTES.items() if k != "delete_user"}
    async with asgi_client(build(aegis, partial)) as http:
        denied = await http.post("/orders/A-1/refunds", json={}, headers=ALICE)
        unmapped = await http.delete("/users/u-1", headers=ALICE)
        anonymous = await http.get("/reports/2025")
    assert denied.status_code == 403 and denied.json()["detail"]["reason"] == "frozen"
    assert unmapped.status_code == 200
    assert anonymous.status_code == 401 and anonymous.json()["detail"]["code"] == "actor_required"
    async with asgi_client(build(aegis, partial, deny_unmapped=True)) as http:
        blocked = await http.delete("/users/u-1", headers=ALICE)
        health = await http.get("/health")  # mapped to None: explicitly ungoverned
        missing = await http.get("/nope")
    assert blocked.status_code == 403 and blocked.json()["detail"]["code"] == "route_not_governed"
    assert health.status_code == 200 and missing.status_code == 404
    assert [p.action.capability for p in fake.proposals] == ["payments.refund"]


async def test_failures_are_reported_and_platform_down_fails_closed() -> None:
    fake = FakePlatform()
    aegis = Aegis(client=fake.async_client(retries=0))
    async with asgi_client(build(aegis, ROUTES)) as http:
        broken = await http.post("/broken", headers=ALICE)
        fake.fail_with_connect_error()
        down = await http.get("/reports/2025", headers=ALICE)
    assert broken.status_code == 500
    assert down.status_code == 503 and down.headers["Retry-After"] == "5"
    await aegis.drain()
    (report,) = fake.executions.values()
    assert report.status == "FAILED" and report.error is not None and report.error.code == "ValueError"


async def test_non_json_bodies_are_not_read_and_reach_the_endpoint_intact() -> None:
    fake = FakePlatform()
    aegis = Aegis(client=fake.async_client())
    async with asgi_client(build(aegis, ROUTES)) as http:
        upload = await http.post("/upload", content=b"x" * 5000, headers={**ALICE, "Content-Type": "text/plain"})
        listed = await http.post("/upload", json=[1, 2], headers=ALICE)
        untyped = await http.post("/upload", content=b"x" * 5000, headers=ALICE)
    assert upload.json() == {"bytes": 5000} and listed.status_code == 200
    assert untyped.status_code == 200 and fake.proposals[2].action.parameters == {}
    assert fake.proposals[0].action.parameters == {}
    assert fake.proposals[1].action.parameters == {"body": [1, 2]}
    small = Aegis(client=fake.async_client())
    async with asgi_client(build(small, ROUTES, max_body_bytes=100)) as http:
        refused = await http.post("/upload", content=b"x" * 5000, headers=ALICE)
    assert refused.status_code == 413 and refused.json()["detail"]["code"] == "body_too_large"


async def test_confirmation_round_trip_and_tampering_through_the_middleware() -> None:
    async with InProcessServer(policy_paths=[POLICIES]) as server:
        client = server.async_client()

        def actor(request: Request) -> dict[str, str] | None:
            user = request.scope.get("user")
            return {"id": user.display_name, "type": "ai-agent"} if user and user.is_authenticated else None

        def parameters(inputs: RouteInputs) -> dict[str, Any]:
            return {"order_id": inputs.path_params["order_id"], **inputs.body}

        aegis = Aegis(client=client)
        app = build(aegis, ROUTES, actor=actor, parameters=parameters)
        body = {"amount": 250, "currency": "EUR"}
        async with asgi_client(app) as http:
            first = await http.post("/orders/A-1/refunds", json=body, headers=ALICE)
            assert first.status_code == 428
            repeat = {**ALICE, "AEGIS-Confirmation": first.json()["detail"]["decision_id"]}
            tampered = await http.post("/orders/A-1/refunds", json={**body, "amount": 999}, headers=repeat)
            confirmed = await http.post("/orders/A-1/refunds", json=body, headers=repeat)
        await aegis.drain()
        allowed = await client.decisions.get(confirmed.json()["decision_id"])
        trail = await client.audit.trail(allowed.decision_id)
    assert tampered.status_code == 409 and tampered.json()["detail"]["code"] == "confirmation_mismatch"
    assert confirmed.status_code == 200 and allowed.parent_decision_id == repeat["AEGIS-Confirmation"]
    assert trail.records[-1].event_type == "execution"


def test_mapping_values_are_checked() -> None:
    aegis = Aegis()
    with pytest.raises(ValueError, match="who acts"):
        aegis.require("payments.refund")
    with pytest.raises(TypeError, match="routes"):
        AegisMiddleware(FastAPI(), aegis=aegis, routes={"/x": 42})  # type: ignore[dict-item]
