"""A small JSON Schema subset, enough to check scripted capabilities' parameters in the fake.

Supported keywords: type, enum, const, properties, required, additionalProperties, minimum, maximum,
exclusiveMinimum, exclusiveMaximum, minLength, maxLength, pattern, items, minItems, maxItems.
Other keywords are ignored. Messages name the field and the rule, never the value that was sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["sensitive_fields", "validate"]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list, tuple),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, (object,)))


def _error(field: str, keyword: str, message: str) -> dict[str, Any]:
    return {"field": field or "(root)", "message": message, "validator": keyword}


def _join(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


def validate(schema: Mapping[str, Any], value: Any, field: str = "") -> list[dict[str, Any]]:
    """Return the problems of `value` against `schema` (empty when it conforms)."""
    errors: list[dict[str, Any]] = []
    expected = schema.get("type")
    if expected is not None:
        names = [expected] if isinstance(expected, str) else list(expected)
        if not any(_is_type(value, name) for name in names):
            errors.append(_error(field, "type", f"must be of type {' or '.join(names)}"))
            return errors
    if "enum" in schema and value not in schema["enum"]:
        errors.append(_error(field, "enum", f"must be one of {list(schema['enum'])!r}"))
    if "const" in schema and value != schema["const"]:
        errors.append(_error(field, "const", f"must equal {schema['const']!r}"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        errors.extend(_check_number(schema, value, field))
    if isinstance(value, str):
        errors.extend(_check_string(schema, value, field))
    if isinstance(value, (list, tuple)):
        errors.extend(_check_array(schema, list(value), field))
    if isinstance(value, dict):
        errors.extend(_check_object(schema, value, field))
    return errors


def _check_number(schema: Mapping[str, Any], value: float, field: str) -> list[dict[str, Any]]:
    errors = []
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(_error(field, "minimum", f"must be at least {schema['minimum']}"))
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(_error(field, "maximum", f"must be at most {schema['maximum']}"))
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(_error(field, "exclusiveMinimum", f"must be greater than {schema['exclusiveMinimum']}"))
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        errors.append(_error(field, "exclusiveMaximum", f"must be less than {schema['exclusiveMaximum']}"))
    return errors


def _check_string(schema: Mapping[str, Any], value: str, field: str) -> list[dict[str, Any]]:
    errors = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(_error(field, "minLength", f"must be at least {schema['minLength']} characters long"))
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(_error(field, "maxLength", f"must be at most {schema['maxLength']} characters long"))
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        errors.append(_error(field, "pattern", f"must match the pattern {schema['pattern']!r}"))
    return errors


def _check_array(schema: Mapping[str, Any], value: list[Any], field: str) -> list[dict[str, Any]]:
    errors = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(_error(field, "minItems", f"must have at least {schema['minItems']} items"))
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(_error(field, "maxItems", f"must have at most {schema['maxItems']} items"))
    items = schema.get("items")
    if isinstance(items, Mapping):
        for index, item in enumerate(value):
            errors.extend(validate(items, item, _join(field, index)))
    return errors


def _check_object(schema: Mapping[str, Any], value: dict[str, Any], field: str) -> list[dict[str, Any]]:
    errors = []
    properties: Mapping[str, Any] = schema.get("properties") or {}
    for name in schema.get("required") or ():
        if name not in value:
            errors.append(_error(_join(field, name), "required", "is required"))
    for name, item in value.items():
        if name in properties:
            errors.extend(validate(properties[name], item, _join(field, name)))
            continue
        extra = schema.get("additionalProperties", True)
        if extra is False:
            errors.append(_error(_join(field, name), "additionalProperties", "is not an allowed parameter"))
        elif isinstance(extra, Mapping):
            errors.extend(validate(extra, item, _join(field, name)))
    return errors


def sensitive_fields(schema: Mapping[str, Any]) -> set[str]:
    """Top-level parameter names marked `"x-sensitive": true`."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    return {name for name, sub in properties.items() if isinstance(sub, Mapping) and sub.get("x-sensitive") is True}
