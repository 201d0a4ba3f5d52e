"""Route discovery: which route of an app will serve a request, and every route an app has, with the full
path template (mount and `include_router` prefixes included), the name and the path parameters.

The router's own rules are followed: the first route that matches FULLy wins; a Mount (or Host) that
matches hands the request to its own routes with the child scope, and serves nothing if none of them
matches; a route matching only PARTIALly (another method) gives 405, which runs no endpoint.

All use of FastAPI internals by the middleware, the OpenAPI patch and the dependency is here (the tests
run on the lowest and the newest FastAPI of the range, see scripts/test_sdk_pythons.sh):

- FastAPI 0.115 to 0.136 copy an included router's routes, prefixed, into the including router's `routes`:
  a plain walk over `routes` sees them.
- FastAPI 0.137 to 0.165 keep `include_router(router)` as ONE private `_IncludedRouter` entry; the prefixed
  routes exist only as its `_EffectiveRouteContext`s. `fastapi.routing._iter_routes_with_context` (what
  FastAPI's own OpenAPI generation walks, in 0.137 directly and later through `iter_route_contexts`) yields
  them in the router's matching order; a context's `starlette_route` (for a Starlette route or a Mount),
  or else the context itself (for an APIRoute), has the prefixed `path`, `name`, `methods`, `matches()`,
  and for an APIRoute the `dependant` and `responses` (router-level dependencies included) FastAPI
  documents.
- There, the APIRoute in `scope["route"]` is the router's original one, without the prefix and the
  router-level dependencies; the inclusion that serves the request, with both, is at
  `scope["fastapi"]["effective_route_context"]`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import fastapi
import fastapi.routing
from starlette.routing import Match
from starlette.types import Scope

# FastAPI 0.137 to 0.165 (see above); None on 0.115 to 0.136, where included routes are already flat.
_iter_routes_with_context: Callable[[Sequence[Any]], Iterator[tuple[Any, Any]]] | None = getattr(
    fastapi.routing, "_iter_routes_with_context", None
)

_METHOD_KEY = re.compile(r"^(?P<method>[A-Z]+) (?P<template>/.*)$")


@dataclasses.dataclass(frozen=True)
class ServedRoute:
    """One route as a request reaches it: `template` is its full path template from the app's root (e.g.
    `/v1/accounts/{user_id}/close` for `/accounts/{user_id}/close` on a router included with prefix `/v1`),
    `methods` None when it takes any method (a Mount of an app without routes, say)."""

    template: str
    name: str | None
    methods: frozenset[str] | None

    def keys(self, method: str) -> list[str]:
        """The mapping keys naming this route for a request with `method`, most specific first. A HEAD
        request runs the GET endpoint, so `GET /template` governs it too."""
        keys = [f"{method} {self.template}"]
        if method == "HEAD":
            keys.append(f"GET {self.template}")
        keys.append(self.template)
        if self.name:
            keys.append(self.name)
        return keys


def _entries(routes: Sequence[Any]) -> list[Any]:
    """A router's routes in its matching order, included routers flattened (FastAPI 0.137 to 0.165)."""
    if _iter_routes_with_context is None:
        hidden = [route for route in routes if hasattr(route, "original_router")]
        if hidden:  # an included router this FastAPI keeps in a form we cannot see into: fail closed
            raise RuntimeError(
                f"aegis-fastapi cannot find the routes of {hidden[0]!r} on FastAPI {fastapi.__version__}; "
                "use a FastAPI version in the range aegis-fastapi supports."
            )
        return list(routes)
    return [
        route if context is None else context.starlette_route or context
        for route, context in _iter_routes_with_context(routes)
    ]


def _children(entry: Any) -> Sequence[Any]:
    """The routes a Mount or Host hands its requests to (empty for an endpoint or an app without routes)."""
    children = getattr(entry, "routes", None)
    return children if isinstance(children, Sequence) and not isinstance(children, str) else ()


def _path(entry: Any) -> str:
    """A route's path template; a Host has none (its routes' paths start at the root)."""
    path = getattr(entry, "path", None)
    return path if isinstance(path, str) else ""


def _served(entry: Any, prefix: str) -> ServedRoute:
    methods = getattr(entry, "methods", None)
    name = getattr(entry, "name", None)
    return ServedRoute(
        template=prefix + _path(entry),
        name=name if isinstance(name, str) and name else None,
        methods=frozenset(methods) if methods else None,
    )


def routes_of(app: Any) -> Sequence[Any] | None:
    """The routes of a Starlette / FastAPI app or router (None when `app` routes nothing itself)."""
    routes = getattr(app, "routes", None)
    return routes if isinstance(routes, Sequence) else None


def resolve(routes: Sequence[Any], scope: Scope, prefix: str = "") -> tuple[ServedRoute, dict[str, Any]] | None:
    """The route that will serve this request and its path parameters, or None when no endpoint will run
    (404, 405, a slash redirect)."""
    for entry in _entries(routes):
        match, child_scope = entry.matches(scope)
        if match != Match.FULL:
            continue  # a PARTIAL is a 405 unless a later route matches FULLy
        children = _children(entry)
        if children:
            inner = {**scope, **child_scope}
            return resolve(children, inner, prefix + _path(entry))
        return _served(entry, prefix), dict(child_scope.get("path_params", {}))
    return None


def walk(routes: Sequence[Any], prefix: str = "") -> Iterator[ServedRoute]:
    """Every route of an app that can serve a request, Mounts and included routers walked into."""
    for entry in _entries(routes):
        children = _children(entry)
        if children:
            yield from walk(children, prefix + _path(entry))
        else:
            yield _served(entry, prefix)


def unknown_keys(routes: Sequence[Any], keys: Iterable[str]) -> list[str]:
    """The mapping keys that name no route of the app: `METHOD /template`, `/template` or a route name."""
    served = list(walk(routes))
    templates = {route.template for route in served}
    names = {route.name for route in served if route.name}
    unknown = []
    for key in keys:
        method_key = _METHOD_KEY.match(key)
        if method_key is not None:
            method, template = method_key.group("method"), method_key.group("template")
            if not any(r.template == template and (r.methods is None or method in r.methods) for r in served):
                unknown.append(key)
        elif key not in templates and key not in names:
            unknown.append(key)
    return unknown


def operations(routes: Sequence[Any]) -> Iterator[Any]:
    """The routes FastAPI documents in the app's OpenAPI (included routers flattened, Mounts not entered:
    a mounted app has its own OpenAPI). Each has the `dependant` and `responses` the document is built from,
    router-level dependencies included."""
    yield from _entries(routes)


def serving_route(scope: Scope) -> Any:
    """Inside a request served by a FastAPI route: the route as FastAPI serves it, with the `path` (prefixes
    included), `dependant` (router-level dependencies included), `body_field` and `_embed_body_fields` of
    its inclusion. That is `scope["route"]` itself, except on FastAPI 0.137 to 0.165 for a route of an
    included router (see above)."""
    route = scope.get("route")
    inclusion = scope.get("fastapi", {}).get("effective_route_context")
    if inclusion is not None and getattr(inclusion, "original_route", None) is route:
        return inclusion
    return route


def mapping_problem(routes: Sequence[Any], mapping: Mapping[str, object], limit: int = 20) -> str | None:
    """What is wrong with a middleware mapping for these routes: keys of governed routes (a capability, not
    None) that name no route, or a route name exempting (None) more than one route; None when the mapping
    is sound. A wrong exempting key is not a problem: it exempts nothing, which fails closed under
    `deny_unmapped`; but a name FastAPI gave several routes (it names a route after its function) would
    exempt all of them."""
    served = list(walk(routes))
    names = [route.name for route in served if route.name]
    shared = sorted(
        key for key, value in mapping.items() if value is None and not key.startswith("/") and names.count(key) > 1
    )
    if shared:
        return (
            f"AegisMiddleware routes={shared!r} exempt routes by a name that several routes share, so they would "
            "exempt all of them. Exempt each by its 'METHOD /template' or '/template' instead, or give the "
            "routes distinct names (name= on the route decorator)."
        )
    unknown = unknown_keys(routes, [key for key, value in mapping.items() if value is not None])
    if not unknown:
        return None
    shown = [
        f"{'|'.join(sorted(r.methods or ())) or 'ANY'} {r.template}" + (f" ({r.name})" if r.name else "")
        for r in served[:limit]
    ]
    more = f" and {len(served) - limit} more" if len(served) > limit else ""
    return (
        f"AegisMiddleware routes={unknown!r} name no route of the app, so they would govern nothing. A key is "
        "'METHOD /template', '/template' or a route name; the template is the full path from the app's root, "
        "with include_router and mount prefixes (e.g. '/v1/accounts/{user_id}' for '/accounts/{user_id}' on "
        f"APIRouter(prefix='/v1')). The app's routes: {', '.join(shown)}{more}."
    )


__all__ = [
    "ServedRoute",
    "mapping_problem",
    "operations",
    "resolve",
    "routes_of",
    "serving_route",
    "unknown_keys",
    "walk",
]
