"""OpenAPI of governed routes: mark a dependency as governed by one `Aegis`, and patch `app.openapi` so
every route depending on it lists the 403/409/428/503 answers (responses declared by the app are kept).
Routes of included routers (nested or not) count, and so does a governed dependency declared on the router
(`APIRouter(dependencies=...)` or `include_router(..., dependencies=...)`): `_routes.operations` gives each
route as FastAPI documents it, prefix and router-level dependencies included."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from aegis_fastapi._errors import openapi_responses
from aegis_fastapi._routes import operations

_GOVERNED = "__aegis_governed__"


def mark_governed(dependency: Any, owner: object) -> None:
    """Record that `dependency` is governed by `owner` (an `Aegis`), so `document` finds its routes."""
    setattr(dependency, _GOVERNED, owner)


def document(app: FastAPI, owner: object, confirmation_header: str) -> None:
    """Make `app.openapi()` list the refusals of every route governed by `owner`. Idempotent."""
    if getattr(app.openapi, _GOVERNED, None) is owner:
        return
    original = app.openapi
    responses = openapi_responses(confirmation_header)

    def openapi() -> dict[str, Any]:
        changed = False
        for route in operations(app.routes):
            dependant = getattr(route, "dependant", None)
            route_responses = getattr(route, "responses", None)
            if dependant is None or route_responses is None or not _is_governed(dependant, owner):
                continue
            for status, response in responses.items():
                if status not in route_responses and str(status) not in route_responses:
                    route_responses[status] = response
                    changed = True
        if changed:
            app.openapi_schema = None
        return original()

    mark_governed(openapi, owner)
    app.openapi = openapi  # type: ignore[method-assign]


def _is_governed(dependant: Any, owner: object) -> bool:
    if getattr(getattr(dependant, "call", None), _GOVERNED, None) is owner:
        return True
    return any(_is_governed(sub, owner) for sub in getattr(dependant, "dependencies", ()))


__all__ = ["document", "mark_governed"]
