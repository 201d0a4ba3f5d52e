"""The v1 HTTP contract in front of the fake's core: routes, auth, strict JSON, the error envelope."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from aegis_sdk._version import __version__
from aegis_sdk.models import (
    OUTCOMES,
    AuditPage,
    AuditTrail,
    Capability,
    DecisionPage,
    ExecutionReport,
    Policy,
    PolicyValidation,
    Proposal,
    ReviewRequest,
)
from aegis_sdk.testing._core import ApiError, Core, DecisionFilters, canonical_hash, decision_json
from aegis_sdk.testing._types import RecordedRequest

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
MAX_PARAMETERS_BYTES = 64 * 1024
MAX_WAIT_SECONDS = 60.0
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REVIEW_STATUSES = ("pending", "approved", "denied", "expired")

_STATUS_DEFAULTS: dict[int, tuple[str, str, str]] = {
    400: ("validation_error", "invalid_json", "The request was rejected (injected by FakePlatform.fail_next)."),
    401: ("authentication_error", "invalid_api_key", "The API key is unknown or revoked (injected)."),
    403: ("permission_error", "missing_scope", "The API key lacks the scope this route needs (injected)."),
    404: ("not_found", "not_found", "Not found (injected by FakePlatform.fail_next)."),
    409: ("governance_error", "policy_conflict", "Conflict (injected by FakePlatform.fail_next)."),
    413: ("validation_error", "body_too_large", "The body is too large (injected by FakePlatform.fail_next)."),
    422: ("validation_error", "invalid_request", "The request is invalid (injected by FakePlatform.fail_next)."),
    429: ("rate_limit_error", "rate_limited", "Too many requests; retry later (injected by FakePlatform.fail_next)."),
    500: ("server_error", "internal_error", "The server failed (injected by FakePlatform.fail_next)."),
    503: (
        "server_error",
        "unavailable",
        "The platform is unavailable; retry later (injected by FakePlatform.fail_next).",
    ),
}


@dataclass
class _Call:
    request: httpx.Request
    params: dict[str, str]
    path: dict[str, str]
    body: Any
    api_key: str
    response_headers: dict[str, str] = field(default_factory=dict)


_Handler = Callable[[Core, _Call], "tuple[int, Any]"]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    scope: str | None
    handler: _Handler


def _validation(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> ApiError:
    return ApiError(status, "validation_error", code, message, details)


def _pydantic_error(error: ValidationError, where: str = "body") -> ApiError:
    errors = [
        {"loc": [where, *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in error.errors(include_url=False, include_context=False, include_input=False)
    ]
    parts = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or where}: {e['msg']}" for e in errors[:5])
    return _validation(
        422,
        "invalid_request",
        f"The request is invalid — {parts}. Fix these fields and send it again.",
        {"errors": errors},
    )


_M = TypeVar("_M", bound=BaseModel)


def _model(model: type[_M], body: Any) -> _M:
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise _pydantic_error(error) from None


# -- request parsing ----------------------------------------------------------------------------------


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth_exceeds(value: Any, max_depth: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _too_deep() -> ApiError:
    return _validation(
        422,
        "too_deep",
        f"The body nests objects/arrays deeper than {MAX_JSON_DEPTH} levels. Flatten it.",
        {"max_depth": MAX_JSON_DEPTH},
    )


def _read_body(request: httpx.Request) -> Any:
    """The strict JSON body of a POST/PUT, or None when there is none (the server's body guard)."""
    data = request.content
    if len(data) > MAX_BODY_BYTES:
        raise _validation(
            413,
            "body_too_large",
            f"The body is larger than {MAX_BODY_BYTES} bytes. Send less (the limit is a server setting).",
            {"max_bytes": MAX_BODY_BYTES},
        )
    if not data:
        return None
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if not (media == "application/json" or (media.startswith("application/") and media.endswith("+json"))):
        raise _validation(
            415,
            "unsupported_media_type",
            f"Content-Type {content_type or '(none)'} is not accepted. Send application/json.",
            {"content_type": content_type},
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _validation(400, "invalid_json", "The body is not UTF-8. Send UTF-8 encoded JSON.") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_reject_constant)
    except _DuplicateKeyError as error:
        raise _validation(
            400,
            "duplicate_keys",
            f"The body repeats the key {error.key!r} in one object. Send each key once.",
            {"key": error.key},
        ) from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError as error:
        raise _validation(
            400, "invalid_json", f"The body is not valid JSON ({error}). Send one JSON document."
        ) from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise _too_deep()
    return value


def _query_error(name: str, message: str, where: str = "query") -> ApiError:
    errors = [{"loc": [where, name], "msg": message, "type": "value_error"}]
    return _validation(422, "invalid_request", f"The request is invalid — {name}: {message}.", {"errors": errors})


def _time_param(params: dict[str, str], name: str) -> datetime | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise _query_error(name, "must be an RFC 3339 time such as 2025-01-31T12:00:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _limit_param(params: dict[str, str]) -> int:
    raw = params.get("limit", "50")
    try:
        limit = int(raw)
    except ValueError:
        raise _query_error("limit", "must be an integer between 1 and 200") from None
    if not 1 <= limit <= 200:
        raise _query_error("limit", "must be an integer between 1 and 200")
    return limit


def _encode_cursor(kind: str, position: int | None) -> str | None:
    if position is None:
        return None
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def _decode_cursor(kind: str, params: dict[str, str]) -> int | None:
    raw = params.get("cursor")
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != kind:
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error):
        raise _validation(
            422,
            "invalid_request",
            "The cursor is not one this list returned. Pass next_cursor unchanged, or omit it for the first page.",
            {"field": "cursor"},
        ) from None


def _filters(params: dict[str, str], *, audit: bool) -> DecisionFilters:
    outcome = params.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise _query_error("outcome", f"must be one of {', '.join(OUTCOMES)}")
    review_status = None if audit else params.get("review_status")
    if review_status is not None and review_status not in _REVIEW_STATUSES:
        raise _query_error("review_status", f"must be one of {', '.join(_REVIEW_STATUSES)}")
    return DecisionFilters(
        actor_id=params.get("actor_id"),
        capability=params.get("capability"),
        outcome=outcome,
        session_id=params.get("session_id"),
        review_status=review_status,
        since=_time_param(params, "since"),
        until=_time_param(params, "until"),
        event_type=params.get("event_type") if audit else None,
        decision_id=params.get("decision_id") if audit else None,
    )


# -- route handlers -------------------------------------------------------------------------------------


def _propose(core: Core, call: _Call) -> tuple[int, Any]:
    proposal = _model(Proposal, call.body)
    size = len(json.dumps(proposal.action.parameters, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_PARAMETERS_BYTES:
        raise _validation(
            422,
            "parameters_too_large",
            f"action.parameters is {size} bytes; the limit is {MAX_PARAMETERS_BYTES}. Send a reference to large "
            "data instead of the data.",
            {"max_bytes": MAX_PARAMETERS_BYTES},
        )
    key = call.request.headers.get("idempotency-key")
    idempotency = None
    if key is not None:
        if not 1 <= len(key) <= 255:
            raise _query_error("Idempotency-Key", "must be 1 to 255 characters", where="header")
        idempotency = (call.api_key, key, canonical_hash(proposal.model_dump(mode="json")))
    decision, replayed = core.propose(proposal, idempotency)
    if replayed:
        call.response_headers["Idempotent-Replayed"] = "true"
    return 200, decision_json(decision)


def _get_decision(core: Core, call: _Call) -> tuple[int, Any]:
    raw = call.params.get("wait")
    if raw is not None:
        try:
            wait = float(raw)
        except ValueError:
            wait = -1.0
        if not wait >= 0.0:  # also rejects NaN; longer waits are capped, and the fake never waits anyway
            raise _query_error("wait", f"must be a number of seconds (0 to {MAX_WAIT_SECONDS:g})")
    return 200, decision_json(core.get_decision(call.path["id"], polled=True))


def _list_decisions(core: Core, call: _Call) -> tuple[int, Any]:
    filters = _filters(call.params, audit=False)
    limit = _limit_param(call.params)
    items, position = core.list_decisions(filters, limit, _decode_cursor("d", call.params))
    page = DecisionPage(items=items, next_cursor=_encode_cursor("d", position))
    return 200, page.model_dump(mode="json")


def _review(core: Core, call: _Call) -> tuple[int, Any]:
    body = _model(ReviewRequest, call.body)
    decision = core.resolve_review(call.path["id"], approve=body.approve, reviewer=core.key_name, note=body.note)
    return 200, decision_json(decision)


def _execution(core: Core, call: _Call) -> tuple[int, Any]:
    report = _model(ExecutionReport, call.body)
    return 201, core.report_execution(call.path["id"], report).model_dump(mode="json")


def _list_capabilities(core: Core, call: _Call) -> tuple[int, Any]:
    with core.lock:
        return 200, [c.model_dump(mode="json") for c in core.capabilities.values()]


def _create_capability(core: Core, call: _Call) -> tuple[int, Any]:
    capability = _model(Capability, call.body)
    created = core.put_capability(capability)
    return 201 if created else 200, capability.model_dump(mode="json")


def _get_capability(core: Core, call: _Call) -> tuple[int, Any]:
    return 200, core.get_capability(call.path["name"]).model_dump(mode="json")


def _list_policies(core: Core, call: _Call) -> tuple[int, Any]:
    with core.lock:
        return 200, [p.model_dump(mode="json") for p in core.policies.values()]


def _create_policy(core: Core, call: _Call) -> tuple[int, Any]:
    policy = _model(Policy, call.body)
    core.put_policy(policy, create=True)
    return 201, policy.model_dump(mode="json")


def _get_policy(core: Core, call: _Call) -> tuple[int, Any]:
    return 200, core.get_policy(call.path["name"]).model_dump(mode="json")


def _update_policy(core: Core, call: _Call) -> tuple[int, Any]:
    name = call.path["name"]
    policy = _model(Policy, call.body)
    if policy.name != name:
        raise _validation(
            422,
            "invalid_request",
            f"The body names policy {policy.name!r} but the path names {name!r}. Make them equal.",
            {"errors": [{"loc": ["body", "name"], "msg": "must equal the name in the path", "type": "value_error"}]},
        )
    created = core.put_policy(policy, create=False)
    return 201 if created else 200, policy.model_dump(mode="json")


def _delete_policy(core: Core, call: _Call) -> tuple[int, Any]:
    core.delete_policy(call.path["name"])
    return 204, None


def _validate_policy(core: Core, call: _Call) -> tuple[int, Any]:
    policy = _model(Policy, call.body)
    with core.lock:
        candidates = {**core.policies, policy.name: policy}
    problems = core.validate_policies(list(candidates.values()))
    return 200, PolicyValidation(valid=not problems, errors=problems).model_dump(mode="json")


def _audit_log(core: Core, call: _Call) -> tuple[int, Any]:
    filters = _filters(call.params, audit=True)
    limit = _limit_param(call.params)
    items, position = core.audit_log(filters, limit, _decode_cursor("a", call.params))
    return 200, AuditPage(items=items, next_cursor=_encode_cursor("a", position)).model_dump(mode="json")


def _audit_trail(core: Core, call: _Call) -> tuple[int, Any]:
    decision_id = call.path["id"]
    trail = AuditTrail(decision_id=decision_id, records=core.audit_trail(decision_id))
    return 200, trail.model_dump(mode="json")


def _audit_verify(core: Core, call: _Call) -> tuple[int, Any]:
    return 200, core.verify().model_dump(mode="json")


def _health(core: Core, call: _Call) -> tuple[int, Any]:
    return 200, {"status": "ok", "version": __version__, "checks": {}}


def _ready(core: Core, call: _Call) -> tuple[int, Any]:
    with core.lock:
        counts = {"policies": len(core.policies), "capabilities": len(core.capabilities)}
    checks = {"store": {"ok": True}, "policies": {"ok": True, **counts}}
    return 200, {"status": "ready", "version": __version__, "checks": checks}


_ID = r"(?P<id>[^/]+)"
_NAME = r"(?P<name>[^/]+)"
_ROUTES: tuple[_Route, ...] = tuple(
    _Route(method, re.compile(f"^/api/v1/{pattern}$"), scope, handler)
    for method, pattern, scope, handler in (
        ("POST", "governance/propose", "governance:propose", _propose),
        ("GET", "governance/decisions", "governance:read", _list_decisions),
        ("GET", f"governance/decisions/{_ID}", "governance:read", _get_decision),
        ("POST", f"governance/decisions/{_ID}/review", "governance:review", _review),
        ("POST", f"governance/decisions/{_ID}/execution", "governance:propose", _execution),
        ("GET", "capabilities", "governance:read", _list_capabilities),
        ("POST", "capabilities", "policies:manage", _create_capability),
        ("GET", f"capabilities/{_NAME}", "governance:read", _get_capability),
        ("POST", "policies/validate", "policies:manage", _validate_policy),
        ("GET", "policies", "governance:read", _list_policies),
        ("POST", "policies", "policies:manage", _create_policy),
        ("GET", f"policies/{_NAME}", "governance:read", _get_policy),
        ("PUT", f"policies/{_NAME}", "policies:manage", _update_policy),
        ("DELETE", f"policies/{_NAME}", "policies:manage", _delete_policy),
        ("GET", "audit/log", "audit:read", _audit_log),
        ("GET", "audit/verify", "audit:read", _audit_verify),
        ("GET", f"audit/log/{_ID}", "audit:read", _audit_trail),
        ("GET", "health", None, _health),
        ("GET", "ready", None, _ready),
    )
)


def _match(method: str, path: str) -> tuple[_Route, dict[str, str]]:
    allowed: list[str] = []
    for route in _ROUTES:
        found = route.pattern.match(path)
        if found is None:
            continue
        if route.method == method:
            return route, found.groupdict()
        allowed.append(route.method)
    if allowed:
        raise _validation(
            405,
            "method_not_allowed",
            f"{method} is not allowed on {path}. Allowed: {', '.join(sorted(set(allowed)))}.",
            {"allowed": sorted(set(allowed))},
        )
    raise ApiError(
        404,
        "not_found",
        "not_found",
        f"No route {path!r}. The API lives under /api/v1; see docs/api.md for every route.",
        {"resource": "route", "path": path},
    )


def _authenticate(core: Core, request: httpx.Request, scope: str) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(
            401,
            "authentication_error",
            "missing_api_key",
            "No API key. Send `Authorization: Bearer aegis_sk_…` (the fake accepts any key unless it was built "
            "with api_key=).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if core.api_key is not None and not secrets.compare_digest(key.encode(), core.api_key.encode()):
        raise ApiError(
            401,
            "authentication_error",
            "invalid_api_key",
            "The API key is unknown or revoked. Use the api_key the FakePlatform was built with.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if core.scopes is not None and scope not in core.scopes and "admin" not in core.scopes:
        raise ApiError(
            403,
            "permission_error",
            "missing_scope",
            f"The API key {core.key_name!r} lacks the scope {scope!r} this route needs. Use a key that has it "
            "(or `admin`).",
            {"required_scope": scope},
        )
    return canonical_hash(key)


# -- the transport handler ------------------------------------------------------------------------------


def _injected(failure_status: int, retry_after: float | None, code: str | None, message: str | None) -> ApiError:
    type_, default_code, default_message = _STATUS_DEFAULTS.get(
        failure_status,
        (
            "server_error" if failure_status >= 500 else "validation_error",
            "internal_error" if failure_status >= 500 else "invalid_request",
            f"Injected failure {failure_status} (FakePlatform.fail_next).",
        ),
    )
    details: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if failure_status in (429, 503) or retry_after is not None:
        seconds = 0.0 if retry_after is None else retry_after
        text = f"{seconds:g}" if seconds != int(seconds) else str(int(seconds))
        headers["Retry-After"] = text
        details["retry_after"] = seconds
    if failure_status == 403:
        details["required_scope"] = "admin"
    return ApiError(failure_status, type_, code or default_code, message or default_message, details, headers)


def _respond(status: int, payload: Any, request_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    all_headers = {**(headers or {}), "X-Request-ID": request_id}
    if status == 204:
        return httpx.Response(204, headers=all_headers)
    return httpx.Response(status, json=payload, headers=all_headers)


def _error(error: ApiError, request_id: str) -> httpx.Response:
    body = {
        "error": {
            "type": error.type,
            "code": error.code,
            "message": error.message,
            "request_id": request_id,
            "details": error.details,
        }
    }
    return _respond(error.status, body, request_id, error.headers)


def _serve(core: Core, request: httpx.Request, path: str, request_id: str) -> httpx.Response:
    try:
        body = _read_body(request) if request.method in _BODY_METHODS and path.startswith("/api/") else None
        route, path_params = _match(request.method, path)
        api_key = "" if route.scope is None else _authenticate(core, request, route.scope)
        call = _Call(request, dict(request.url.params), path_params, body, api_key)
        status, payload = route.handler(core, call)
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


def handle(core: Core, request: httpx.Request) -> httpx.Response:
    """Answer one request as the v1 platform would (or as a failure injected into the fake)."""
    presented = request.headers.get("x-request-id")
    request_id = presented if presented and _REQUEST_ID_OK.match(presented) else "req_" + secrets.token_hex(16)
    path = request.url.path
    if len(path) > 1:
        path = path.rstrip("/")
    failure = core.take_failure(path)
    status: int | None = None
    try:
        if failure is not None and failure.kind == "connect":
            raise httpx.ConnectError("FakePlatform: connection refused (fail_with_connect_error)", request=request)
        if failure is not None and failure.kind == "timeout":
            raise httpx.ReadTimeout("FakePlatform: read timed out (fail_with_timeout)", request=request)
        if failure is not None:
            injected = _injected(failure.status, failure.retry_after, failure.code, failure.message)
            response = _error(injected, request_id)
        else:
            response = _serve(core, request, path, request_id)
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
        with core.lock:
            core.requests.append(recorded)
