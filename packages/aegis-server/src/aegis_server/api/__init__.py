"""The HTTP routers of the AEGIS API, v1."""

from __future__ import annotations

from fastapi import APIRouter

from aegis_server.api import audit, execution_batches, governance, health, keys, registry, webhooks


def api_router() -> APIRouter:
    """Every route of the contract in one router."""
    router = APIRouter()
    for module in (governance, execution_batches, registry, audit, keys, webhooks, health):
        router.include_router(module.router)
    return router


__all__ = ["api_router"]
