"""The hot path: routes served straight from the ASGI stack, in front of FastAPI's own middlewares and router.

Every governed action waits for `POST /propose`, and FastAPI spends more time on its five middleware
layers, its router and its dependency resolution than the route itself spends deciding. A hot route is a
plain `endpoint(request) -> Response` reached by one dictionary lookup on (method, path). It still runs
inside the request context (request id, access log, metrics) and the body guard, and its exceptions are
rendered by the application's own exception handlers.

The same endpoint is mounted on FastAPI's router as a `PlainRoute`: FastAPI documents it (OpenAPI) from the
declarations the route is given, and serves it, should the hot path not, by calling the same endpoint;
`tests/server/api/test_api_propose_route.py` checks that both answer alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
ExceptionHandler = Callable[[Request, Any], Response | Awaitable[Response]]  # as Starlette takes them


@dataclass(frozen=True)
class HotRoute:
    """One hot route. `path` is what the request metrics report as the route template."""

    method: str
    path: str
    endpoint: Endpoint


class PlainRoute(APIRoute):
    """A FastAPI route whose endpoint is a plain `endpoint(request) -> Response` that reads the request itself.

    FastAPI builds the route's OpenAPI operation as for any route (body, parameters and security from the
    route's `dependencies`, responses from `response_model` and `responses`), but never resolves those
    dependencies or validates a body for it: a request the router gives it goes straight to the endpoint."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


class HotPathDispatch:
    """ASGI: answer requests for a hot route directly; pass everything else to `framework`.

    `routes` is read on every request (a live mapping), and `exception_handlers` is the application's
    mapping of exception class -> handler. An exception no handler takes propagates to the request context
    middleware, which logs it and answers the 500 envelope, as for any route.
    """

    def __init__(
        self,
        framework: ASGIApp,
        routes: Mapping[tuple[str, str], HotRoute],
        exception_handlers: Mapping[Any, ExceptionHandler],
    ) -> None:
        self.framework = framework
        self.routes = routes
        self.exception_handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get((scope.get("method", ""), scope.get("path", ""))) if scope["type"] == "http" else None
        if route is None:
            await self.framework(scope, receive, send)
            return
        scope["route"] = route
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        # As Starlette's ExceptionMiddleware looks one up: the closest class in the exception's MRO; the
        # catch-all `Exception` handler belongs to the outermost error middleware (it also logs), not here.
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                return handler
        return None


__all__ = ["Endpoint", "HotPathDispatch", "HotRoute", "PlainRoute"]
