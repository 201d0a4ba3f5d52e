"""The methods the application serves on a path, for a 405's `Allow` header and its envelope's details.

The router is probed method by method, the hot routes (`AegisAPI.hot_routes`) are added, and where the
OpenAPI document describes the path the answer is narrowed to what it documents.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.routing import Match
from starlette.types import Scope

_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(scope: Scope) -> list[str]:
    """The methods the app serves on the scope's path (sorted), for a 405's `Allow`.

    Each method is tried against the router's routes (`matches` is public on every Starlette route,
    however FastAPI nests included routers). Where the OpenAPI document describes the path, the answer is
    narrowed to what it documents for the most literal template that matches: `/api/v1/policies/validate`
    is its own resource (POST), although `/api/v1/policies/{name}` matches the same path."""
    app = scope.get("app")
    routes = getattr(getattr(app, "router", None), "routes", ())
    probed: set[str] = set()
    for method in _METHODS:
        probe = {**scope, "type": "http", "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            probed.add(method)
    hot_routes = getattr(app, "hot_routes", None) or {}
    probed.update(method for method, path in hot_routes if path == scope.get("path"))
    documented = _documented_methods(app, str(scope.get("path", "")))
    if documented and documented & probed:
        return sorted(documented & probed)
    return sorted(probed)


_TEMPLATE_PARAMETER = re.compile(r"\{[^/{}]+\}")


def _documented_methods(app: Any, path: str) -> set[str]:
    """The methods the app's OpenAPI document lists for the most literal path template matching `path`."""
    openapi = getattr(app, "openapi", None)
    if not callable(openapi):
        return set()
    try:
        paths: Mapping[str, Any] = openapi().get("paths", {})
    except Exception:  # a document that cannot be built: the router's answer stands
        return set()
    best: tuple[int, set[str]] | None = None
    for template, operations in paths.items():
        pattern = "[^/]+".join(re.escape(part) for part in _TEMPLATE_PARAMETER.split(template))
        if not re.fullmatch(pattern, path):
            continue
        parameters = len(_TEMPLATE_PARAMETER.findall(template))
        methods = {m.upper() for m in operations if m.upper() in _METHODS}
        if best is None or parameters < best[0]:
            best = (parameters, methods)
    return best[1] if best is not None else set()


__all__ = ["allowed_methods"]
