"""Helpers for the aegis-fastapi tests: the example app, a test app with every kind of route, and httpx
clients that drive an app in-process (ASGITransport) or over a uvicorn socket."""

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from aegis_fastapi import Aegis, AegisMiddleware, Decision, RouteInputs, decision_of
from aegis_sdk import Actor

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "examples" / "policies"
BOT = {"Authorization": "Bearer bot-token"}
ALICE = {"Authorization": "Bearer alice-token"}


def load_example() -> ModuleType:
    """examples/fastapi_app.py as a module (examples/ is not a package)."""
    name = "aegis_example_fastapi_app"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "fastapi_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


TOKENS = {"bot-token": Actor(id="support-bot", type="ai-agent"), "alice-token": Actor(id="alice", type="human")}


def current_actor(authorization: Annotated[str | None, Header()] = None) -> Actor | None:
    """The test app's auth: a known bearer token, `Bearer nobody` (authenticated as no one: None), else 401."""
    token = (authorization or "").removeprefix("Bearer ")
    if token == "nobody":
        return None
    if token not in TOKENS:
        raise HTTPException(401, "unknown token")
    return TOKENS[token]


class Refund(BaseModel):
    amount: float
    currency: str
    note: str | None = None


class Job(BaseModel):
    name: str


class RefundFailed(RuntimeError):
    pass


def build_app(aegis: Aegis) -> FastAPI:
    """Routes governed with `aegis.require`: async and sync endpoints, a failing one, a dynamic capability,
    custom parameters, a conflicting parameter name, and one ungoverned route."""
    app = aegis.install(FastAPI())
    refund_decision = Annotated[Decision, Depends(aegis.require("payments.refund"))]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/orders/{order_id}/refunds")
    async def refund(order_id: str, body: Refund, decision: refund_decision) -> dict[str, Any]:
        return {
            "order_id": order_id,
            "amount": body.amount,
            "decision_id": decision.decision_id,
            "parent": decision.parent_decision_id,
            "degraded": decision.degraded,
        }

    @app.post("/sync/orders/{order_id}/refunds")
    def refund_sync(order_id: str, body: Refund, decision: refund_decision) -> dict[str, Any]:
        return {"order_id": order_id, "amount": body.amount, "decision_id": decision.decision_id}

    @app.post("/failing/orders/{order_id}/refunds")
    async def refund_failing(order_id: str, body: Refund, decision: refund_decision) -> dict[str, Any]:
        raise RefundFailed("the payment provider said no")

    @app.post("/queries")
    def run_query(
        query: str, database: str, decision: Annotated[Decision, Depends(aegis.require("database.query"))]
    ) -> dict[str, Any]:
        return {"ran": query, "max_rows": decision.constraints.get("max_rows")}

    def capability_of(inputs: RouteInputs) -> str:
        return f"jobs.{inputs.path_params['kind']}"

    def job_parameters(inputs: RouteInputs) -> dict[str, Any]:
        return {"job": inputs.body["name"], "kind": inputs.path_params["kind"], "by": "custom"}

    @app.post("/jobs/{kind}")
    async def run_job(
        kind: str,
        body: Job,
        decision: Annotated[Decision, Depends(aegis.require(capability_of, parameters=job_parameters))],
    ) -> dict[str, Any]:
        return {"kind": kind, "decision_id": decision.decision_id}

    @app.post("/items/{order_id}")
    async def conflicting(
        order_id: str, body: dict[str, Any], decision: Annotated[Decision, Depends(aegis.require("items.touch"))]
    ) -> dict[str, Any]:
        return {"decision_id": decision.decision_id}

    return app


def asgi_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://testserver"
    )


@asynccontextmanager
async def serve(app: Any, *, lifespan: str = "on") -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, on the current loop; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan=lifespan, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def request_actor(request: Request) -> Actor | None:
    """The middleware's actor in the router tests: the same bearer tokens as `current_actor`."""
    return TOKENS.get(request.headers.get("authorization", "").removeprefix("Bearer "))


def build_router_app(aegis: Aegis, routes: Mapping[str, Any] | None = None, **middleware: Any) -> FastAPI:
    """A shop built from APIRouters the way real apps are; every endpoint appends its name to
    `app.state.ran`, so a test sees whether it ran. With `routes`, an `AegisMiddleware` governs by mapping.

    - `/v1` (`APIRouter(prefix="/v1")`) includes, nested:
      - `/orders` (`APIRouter(prefix="/orders")`): `POST /{order_id}/refunds` with `require("payments.refund")`
      - `/admin` (`APIRouter(prefix="/admin", dependencies=[Depends(require("payments.refund"))])`):
        `POST /refunds/{order_id}`, governed by the router's dependency
      - `/shop` (no dependencies; for the middleware): `POST /orders/{order_id}/refunds` (`shop_refund`),
        `POST /refunds/{order_id}` (`refund_by_name`), `GET /queries` (`shop_query`), `GET /orders/{order_id}`
        (`show_order`), `GET /switch` then `POST /switch` on another router (`switch_post`)
    - `/v1/shop/plain`: a Starlette route (`GET`, so HEAD too) of a router included with that prefix
      - `/accounts`: `POST /{user_id}/close` (`close_account`)
    - `/db`: a router included with `include_router(..., dependencies=[Depends(require("database.query"))])`:
      `POST /queries`
    - `/legacy`: a mounted FastAPI sub-app including a router with prefix `/v0`: `POST /orders/{order_id}/refunds`
    - `/health`
    """
    app = aegis.install(FastAPI())
    app.state.ran = []
    ran: list[str] = app.state.ran

    orders = APIRouter(prefix="/orders")

    @orders.post("/{order_id}/refunds")
    async def refund(
        order_id: str, body: Refund, decision: Annotated[Decision, Depends(aegis.require("payments.refund"))]
    ) -> dict[str, Any]:
        ran.append("refund")
        return {"order_id": order_id, "decision_id": decision.decision_id, "parent": decision.parent_decision_id}

    admin = APIRouter(prefix="/admin", dependencies=[Depends(aegis.require("payments.refund"))])

    @admin.post("/refunds/{order_id}")
    def admin_refund(order_id: str, body: Refund) -> dict[str, Any]:
        ran.append("admin_refund")
        return {"order_id": order_id}

    shop = APIRouter(prefix="/shop")

    @shop.post("/orders/{order_id}/refunds", name="shop_refund")
    async def shop_refund(order_id: str, body: Refund, request: Request) -> dict[str, Any]:
        ran.append("shop_refund")
        decision = decision_of(request)
        return {"order_id": order_id, "decision_id": decision.decision_id if decision else None}

    @shop.post("/refunds/{order_id}", name="refund_by_name")
    async def refund_by_name(order_id: str, body: Refund, request: Request) -> dict[str, Any]:
        ran.append("refund_by_name")
        decision = decision_of(request)
        return {"order_id": order_id, "decision_id": decision.decision_id if decision else None}

    @shop.get("/queries", name="shop_query")
    def shop_query(query: str, database: str, request: Request) -> dict[str, Any]:
        ran.append("shop_query")
        decision = decision_of(request)
        return {"max_rows": decision.constraints.get("max_rows") if decision else None}

    @shop.get("/orders/{order_id}", name="show_order")
    async def show_order(order_id: str) -> dict[str, str]:
        ran.append("show_order")
        return {"order_id": order_id}

    @shop.get("/switch", name="switch_get")
    async def switch_get() -> dict[str, str]:
        ran.append("switch_get")
        return {"switch": "get"}

    async def plain(request: Request) -> JSONResponse:  # a Starlette route: it answers HEAD with its GET
        ran.append("plain")
        return JSONResponse({"plain": True})

    plain_router = APIRouter()  # add_route ignores a router's own prefix (and FastAPI versions differ)
    plain_router.add_route("/plain", plain, methods=["GET"], name="plain")

    switches = APIRouter()

    @switches.post("/shop/switch", name="switch_post")
    async def switch_post(request: Request) -> dict[str, Any]:
        ran.append("switch_post")
        return {"governed": decision_of(request) is not None}

    accounts = APIRouter(prefix="/accounts")

    @accounts.post("/{user_id}/close", name="close_account")
    async def close_account(user_id: str) -> dict[str, str]:
        ran.append("close_account")
        return {"closed": user_id}

    v1 = APIRouter(prefix="/v1")
    v1.include_router(orders)
    v1.include_router(admin)
    v1.include_router(shop)
    v1.include_router(switches)
    v1.include_router(accounts)
    app.include_router(v1)

    queries = APIRouter()

    @queries.post("/queries")
    def run_query(query: str, database: str) -> dict[str, str]:
        ran.append("run_query")
        return {"ran": query}

    app.include_router(plain_router, prefix="/v1/shop")
    app.include_router(queries, prefix="/db", dependencies=[Depends(aegis.require("database.query"))])

    legacy_orders = APIRouter(prefix="/v0")

    @legacy_orders.post("/orders/{order_id}/refunds", name="legacy_refund")
    async def legacy_refund(order_id: str, body: Refund, request: Request) -> dict[str, Any]:
        ran.append("legacy_refund")
        decision = decision_of(request)
        return {"order_id": order_id, "decision_id": decision.decision_id if decision else None}

    legacy = FastAPI()
    legacy.include_router(legacy_orders)
    app.mount("/legacy", legacy)

    @app.get("/health")
    async def health() -> dict[str, str]:
        ran.append("health")
        return {"status": "ok"}

    if routes is not None:
        app.add_middleware(AegisMiddleware, aegis=aegis, routes=routes, actor=request_actor, **middleware)
    return app
