"""The error envelope and the handlers that turn every failure into one.

Every non-2xx answer is `{"error": {type, code, message, request_id, details}}` — including the
framework's own 404/405/422 and any unexpected exception (500). The request id it carries, and the
middleware that sets it and logs each request, are in `aegis_server.edge.request_id` and
`aegis_server.edge.request_context`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Send

from aegis_sdk._wire.envelope import ApiError, error_body, governance_error, not_found, validation_error
from aegis_server.edge.allowed_methods import allowed_methods
from aegis_server.edge.request_id import REQUEST_ID_HEADER, request_id_var


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


async def _unexpected_error_handler(request: Request, exc: Exception) -> Response:
    # Used by the framework's ServerErrorMiddleware, which then re-raises: the request context middleware
    # outside it logs the exception with the request id (and, the answer being sent, sends nothing more).
    return error_response(internal_error())


def install_exception_handlers(app: FastAPI) -> None:
    from aegis_server.api.error_mapping import governance_error_handler  # the routers import this module
    from aegis_server.governance.errors import GovernanceError

    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(GovernanceError, governance_error_handler)
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


__all__ = [
    "ApiError",
    "envelope",
    "error_response",
    "governance_error",
    "install_exception_handlers",
    "internal_error",
    "not_found",
    "send_error",
    "validation_error",
]
