"""Helpers for the aegis-fastapi tests: the example app, a test app with every kind of route, and httpx
clients that drive an app in-process (ASGITransport) or over a uvicorn socket."""

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel

from aegis_fastapi import Aegis, Decision, RouteInputs
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
