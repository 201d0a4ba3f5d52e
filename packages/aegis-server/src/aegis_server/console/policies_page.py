"""`/console/policies` (scope governance:read or policies:manage): the active policy set, read-only: its
version. Each policy with where it comes from (its file, or the API), its digest and its rules, with a badge
on what is in shadow mode; each capability with its parameter schema and the fields marked
`"x-sensitive": true`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aegis_sdk._wire.canonical import canonical_json
from aegis_sdk.models import Capability, Policy
from aegis_server.console.rendering import error_page, render
from aegis_server.console.sessions import ConsoleUser, signed_in
from aegis_server.governance.errors import Unavailable
from aegis_server.governance.service import GovernanceService
from aegis_server.policies.manager import PolicyManager
from aegis_server.security import SCOPE_POLICIES, SCOPE_READ

__all__ = ["item_digest", "policies_page", "policy_view", "router", "sensitive_fields"]

router = APIRouter()

API_SOURCE = "API"
# Where a subschema says which value it validates, and how that value is named under its parent's.
_NAMED_CHILDREN = {"properties": ".{}", "patternProperties": ".<{}>", "dependentSchemas": ""}
_ONE_CHILD = {"items": "[]", "additionalItems": "[]", "additionalProperties": ".*", "if": "", "then": "", "else": ""}
_LISTED_CHILDREN = {"prefixItems": "[{}]", "items": "[{}]", "allOf": "", "anyOf": "", "oneOf": ""}
_DEFINITIONS = ("$defs", "definitions")


def item_digest(item: Policy | Capability) -> str:
    """`sha256:<hex>` of the canonical JSON of one policy or capability (as the set's digest is made)."""
    return "sha256:" + hashlib.sha256(canonical_json(item.model_dump(mode="json"))).hexdigest()


def _child(path: str, suffix: str) -> str:
    return (path + suffix).lstrip(".") if not path else path + suffix


def _definition(root: Any, reference: Any) -> Any:
    """The subschema a local `$ref` (`#/$defs/name`, `#/definitions/name`) points at, else None."""
    if not isinstance(reference, str):
        return None
    for keyword in _DEFINITIONS:
        prefix = f"#/{keyword}/"
        if reference.startswith(prefix) and isinstance(root.get(keyword), dict):
            return root[keyword].get(reference[len(prefix) :])
    return None


def _marked(root: Any, node: Any, path: str, followed: frozenset[str]) -> Iterator[str]:
    if not isinstance(node, dict):
        return
    if node.get("x-sensitive") is True:
        yield path or "(the parameters as a whole)"
    reference = node.get("$ref")
    target = _definition(root, reference)
    if target is not None and reference not in followed:  # a recursive reference is followed once
        yield from _marked(root, target, path, followed | {str(reference)})
    for keyword, child in node.items():
        if keyword in _NAMED_CHILDREN and isinstance(child, dict):
            for name, subschema in child.items():
                yield from _marked(root, subschema, _child(path, _NAMED_CHILDREN[keyword].format(name)), followed)
        elif keyword in _LISTED_CHILDREN and isinstance(child, list):
            for index, subschema in enumerate(child):
                yield from _marked(root, subschema, _child(path, _LISTED_CHILDREN[keyword].format(index)), followed)
        elif keyword in _ONE_CHILD and isinstance(child, dict):
            yield from _marked(root, child, _child(path, _ONE_CHILD[keyword]), followed)


def sensitive_fields(schema: Any) -> list[str]:
    """Where a parameter schema marks values `"x-sensitive": true`, as readable paths (`card.number`,
    `lines[]`, `*` for additional properties; a local `$ref` is followed), without repeats, in the
    schema's order."""
    return list(dict.fromkeys(_marked(schema, schema, "", frozenset()))) if isinstance(schema, dict) else []


def policy_view(policy: Policy, source: str | None) -> dict[str, Any]:
    """A policy as its card shows it (`_policy_card.html`); `source`: its file, or None when the API stored it."""
    rules = [
        {
            "id": rule.id if rule.id is not None else str(index),
            "capability": rule.capability,
            "outcome": rule.outcome,
            "condition": rule.condition,
            "reason": rule.reason,
            "priority": rule.priority,
            "risk": rule.risk,
            "review_timeout_seconds": rule.review_timeout_seconds,
            "mode": rule.mode or policy.mode,
            # A rule that enforces inside a shadow-mode policy: said beside it, as it is easily missed.
            "mode_explicit": rule.mode is not None and rule.mode != policy.mode,
        }
        for index, rule in enumerate(policy.rules)
    ]
    return {
        "name": policy.name,
        "description": policy.description,
        "enabled": policy.enabled,
        "mode": policy.mode,
        "source": source or API_SOURCE,
        "digest": item_digest(policy),
        "rules": rules,
    }


def _capability_view(capability: Capability, manager: PolicyManager) -> dict[str, Any]:
    return {
        "name": capability.name,
        "description": capability.description,
        "risk_level": capability.risk_level,
        "source": manager.source_of(capability.name, capability=True) or API_SOURCE,
        "digest": item_digest(capability),
        "schema": capability.parameter_schema,
        "sensitive": sensitive_fields(capability.parameter_schema),
    }


@router.get("/policies", response_class=HTMLResponse)
async def policies_page(
    request: Request, user: Annotated[ConsoleUser, Depends(signed_in(SCOPE_READ, SCOPE_POLICIES))]
) -> HTMLResponse:
    service: GovernanceService = request.app.state.service
    manager = service.policies
    try:
        await manager.maybe_refresh()  # what other replicas stored since this one last looked
        active = manager.active
    except Unavailable as error:
        return error_page(request, 503, error.message, user=user)
    revision = await service.store.policy_revision()
    context = {
        "digest": active.digest,
        "rule_count": active.rule_count,
        "shadow_rule_count": active.shadow_rule_count,
        "version": active.version,
        "revision": revision or None,
        "paths": [str(path) for path in manager.paths],
        "warnings": active.warnings,
        "policies": [policy_view(policy, manager.source_of(policy.name)) for policy in active.policies],
        "capabilities": [_capability_view(capability, manager) for capability in active.capabilities.values()],
    }
    return render(request, "policies.html", context, user=user)
