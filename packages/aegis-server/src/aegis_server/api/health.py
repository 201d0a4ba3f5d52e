"""Health (liveness, no auth), readiness (store reachable, policies loaded) and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from aegis_sdk.models import ErrorEnvelope, Health
from aegis_server import __version__
from aegis_server.api.common import get_service
from aegis_server.errors import ApiError
from aegis_server.metrics import Metrics
from aegis_server.service import GovernanceService

router = APIRouter(tags=["health"])


@router.get("/api/v1/health", response_model=Health, summary="Liveness (no auth)")
async def health() -> Health:
    return Health(status="ok", version=__version__)


@router.get(
    "/api/v1/ready",
    response_model=Health,
    summary="Readiness: the store answers and the policy set is loaded (no auth)",
    responses={503: {"model": ErrorEnvelope, "description": "Not ready (server_error: unavailable)."}},
)
async def ready(service: Annotated[GovernanceService, Depends(get_service)]) -> Health:
    checks = await service.readiness()
    if not all(bool(c.get("ok")) for c in checks.values()):
        failing = ", ".join(name for name, c in checks.items() if not c.get("ok"))
        raise ApiError(
            503,
            "server_error",
            "unavailable",
            f"Not ready: {failing}. Check the database URL and the policy files, then retry.",
            {"checks": checks},
            {"Retry-After": "1"},
        )
    return Health(status="ready", version=__version__, checks=checks)


@router.get("/metrics", summary="Prometheus metrics (no auth)", response_class=Response)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(content=registry.render(), media_type=registry.content_type)


__all__ = ["router"]
