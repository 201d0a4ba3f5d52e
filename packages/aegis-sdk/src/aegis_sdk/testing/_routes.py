"""The routes of the v1 contract the fake serves: one handler per route, and the table that finds it."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import httpx

from aegis_sdk._version import __version__
from aegis_sdk._wire.canonical import canonical_hash, canonical_json
from aegis_sdk._wire.envelope import ApiError, governance_error, name_mismatch, validation_error
from aegis_sdk._wire.listing import query_error, read_listing_query
from aegis_sdk.models import (
    AuditPage,
    AuditTrail,
    Capability,
    DecisionPage,
    ExecutionBatch,
    ExecutionReport,
    Policy,
    PolicyValidation,
    Proposal,
    ReviewRequest,
)
from aegis_sdk.testing import _audit, _decisions, _registry
from aegis_sdk.testing._requests import read_model
from aegis_sdk.testing._state import ApiKey, FakeState, decision_json

__all__ = ["MAX_PARAMETERS_BYTES", "MAX_WAIT_SECONDS", "Call", "Route", "match_route"]

MAX_PARAMETERS_BYTES = 64 * 1024
MAX_WAIT_SECONDS = 60.0


@dataclasses.dataclass
class Call:
    """One authenticated request, as a handler sees it. `key_hash` identifies the API key (idempotency)."""

    request: httpx.Request
    params: dict[str, str]
    path: dict[str, str]
    body: Any
    key: ApiKey | None
    key_hash: str
    response_headers: dict[str, str] = dataclasses.field(default_factory=dict)


_Handler = Callable[[FakeState, Call], "tuple[int, Any]"]


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    scope: str | None
    handler: _Handler


def _propose(state: FakeState, call: Call) -> tuple[int, Any]:
    proposal = read_model(Proposal, call.body)
    try:  # measured and refused as the server does
        size = len(canonical_json(proposal.action.parameters))
    except (TypeError, ValueError) as error:
        raise governance_error(
            422,
            "invalid_parameters",
            f"The parameters cannot be canonicalised: {error}.",
            {"field": "(root)", "errors": [{"field": "(root)", "message": str(error), "validator": "canonical"}]},
        ) from None
    if size > MAX_PARAMETERS_BYTES:
        raise validation_error(
            422,
            "parameters_too_large",
            f"action.parameters is {size} bytes in canonical JSON; the limit is {MAX_PARAMETERS_BYTES}. Pass "
            "references (ids, URLs) instead of large values.",
            {"size": size, "max_bytes": MAX_PARAMETERS_BYTES},
        )
    key = call.request.headers.get("idempotency-key")
    idempotency = None
    if key is not None:
        if not 1 <= len(key) <= 255:
            raise query_error("Idempotency-Key", "must be 1 to 255 characters", where="header")
        idempotency = (call.key_hash, key, canonical_hash(proposal.model_dump(mode="json")))
    decision, replayed = _decisions.propose(state, proposal, idempotency)
    if replayed:
        call.response_headers["Idempotent-Replayed"] = "true"
    return 200, decision_json(decision)


def _get_decision(state: FakeState, call: Call) -> tuple[int, Any]:
    raw = call.params.get("wait")
    if raw is not None:
        try:
            wait = float(raw)
        except ValueError:
            wait = -1.0
        if not wait >= 0.0:  # also rejects NaN; longer waits are capped, and the fake never waits anyway
            raise query_error("wait", f"must be a number of seconds (0 to {MAX_WAIT_SECONDS:g})")
    return 200, decision_json(_decisions.get_decision(state, call.path["id"], polled=True))


def _list_decisions(state: FakeState, call: Call) -> tuple[int, Any]:
    filters, limit = read_listing_query(call.params, audit=False)
    items, cursor = _decisions.list_decisions(state, filters, limit, call.params.get("cursor") or None)
    return 200, DecisionPage(items=items, next_cursor=cursor).model_dump(mode="json")


def _review(state: FakeState, call: Call) -> tuple[int, Any]:
    body = read_model(ReviewRequest, call.body)
    reviewer = call.key.name if call.key is not None else state.key_name
    decision = _decisions.resolve_review(
        state, call.path["id"], approve=body.approve, reviewer=reviewer, note=body.note
    )
    return 200, decision_json(decision)


def _execution(state: FakeState, call: Call) -> tuple[int, Any]:
    report = read_model(ExecutionReport, call.body)
    return 201, _decisions.report_execution(state, call.path["id"], report).model_dump(mode="json")


def _execution_batch(state: FakeState, call: Call) -> tuple[int, Any]:
    """Each report answered on its own, as the platform does: recorded, duplicate (the same status already
    recorded) or the single route's error."""
    batch = read_model(ExecutionBatch, call.body)
    results: list[dict[str, Any]] = []
    for item in batch.reports:
        report = ExecutionReport.model_validate(item.model_dump(exclude={"decision_id"}))
        decision_id = item.decision_id
        try:
            record = _decisions.report_execution(state, decision_id, report)
        except ApiError as exc:
            with state.lock:
                stored = state.executions.get(decision_id)
                audit = [r for r in state.audit if r.decision_id == decision_id and r.event_type == "execution"]
            if exc.code == "already_reported" and stored is not None and stored.status == item.status and audit:
                execution = {
                    "decision_id": decision_id,
                    "status": stored.status,
                    "recorded_at": audit[-1].timestamp,
                    "audit_ref": audit[-1].audit_ref,
                }
                results.append({"decision_id": decision_id, "status": "duplicate", "execution": execution})
                continue
            error = {"type": exc.type, "code": exc.code, "message": exc.message, "details": exc.details}
            results.append({"decision_id": decision_id, "status": "error", "error": error})
            continue
        results.append({"decision_id": decision_id, "status": "recorded", "execution": record.model_dump(mode="json")})
    return 200, {"results": results}


def _list_capabilities(state: FakeState, call: Call) -> tuple[int, Any]:
    with state.lock:
        return 200, [c.model_dump(mode="json") for c in state.capabilities.values()]


def _create_capability(state: FakeState, call: Call) -> tuple[int, Any]:
    capability = read_model(Capability, call.body)
    created = _registry.put_capability(state, capability)
    return 201 if created else 200, capability.model_dump(mode="json")


def _get_capability(state: FakeState, call: Call) -> tuple[int, Any]:
    return 200, _registry.get_capability(state, call.path["name"]).model_dump(mode="json")


def _list_policies(state: FakeState, call: Call) -> tuple[int, Any]:
    with state.lock:
        return 200, [p.model_dump(mode="json") for p in state.policies.values()]


def _create_policy(state: FakeState, call: Call) -> tuple[int, Any]:
    policy = read_model(Policy, call.body)
    _registry.put_policy(state, policy, create=True)
    return 201, policy.model_dump(mode="json")


def _get_policy(state: FakeState, call: Call) -> tuple[int, Any]:
    return 200, _registry.get_policy(state, call.path["name"]).model_dump(mode="json")


def _update_policy(state: FakeState, call: Call) -> tuple[int, Any]:
    name = call.path["name"]
    policy = read_model(Policy, call.body)
    if policy.name != name:
        raise name_mismatch("policy", policy.name, name)
    created = _registry.put_policy(state, policy, create=False)
    return 201 if created else 200, policy.model_dump(mode="json")


def _delete_policy(state: FakeState, call: Call) -> tuple[int, Any]:
    _registry.delete_policy(state, call.path["name"])
    return 204, None


def _validate_policy(state: FakeState, call: Call) -> tuple[int, Any]:
    policy = read_model(Policy, call.body)
    with state.lock:
        candidates = {**state.policies, policy.name: policy}
    problems = _registry.validate_policies(list(candidates.values()))
    return 200, PolicyValidation(valid=not problems, errors=problems).model_dump(mode="json")


def _audit_log(state: FakeState, call: Call) -> tuple[int, Any]:
    filters, limit = read_listing_query(call.params, audit=True)
    items, cursor = _audit.audit_log(state, filters, limit, call.params.get("cursor") or None)
    return 200, AuditPage(items=items, next_cursor=cursor).model_dump(mode="json")


def _audit_trail(state: FakeState, call: Call) -> tuple[int, Any]:
    decision_id = call.path["id"]
    _decisions.entry(state, decision_id)  # 404 for an unknown decision
    trail = AuditTrail(decision_id=decision_id, records=_audit.audit_trail(state, decision_id))
    return 200, trail.model_dump(mode="json")


def _audit_verify(state: FakeState, call: Call) -> tuple[int, Any]:
    return 200, _audit.verify(state).model_dump(mode="json")


def _health(state: FakeState, call: Call) -> tuple[int, Any]:
    return 200, {"status": "ok", "version": __version__, "checks": {}}


def _ready(state: FakeState, call: Call) -> tuple[int, Any]:
    with state.lock:
        counts = {"policies": len(state.policies), "capabilities": len(state.capabilities)}
    checks = {"store": {"ok": True}, "policies": {"ok": True, **counts}}
    return 200, {"status": "ready", "version": __version__, "checks": checks}


_ID = r"(?P<id>[^/]+)"
_NAME = r"(?P<name>[^/]+)"
_ROUTES: tuple[Route, ...] = tuple(
    Route(method, re.compile(f"^/api/v1/{pattern}$"), scope, handler)
    for method, pattern, scope, handler in (
        ("POST", "governance/propose", "governance:propose", _propose),
        ("GET", "governance/decisions", "governance:read", _list_decisions),
        ("GET", f"governance/decisions/{_ID}", "governance:read", _get_decision),
        ("POST", f"governance/decisions/{_ID}/review", "governance:review", _review),
        ("POST", f"governance/decisions/{_ID}/execution", "governance:propose", _execution),
        ("POST", "governance/executions/batch", "governance:propose", _execution_batch),
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


def match_route(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route serving `method` on `path` and its path parameters; 405 or 404 when there is none."""
    allowed: list[str] = []
    for route in _ROUTES:
        found = route.pattern.match(path)
        if found is None:
            continue
        if route.method == method:
            return route, found.groupdict()
        allowed.append(route.method)
    if allowed:
        raise validation_error(
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
