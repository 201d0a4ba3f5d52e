"""Health (liveness, no auth), readiness (the store accepts writes, policies loaded) and Prometheus metrics
(open, or behind the scope `metrics`; on the main address or on AEGIS_METRICS_LISTEN alone)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from aegis_sdk.models import ErrorEnvelope, Health
from aegis_server import __version__
from aegis_server.api.common import get_service
from aegis_server.errors import ApiError
from aegis_server.governance.service import GovernanceService
from aegis_server.metrics import Metrics
from aegis_server.observability.metrics_listener import METRICS_LISTENER
from aegis_server.security import SCOPE_METRICS, RequireScope, bearer_credentials
from aegis_server.settings import Settings

logger = logging.getLogger("aegis_server")

router = APIRouter(tags=["health"])


@router.get("/api/v1/health", response_model=Health, summary="Liveness (no auth)")
async def health() -> Health:
    return Health(status="ok", version=__version__)


@router.get(
    "/api/v1/ready",
    response_model=Health,
    summary="Readiness: the store accepts writes and the policy set is loaded (no auth)",
    responses={
        503: {
            "model": ErrorEnvelope,
            "description": "Not ready (server_error: unavailable): the store cannot write (read-only, disk full, "
            "unreachable; `details.checks.store.cause`) or the policy set is not loaded.",
        }
    },
)
async def ready(service: Annotated[GovernanceService, Depends(get_service)]) -> Health:
    checks = await service.readiness()
    if not all(bool(c.get("ok")) for c in checks.values()):
        failing = []
        for name, check in checks.items():
            if not check.get("ok"):
                failing.append(f"{name} ({check['message']})" if check.get("message") else name)
        logger.warning("not ready: %s", ", ".join(failing))
        raise ApiError(
            503,
            "server_error",
            "unavailable",
            f"Not ready: {', '.join(failing)}. The store must accept writes (a read-only database or a full "
            "disk does not) and the policy files must load; fix that, then retry.",
            {"checks": checks},
            {"Retry-After": "1"},
        )
    return Health(status="ready", version=__version__, checks=checks)


_require_metrics = RequireScope(SCOPE_METRICS)


@router.get(
    "/metrics",
    summary="Prometheus metrics (no auth, or a key with the scope `metrics` when AEGIS_METRICS_ACCESS=key)",
    response_class=Response,
    responses={401: {"model": ErrorEnvelope}, 403: {"model": ErrorEnvelope}},
)
async def metrics(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if settings.metrics_listen is not None and not request.scope.get(METRICS_LISTENER):
        raise StarletteHTTPException(404)  # served on AEGIS_METRICS_LISTEN alone: as any unknown path here
    if settings.metrics_access == "key":
        await _require_metrics.authorize(request, bearer_credentials(request.headers.get("authorization")))
    registry: Metrics = request.app.state.metrics
    return Response(content=registry.render(), media_type=registry.content_type)


__all__ = ["router"]
