"""Every adapter feature through APIRouters — included, nested, with router-level dependencies, and a mounted
sub-app — against the SDK's fake platform. Runs without aegis-server (scripts/test_sdk_pythons.sh runs it
on the lowest FastAPI of the supported range; the workspace has the newest)."""

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient
from fastapi_support import ALICE, BOT, Refund, asgi_client, build_router_app, current_actor, request_actor
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from aegis_fastapi import DECISION_HEADER, Aegis, AegisMiddleware
from aegis_sdk.testing import FakePlatform

REFUND = {"amount": 10, "currency": "EUR"}
ROUTES: dict[str, Any] = {
    "POST /v1/shop/orders/{order_id}/refunds": "payments.refund",  # method + full template
    "/v1/shop/queries": "database.query",  # full template, any method
    "refund_by_name": "payments.refund",  # route name
    "POST /v1/accounts/{user_id}/close": "shop.delete_account",  # the route
    "POST /legacy/v0/orders/{order_id}/refunds": "payments.refund",  # a mounted app's included router
    "GET /v1/shop/switch": "switches.read",
    "GET /v1/shop/plain": "switches.read",
    "/health": None,
}


def governed(fake: FakePlatform, routes: dict[str, Any] | None = ROUTES, **options: Any) -> tuple[Aegis, FastAPI]:
    aegis = Aegis(actor=current_actor, client=fake.async_client())
    return aegis, build_router_app(aegis, routes, **options)


async def test_a_mapped_route_on_an_included_router_is_governed() -> None:
    """The issue: the policy denies, so the endpoint of the included router must not run."""
    fake = FakePlatform()
    fake.script("shop.delete_account", "DENY", reason="accounts are closed by support only")
    _, app = governed(fake)
    async with asgi_client(app) as http:
        response = await http.post("/v1/accounts/u-7/close", headers=ALICE)
    assert response.status_code == 403, response.text
    assert response.json()["detail"]["code"] == "governance_denied"
    assert "close_account" not in app.state.ran
    proposal = fake.assert_proposed("shop.delete_account", user_id="u-7")
    assert proposal.context.metadata["route"] == "/v1/accounts/{user_id}/close"


async def test_every_kind_of_key_finds_routes_of_nested_routers_and_mounted_apps() -> None:
    fake = FakePlatform()
    aegis, app = governed(fake)
    async with asgi_client(app) as http:
        by_method = await http.post("/v1/shop/orders/A-1/refunds?channel=web", json=REFUND, headers=BOT)
        by_template = await http.get("/v1/shop/queries?query=SELECT+1&database=staging", headers=BOT)
        by_name = await http.post("/v1/shop/refunds/A-2", json=REFUND, headers=BOT)
        mounted = await http.post("/legacy/v0/orders/A-3/refunds", json=REFUND, headers=BOT)
        exempt = await http.get("/health")
    for response in (by_method, by_template, by_name, mounted):
        assert response.status_code == 200, response.text
        assert response.headers[DECISION_HEADER].startswith("dec_")
    assert by_method.json()["decision_id"] == by_method.headers[DECISION_HEADER]  # decision_of(request)
    assert mounted.json()["decision_id"] == mounted.headers[DECISION_HEADER]
    assert by_template.json()["max_rows"] is None and DECISION_HEADER not in exempt.headers
    refunds = [p for p in fake.proposals if p.action.capability == "payments.refund"]
    assert [p.action.parameters for p in refunds] == [
        {"order_id": "A-1", "channel": "web", **REFUND},
        {"order_id": "A-2", **REFUND},
        {"order_id": "A-3", **REFUND},
    ]
    assert [p.context.metadata["route"] for p in refunds] == [
        "/v1/shop/orders/{order_id}/refunds",
        "/v1/shop/refunds/{order_id}",
        "/legacy/v0/orders/{order_id}/refunds",
    ]
    fake.assert_proposed("database.query", query="SELECT 1", database="staging")
    await aegis.drain()
    assert len(fake.executions) == 4


async def test_deny_unmapped_refuses_unmapped_routes_of_routers_and_lets_404_and_405_through() -> None:
    fake = FakePlatform()
    _, app = governed(fake, deny_unmapped=True)
    async with asgi_client(app) as http:
        unmapped = await http.get("/v1/shop/orders/A-1", headers=BOT)
        mapped = await http.post("/v1/shop/orders/A-1/refunds", json=REFUND, headers=BOT)
        exempt = await http.get("/health")
        missing = await http.get("/v1/nowhere", headers=BOT)
        wrong_method = await http.put("/v1/shop/orders/A-1/refunds", json=REFUND, headers=BOT)
        mounted_missing = await http.get("/legacy/v0/nowhere", headers=BOT)
    assert unmapped.status_code == 403 and unmapped.json()["detail"]["code"] == "route_not_governed"
    assert mapped.status_code == 200 and exempt.status_code == 200
    assert missing.status_code == 404 and mounted_missing.status_code == 404
    assert wrong_method.status_code == 405
    assert app.state.ran == ["shop_refund", "health"]
    assert [p.action.capability for p in fake.proposals] == ["payments.refund"]


async def test_the_first_full_match_wins_over_an_earlier_method_mismatch_and_a_head_is_its_get() -> None:
    fake = FakePlatform()
    fake.script("switches.read", "DENY", reason="no")
    _, app = governed(fake, deny_unmapped=True)
    async with asgi_client(app) as http:
        # GET /v1/shop/switch (mapped) comes first; POST /v1/shop/switch is a later router's, unmapped.
        post = await http.post("/v1/shop/switch", headers=BOT)
        get = await http.get("/v1/shop/switch", headers=BOT)
        head = await http.head("/v1/shop/switch", headers=BOT)  # FastAPI's GET route: 405, nothing runs
        plain_head = await http.head("/v1/shop/plain", headers=BOT)  # Starlette's GET route runs on HEAD
    assert post.status_code == 403 and post.json()["detail"]["code"] == "route_not_governed"
    assert get.status_code == 403 and head.status_code == 405 and plain_head.status_code == 403
    assert app.state.ran == []
    assert [(p.action.capability, p.context.metadata["method"]) for p in fake.proposals] == [
        ("switches.read", "GET"),
        ("switches.read", "HEAD"),
    ]


async def test_a_key_that_names_no_route_stops_the_app_from_starting_and_from_serving() -> None:
    fake = FakePlatform()
    typo = {**ROUTES, "POST /accounts/{user_id}/close": "shop.delete_account", "/not/here": None}
    _, app = governed(fake, typo)
    with pytest.raises(RuntimeError, match=r"POST /accounts/\{user_id\}/close"), TestClient(app):
        pass
    _, app = governed(fake, typo)
    async with asgi_client(app) as http:  # no lifespan ran: the first request finds out
        response = await http.post("/v1/accounts/u-1/close", headers=ALICE)
        health = await http.get("/health")
    assert response.status_code == 503 and health.status_code == 503
    assert response.json()["detail"]["code"] == "governance_misconfigured"
    assert "/accounts" not in response.text  # the details go to the operator's log, not to callers
    assert app.state.ran == [] and fake.proposals == []
    _, app = governed(fake, {**ROUTES, "/not/here": None})  # an unknown exemption exempts nothing: harmless
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200


async def test_require_on_nested_routers_and_router_level_dependencies() -> None:
    fake = FakePlatform()
    fake.script("database.query", "DENY", reason="read-only today")
    _, app = governed(fake, None)
    async with asgi_client(app) as http:
        nested = await http.post("/v1/orders/A-1/refunds", json=REFUND, headers=BOT)
        router_level = await http.post("/v1/admin/refunds/A-2", json=REFUND, headers=BOT)
        include_level = await http.post("/db/queries?query=SELECT+1&database=staging", headers=BOT)
        anonymous = await http.post("/v1/admin/refunds/A-2", json=REFUND, headers={"Authorization": "Bearer nobody"})
    assert nested.status_code == 200 and nested.json()["decision_id"] == nested.headers[DECISION_HEADER]
    assert router_level.status_code == 200 and router_level.headers[DECISION_HEADER].startswith("dec_")
    assert include_level.status_code == 403 and include_level.json()["detail"]["reason"] == "read-only today"
    assert anonymous.status_code == 401 and anonymous.json()["detail"]["code"] == "actor_required"
    assert app.state.ran == ["refund", "admin_refund"]
    assert [(p.action.capability, p.context.metadata["route"], p.action.parameters) for p in fake.proposals] == [
        ("payments.refund", "/v1/orders/{order_id}/refunds", {"order_id": "A-1", **REFUND}),
        ("payments.refund", "/v1/admin/refunds/{order_id}", {"order_id": "A-2", **REFUND}),
        ("database.query", "/db/queries", {"query": "SELECT 1", "database": "staging"}),
    ]


async def test_confirmation_and_escalation_round_trips_through_routers() -> None:
    fake = FakePlatform()
    fake.script_sequence("payments.refund", ["REQUIRE_CONFIRMATION", "ESCALATE", "ESCALATE"])
    _, app = governed(fake)
    async with asgi_client(app) as http:
        first = await http.post("/v1/orders/A-1/refunds", json=REFUND, headers=BOT)
        assert first.status_code == 428
        confirmed = await http.post(
            "/v1/orders/A-1/refunds",
            json=REFUND,
            headers={**BOT, "AEGIS-Confirmation": first.json()["detail"]["decision_id"]},
        )
        escalated = await http.post("/v1/admin/refunds/A-2", json=REFUND, headers=BOT)
        assert escalated.status_code == 403 and escalated.json()["detail"]["code"] == "review_pending"
        repeat = {**BOT, "AEGIS-Confirmation": escalated.json()["detail"]["decision_id"]}
        fake.approve(escalated.json()["detail"]["decision_id"])
        approved = await http.post("/v1/admin/refunds/A-2", json=REFUND, headers=repeat)
        mapped = await http.post("/v1/shop/orders/A-3/refunds", json=REFUND, headers=BOT)
        assert mapped.status_code == 403 and mapped.json()["detail"]["code"] == "review_pending"
        fake.approve(mapped.json()["detail"]["decision_id"])
        other_actor = await http.post(
            "/v1/shop/orders/A-3/refunds",
            json=REFUND,
            headers={**ALICE, "AEGIS-Confirmation": mapped.json()["detail"]["decision_id"]},
        )
        mapped_approved = await http.post(
            "/v1/shop/orders/A-3/refunds",
            json=REFUND,
            headers={**BOT, "AEGIS-Confirmation": mapped.json()["detail"]["decision_id"]},
        )
    assert confirmed.status_code == 200 and confirmed.json()["parent"] == first.json()["detail"]["decision_id"]
    assert approved.status_code == 200
    assert other_actor.status_code == 409 and other_actor.json()["detail"]["code"] == "confirmation_mismatch"
    assert mapped_approved.status_code == 200
    assert app.state.ran == ["refund", "admin_refund", "shop_refund"]


async def test_openapi_lists_the_refusals_of_every_governed_route_however_included() -> None:
    _, app = governed(FakePlatform(), None)
    async with asgi_client(app) as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
    for path, method in (
        ("/v1/orders/{order_id}/refunds", "post"),  # require() on a nested router's endpoint
        ("/v1/admin/refunds/{order_id}", "post"),  # APIRouter(dependencies=[...])
        ("/db/queries", "post"),  # include_router(..., dependencies=[...])
    ):
        responses = paths[path][method]["responses"]
        assert {"403", "409", "428", "503"} <= set(responses), (path, sorted(responses))
        assert "Retry-After" in responses["503"]["headers"]
        assert any(p["name"] == "AEGIS-Confirmation" for p in paths[path][method]["parameters"])
    assert "403" not in paths["/v1/shop/orders/{order_id}"]["get"]["responses"]
    assert "403" not in paths["/health"]["get"]["responses"]


class TokenAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = conn.headers.get("authorization", "").removeprefix("Bearer ")
        return (AuthCredentials(["authenticated"]), SimpleUser(token)) if token else None


async def test_the_default_actor_is_the_authenticated_user_on_every_starlette() -> None:
    """`user_actor` reads `request.user`; Starlette before 0.39 (FastAPI 0.115's) raises NotImplementedError
    for `SimpleUser.identity`, where its name is the only identity."""
    fake = FakePlatform()
    aegis = Aegis(actor=current_actor, client=fake.async_client())
    app = build_router_app(aegis)
    app.add_middleware(AegisMiddleware, aegis=aegis, routes={"shop_refund": "payments.refund"})
    app.add_middleware(AuthenticationMiddleware, backend=TokenAuth())  # added last: runs first
    async with asgi_client(app) as http:
        response = await http.post("/v1/shop/orders/A-1/refunds", json=REFUND, headers={"Authorization": "Bearer ann"})
        anonymous = await http.post("/v1/shop/orders/A-1/refunds", json=REFUND)
    assert response.status_code == 200, response.text
    assert anonymous.status_code == 401 and anonymous.json()["detail"]["code"] == "actor_required"
    assert fake.proposals[0].actor.id == "ann" and fake.proposals[0].actor.type == "human"


async def test_a_host_route_hands_requests_to_the_routers_of_its_app() -> None:
    fake = FakePlatform()
    fake.script("payments.refund", "DENY", reason="admins refund by hand")
    aegis = Aegis(actor=current_actor, client=fake.async_client())
    admin = build_router_app(aegis)
    app = FastAPI()
    app.host("admin.shop.test", admin)
    app.add_middleware(
        AegisMiddleware,
        aegis=aegis,
        routes={"POST /v1/shop/orders/{order_id}/refunds": "payments.refund"},
        actor=request_actor,
        deny_unmapped=True,
    )
    async with asgi_client(app) as http:
        denied = await http.post("http://admin.shop.test/v1/shop/orders/A-1/refunds", json=REFUND, headers=BOT)
        unmapped = await http.get("http://admin.shop.test/v1/shop/orders/A-1", headers=BOT)
        other_host = await http.post("http://shop.test/v1/shop/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert denied.status_code == 403 and denied.json()["detail"]["code"] == "governance_denied"
    assert unmapped.status_code == 403 and unmapped.json()["detail"]["code"] == "route_not_governed"
    assert other_host.status_code == 404
    assert admin.state.ran == []
    assert fake.proposals[0].context.metadata["route"] == "/v1/shop/orders/{order_id}/refunds"


async def test_a_middleware_that_sees_no_routes_refuses_instead_of_governing_nothing() -> None:
    ran: list[str] = []

    async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:  # an ASGI app without routes
        ran.append(scope["path"])
        await PlainTextResponse("ran")(scope, receive, send)

    fake = FakePlatform()
    wrapped = AegisMiddleware(bare_app, aegis=Aegis(client=fake.async_client()), routes={"/x": "payments.refund"})
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.post("/x", headers=BOT)
    assert response.status_code == 503 and response.json()["detail"]["code"] == "governance_misconfigured"
    assert ran == [] and fake.proposals == []


def tenant_of(tenant: str = Query()) -> str:
    return tenant


async def test_inputs_of_router_level_dependencies_are_parameters_on_every_fastapi() -> None:
    """FastAPI 0.115 copies a router's dependencies into each route; 0.137 and later keep them on the
    inclusion. Governance sees the same parameters either way."""
    fake = FakePlatform()
    aegis = Aegis(actor=current_actor, client=fake.async_client())
    orders = APIRouter(prefix="/orders")

    @orders.post("/{order_id}/refunds")
    async def refund(order_id: str, body: Refund) -> dict[str, str]:
        return {"order_id": order_id}

    app = aegis.install(FastAPI())
    app.include_router(
        orders, prefix="/v2", dependencies=[Depends(tenant_of), Depends(aegis.require("payments.refund"))]
    )
    async with asgi_client(app) as http:
        response = await http.post("/v2/orders/A-1/refunds?tenant=acme", json=REFUND, headers=BOT)
        invalid = await http.post("/v2/orders/A-1/refunds", json=REFUND, headers=BOT)  # no tenant: FastAPI's 422
    assert response.status_code == 200, response.text
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["query", "tenant"]
    (proposal,) = fake.proposals
    assert proposal.action.parameters == {"order_id": "A-1", "tenant": "acme", **REFUND}
    assert proposal.context.metadata["route"] == "/v2/orders/{order_id}/refunds"
