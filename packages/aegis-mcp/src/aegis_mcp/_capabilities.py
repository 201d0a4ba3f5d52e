"""`aegis-mcp capabilities [--sync]`: the capabilities the upstreams' tools are governed as, registered with
AEGIS on request (name, description, risk level, and the tool's input schema as the parameter schema), so that
policies can be written against them at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import mcp_types as types
from pydantic import ValidationError

from aegis_mcp._proxy import Route
from aegis_sdk import AegisError, AsyncAegisClient
from aegis_sdk.errors import NotFoundError
from aegis_sdk.models import Capability

_DESCRIPTION_LIMIT = 2000


@dataclass(frozen=True)
class PlannedCapability:
    """One exposed tool and the capability it is registered as."""

    tool: str
    upstream: str
    name: str
    description: str
    risk_level: str
    parameter_schema: dict[str, Any]

    def capability(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "risk_level": self.risk_level,
            "parameter_schema": self.parameter_schema,
        }


@dataclass(frozen=True)
class SyncOutcome:
    tool: str
    capability: str
    status: str  # created | replaced | unchanged | differs | failed
    message: str = ""


def plan(exposed: Sequence[tuple[types.Tool, Route]], risk_level: str) -> list[PlannedCapability]:
    planned = []
    for tool, route in exposed:
        description = " ".join((tool.description or tool.title or "").split())
        if len(description) > _DESCRIPTION_LIMIT:
            description = description[: _DESCRIPTION_LIMIT - 1] + "…"
        planned.append(
            PlannedCapability(
                tool=tool.name,
                upstream=route.upstream.name,
                name=route.capability,
                description=description,
                risk_level=risk_level,
                parameter_schema=dict(tool.input_schema) or {"type": "object"},
            )
        )
    return planned


async def sync(
    client: AsyncAegisClient, planned: Sequence[PlannedCapability], *, replace: bool = False
) -> list[SyncOutcome]:
    """Register each planned capability: created (it was missing), unchanged, differs (it exists and differs:
    left as it is, the message names the fields), replaced (`replace`: it differed), or failed (with the
    server's message: a rejected schema, a capability defined in a policy file, a key without policies:manage).

    An operator's protections are never lowered: what is compared and written keeps the existing `x-sensitive`
    marks of the properties in both schemas and the higher of the two risk levels."""
    outcomes = []
    for item in planned:
        wanted = item.capability()
        try:
            Capability.model_validate(wanted)
        except ValidationError as exc:
            problem = f"not a valid capability: {exc.errors()[0]['msg']}"
            outcomes.append(SyncOutcome(item.tool, item.name, "failed", problem))
            continue
        try:
            current: Capability | None = await client.capabilities.get(item.name)
        except NotFoundError:
            current = None
        except AegisError as exc:
            outcomes.append(SyncOutcome(item.tool, item.name, "failed", _message(exc)))
            continue
        if current is not None:
            existing = current.model_dump(mode="json")
            wanted = _keeping_protections(Capability.model_validate(wanted).model_dump(mode="json"), existing)
            differing = [
                field for field in ("description", "risk_level", "parameter_schema") if wanted[field] != existing[field]
            ]
            if not differing:
                outcomes.append(SyncOutcome(item.tool, item.name, "unchanged"))
                continue
            if not replace:
                message = f"{', '.join(differing)} differ; left as it is (--replace replaces it)"
                outcomes.append(SyncOutcome(item.tool, item.name, "differs", message))
                continue
            dropped = sensitive_paths(existing["parameter_schema"]) - sensitive_paths(wanted["parameter_schema"])
            if dropped:
                message = (
                    f"replacing it would drop x-sensitive at {', '.join(sorted(dropped))} (the tool's schema has "
                    "another shape there); left as it is: change the capability by hand"
                )
                outcomes.append(SyncOutcome(item.tool, item.name, "differs", message))
                continue
        try:
            await client.capabilities.create(wanted)
        except AegisError as exc:
            outcomes.append(SyncOutcome(item.tool, item.name, "failed", _message(exc)))
            continue
        outcomes.append(SyncOutcome(item.tool, item.name, "created" if current is None else "replaced"))
    return outcomes


_RISK_ORDER = ("low", "medium", "high", "critical")


def _keeping_protections(wanted: dict[str, Any], existing: dict[str, Any]) -> dict[str, Any]:
    """`wanted` with the higher of the two risk levels and the `x-sensitive` marks of `existing`'s schema kept
    on the properties present in both."""
    merged = dict(wanted)
    levels = [level for level in (wanted.get("risk_level"), existing.get("risk_level")) if level in _RISK_ORDER]
    if levels:
        merged["risk_level"] = max(levels, key=_RISK_ORDER.index)
    merged["parameter_schema"] = _keep_sensitive(wanted.get("parameter_schema"), existing.get("parameter_schema"))
    return merged


# Where JSON Schema keeps subschemas (the server honours `x-sensitive` in all of them: engine/_sensitive.py).
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas", "dependencies")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_SUBSCHEMAS = (
    "items",
    "additionalProperties",
    "additionalItems",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
)


def _keep_sensitive(new: Any, old: Any) -> Any:
    """`new` with the `x-sensitive` marks of `old` wherever both schemas have the same subschema."""
    if not isinstance(new, dict) or not isinstance(old, dict):
        return new
    result = dict(new)
    if old.get("x-sensitive") is True:
        result["x-sensitive"] = True
    for key in _SUBSCHEMA_MAPS:
        new_map, old_map = new.get(key), old.get(key)
        if isinstance(new_map, dict) and isinstance(old_map, dict):
            result[key] = {name: _keep_sensitive(value, old_map.get(name)) for name, value in new_map.items()}
    for key in _SUBSCHEMA_LISTS:
        new_list, old_list = new.get(key), old.get(key)
        if isinstance(new_list, list) and isinstance(old_list, list) and len(new_list) == len(old_list):
            result[key] = [_keep_sensitive(n, o) for n, o in zip(new_list, old_list, strict=True)]
    for key in _SUBSCHEMAS:
        if isinstance(new.get(key), dict) and isinstance(old.get(key), dict):
            result[key] = _keep_sensitive(new[key], old[key])
    return result


def sensitive_paths(schema: Any, at: str = "") -> set[str]:
    """Where a schema marks a value `x-sensitive` (JSON-pointer-like paths)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        if schema.get("x-sensitive") is True:
            found.add(at or "/")
        for key, value in schema.items():
            found |= sensitive_paths(value, f"{at}/{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found |= sensitive_paths(value, f"{at}/{index}")
    return found


def _message(exc: AegisError) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}"


def planned_json(planned: Sequence[PlannedCapability]) -> list[dict[str, Any]]:
    return [asdict(item) for item in planned]


def outcomes_json(outcomes: Sequence[SyncOutcome]) -> list[dict[str, Any]]:
    return [asdict(item) for item in outcomes]


def planned_text(planned: Sequence[PlannedCapability]) -> str:
    lines = [f"{len(planned)} capabilities would be registered (run with --sync to register them):"]
    for item in planned:
        lines.append(f"  {item.name}  (tool {item.tool} of {item.upstream}, risk {item.risk_level})")
    return "\n".join(lines)


def outcomes_text(outcomes: Sequence[SyncOutcome]) -> str:
    lines = []
    for item in outcomes:
        line = f"{item.status:<9} {item.capability}  (tool {item.tool})"
        if item.message:
            line += f": {item.message}"
        lines.append(line)
    statuses = ("created", "replaced", "unchanged", "differs")
    counts = {status: sum(1 for o in outcomes if o.status == status) for status in statuses}
    failed = sum(1 for o in outcomes if o.status == "failed")
    lines.append(", ".join(f"{count} {status}" for status, count in counts.items()) + f", {failed} failed")
    return "\n".join(lines)


__all__ = ["PlannedCapability", "SyncOutcome", "outcomes_json", "outcomes_text", "plan", "planned_json", "sync"]
