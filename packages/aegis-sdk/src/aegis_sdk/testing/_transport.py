"""The fake's front door: one httpx request in, one response out — request id, injected failures,
authentication and scopes, the route's answer or the error envelope, and the request recorded."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import httpx

from aegis_sdk._wire.canonical import canonical_hash
from aegis_sdk._wire.cursors import CursorError
from aegis_sdk._wire.envelope import ApiError, error_body, validation_error
from aegis_sdk.testing._failures import injected_error, take_failure
from aegis_sdk.testing._requests import read_body
from aegis_sdk.testing._routes import Call, match_route
from aegis_sdk.testing._state import ApiKey, FakeState
from aegis_sdk.testing._types import RecordedRequest

__all__ = ["handle"]

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _authenticate(state: FakeState, request: httpx.Request, scope: str) -> tuple[ApiKey, str]:
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise ApiError(
            401,
            "authentication_error",
            "missing_api_key",
            "No API key. Send `Authorization: Bearer aegis_sk_…` (the fake accepts any key unless it was built "
            "with api_key=).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = state.key_for(presented)
    if key is None:
        raise ApiError(
            401,
            "authentication_error",
            "invalid_api_key",
            "The API key is unknown or revoked. Use the api_key the FakePlatform was built with.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not key.allows(scope):
        raise ApiError(
            403,
            "permission_error",
            "missing_scope",
            f"The API key {key.name!r} lacks the scope {scope!r} this route needs. Use a key that has it (or `admin`).",
            {"required_scope": scope},
        )
    return key, canonical_hash(presented)


def _respond(status: int, payload: Any, request_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    all_headers = {**(headers or {}), "X-Request-ID": request_id}
    if status == 204:
        return httpx.Response(204, headers=all_headers)
    return httpx.Response(status, json=payload, headers=all_headers)


def _error(error: ApiError, request_id: str) -> httpx.Response:
    body = error_body(error.type, error.code, error.message, error.details, request_id)
    return _respond(error.status, body, request_id, error.headers)


def _serve(state: FakeState, request: httpx.Request, path: str, request_id: str) -> httpx.Response:
    try:
        body = read_body(request) if request.method in _BODY_METHODS and path.startswith("/api/") else None
        route, path_params = match_route(request.method, path)
        key, key_hash = (None, "") if route.scope is None else _authenticate(state, request, route.scope)
        call = Call(request, dict(request.url.params), path_params, body, key, key_hash)
        try:
            status, payload = route.handler(state, call)
        except CursorError as error:  # as the server answers a cursor it did not issue
            raise validation_error(422, "invalid_request", str(error), {"field": "cursor"}) from None
    except ApiError as error:
        return _error(error, request_id)
    return _respond(status, payload, request_id, call.response_headers)


def _recorded_json(request: httpx.Request) -> Any:
    if not request.content:
        return None
    try:
        return json.loads(request.content)
    except ValueError:
        return None


def handle(state: FakeState, request: httpx.Request) -> httpx.Response:
    """Answer one request as the v1 platform would (or as a failure injected into the fake)."""
    presented = request.headers.get("x-request-id")
    request_id = presented if presented and _REQUEST_ID_OK.match(presented) else "req_" + secrets.token_hex(16)
    path = request.url.path
    if len(path) > 1:
        path = path.rstrip("/")
    failure = take_failure(state, path)
    status: int | None = None
    try:
        if failure is not None and failure.kind == "connect":
            raise httpx.ConnectError("FakePlatform: connection refused (fail_with_connect_error)", request=request)
        if failure is not None and failure.kind == "timeout":
            raise httpx.ReadTimeout("FakePlatform: read timed out (fail_with_timeout)", request=request)
        if failure is not None:
            response = _error(injected_error(failure), request_id)
        else:
            response = _serve(state, request, path, request_id)
        status = response.status_code
        return response
    finally:
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"}
        recorded = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.url.params),
            headers=headers,
            json=_recorded_json(request),
            status_code=status,
        )
        with state.lock:
            state.requests.append(recorded)
