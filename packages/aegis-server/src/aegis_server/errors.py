"""The error envelope, the request id, and the handlers that turn every failure into one.

Every non-2xx answer is `{"error": {type, code, message, request_id, details}}` — including the
framework's own 404/405/422 and any unexpected exception (500, logged with the request id, never with
the body). `X-Request-ID` is echoed (or generated) on every response.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aegis_sdk._wire.envelope import ApiError, error_body, governance_error, not_found, validation_error
from aegis_server.ids import new_request_id

if TYPE_CHECKING:
    from aegis_server.metrics import Metrics

logger = logging.getLogger("aegis_server")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("aegis_request_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


class RequestIdLogFilter(logging.Filter):
    """Adds `request_id` to every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        return True


def envelope(
    type: str, code: str, message: str, details: Mapping[str, Any] | None = None, request_id: str | None = None
) -> dict[str, Any]:
    """The error body (`aegis_sdk._wire.envelope.error_body`), with the current request's id by default."""
    return error_body(type, code, message, details, request_id if request_id is not None else request_id_var.get())


def error_response(error: ApiError) -> JSONResponse:
    headers = dict(error.headers)
    rid = request_id_var.get()
    if rid:
        headers[REQUEST_ID_HEADER] = rid
    return JSONResponse(
        envelope(error.type, error.code, error.message, error.details), status_code=error.status, headers=headers
    )


def error_bytes(error: ApiError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The envelope as raw ASGI parts, for pure-ASGI middleware that answers before the app."""
    body = json.dumps(envelope(error.type, error.code, error.message, error.details)).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]
    headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items())
    return error.status, headers, body


async def send_error(send: Send, error: ApiError) -> None:
    status, headers, body = error_bytes(error)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _clean_validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors without `input`/`ctx` (they may hold parameter values, which never leave)."""
    cleaned: list[dict[str, Any]] = []
    for error in errors:
        if not isinstance(error, Mapping):
            continue
        loc = [part for part in error.get("loc", ()) if isinstance(part, str | int)]
        cleaned.append({"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))})
    return cleaned


def _describe(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
        parts.append(f"{where}: {error['msg']}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "The request is invalid — " + "; ".join(parts) + more + ". Fix these fields and send it again."


async def _api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = _clean_validation_errors(list(exc.errors()))
    return error_response(validation_error(422, "invalid_request", _describe(errors), {"errors": errors}))


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        error = ApiError(
            404,
            "not_found",
            "not_found",
            f"No route {request.url.path!r}. The API lives under /api/v1; see /openapi.json for every route.",
            {"resource": "route", "path": request.url.path},
        )
    elif exc.status_code == 405:
        # Starlette names the methods of the first route whose path matched; FastAPI declares one route per
        # method, so the union over every route of the path is the truth.
        methods = allowed_methods(request.scope) or sorted(
            m.strip() for m in (headers.get("Allow") or headers.get("allow") or "").split(",") if m.strip()
        )
        headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
        headers["Allow"] = ", ".join(methods)
        error = validation_error(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.url.path}. "
            f"Allowed: {', '.join(methods) or 'see /openapi.json'}.",
            {"allowed": methods},
        )
    elif exc.status_code >= 500:
        error = ApiError(exc.status_code, "server_error", "internal_error", str(exc.detail))
    else:
        error = validation_error(exc.status_code, "invalid_request", str(exc.detail))
    error.headers.update(headers)
    return error_response(error)


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


async def _unexpected_error_handler(request: Request, exc: Exception) -> Response:
    # Used by the framework's ServerErrorMiddleware, which then re-raises: the request context middleware
    # outside it logs the exception with the request id (and, the answer being sent, sends nothing more).
    return error_response(internal_error())


def install_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)


def internal_error() -> ApiError:
    return ApiError(
        500,
        "server_error",
        "internal_error",
        "The server failed while handling this request. Nothing was decided; retry, and report the request id "
        "if it persists.",
    )


class RequestContextMiddleware:
    """Outermost middleware: request id in and out, access log, request metrics, and the last net that
    turns any unexpected exception into a 500 envelope (logged with the request id and traceback)."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = None
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                presented = value.decode("latin-1")
                break
        rid = presented if presented and _REQUEST_ID_OK.match(presented) else new_request_id()
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode("latin-1"))
        status_holder = [0]
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                headers.append(rid_header)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if status_holder[0] == 0:
                await send_error(send_with_id, internal_error())
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            if self.metrics is not None:
                self.metrics.observe_request(str(scope.get("method", "")), template, status_holder[0], elapsed)
            logger.info(
                "%s %s -> %d in %.1f ms",
                scope.get("method"),
                scope.get("path"),
                status_holder[0],
                elapsed * 1000.0,
            )
            request_id_var.reset(token)


__all__ = [
    "REQUEST_ID_HEADER",
    "ApiError",
    "RequestContextMiddleware",
    "RequestIdLogFilter",
    "allowed_methods",
    "current_request_id",
    "envelope",
    "error_response",
    "governance_error",
    "install_exception_handlers",
    "not_found",
    "request_id_var",
    "send_error",
    "validation_error",
]
