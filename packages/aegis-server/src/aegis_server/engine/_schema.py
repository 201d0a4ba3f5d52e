"""Parameter schemas: compiled validators, value-free error messages, and sensitive-field redaction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from aegis_server.canonical import canonical_hash

from .errors import ParameterSchemaError

__all__ = ["CompiledSchema", "SchemaCompileError", "compile_schema", "hash_value"]

_MAX_ERRORS = 20
_SENSITIVE_KEY = "x-sensitive"
_ITEMS = "[]"

SensitiveTree = Mapping[str, Any]
"""`{property: True | subtree}`; the key `"[]"` stands for every item of an array."""


class SchemaCompileError(ValueError):
    """A `parameter_schema` is not a valid JSON Schema."""


def hash_value(value: Any) -> str:
    """`"sha256:<hex>"` of the canonical JSON of `value` (sorted keys, compact, NFC strings)."""
    try:
        return "sha256:" + canonical_hash(value)
    except (TypeError, ValueError):
        # Not JSON data (cannot come from a JSON request); still never store the value itself.
        return "sha256:" + hashlib.sha256(repr(value).encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class CompiledSchema:
    """A capability's compiled validator and the map of its sensitive fields."""

    validator: Any  # a jsonschema Validator instance (the library is untyped for mypy)
    sensitive: SensitiveTree | None
    trivial: bool  # the schema accepts every object: skip validation

    def validate(self, capability: str, parameters: Mapping[str, Any]) -> None:
        """Raise `ParameterSchemaError` when `parameters` do not match."""
        if self.trivial or self.validator.is_valid(parameters):
            return
        errors = sorted(self.validator.iter_errors(parameters), key=_error_order)
        best = jsonschema.exceptions.best_match(errors)
        if best is not None:
            errors.remove(best)
            errors.insert(0, best)
        details = [_describe(error) for error in errors[:_MAX_ERRORS]]
        raise ParameterSchemaError(capability, details[0]["field"], details)

    def redact(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters for the audit log: every sensitive field replaced by its hash."""
        if self.sensitive is None:
            return dict(parameters)
        redacted = _redact(parameters, self.sensitive)
        assert isinstance(redacted, dict)
        return redacted


def compile_schema(schema: Mapping[str, Any]) -> CompiledSchema:
    """Check and compile a JSON Schema (draft 2020-12 unless `$schema` names another draft)."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        path = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        raise SchemaCompileError(f"parameter_schema is not a valid JSON Schema at {path}: {exc.message}") from None
    trivial = dict(schema) in ({}, {"type": "object"})
    return CompiledSchema(validator=cls(schema), sensitive=_sensitive_tree(schema), trivial=trivial)


def _sensitive_tree(schema: Any) -> SensitiveTree | None:
    if not isinstance(schema, Mapping):
        return None
    tree: dict[str, Any] = {}
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for name, sub in properties.items():
            if isinstance(sub, Mapping) and sub.get(_SENSITIVE_KEY) is True:
                tree[str(name)] = True
            else:
                child = _sensitive_tree(sub)
                if child:
                    tree[str(name)] = child
    items = schema.get("items")
    if isinstance(items, Mapping):
        if items.get(_SENSITIVE_KEY) is True:
            tree[_ITEMS] = True
        else:
            child = _sensitive_tree(items)
            if child:
                tree[_ITEMS] = child
    return tree or None


def _redact(value: Any, tree: SensitiveTree) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            rule = tree.get(key)
            if rule is True:
                out[key] = hash_value(item)
            elif isinstance(rule, Mapping):
                out[key] = _redact(item, rule)
            else:
                out[key] = item
        return out
    if isinstance(value, list):
        rule = tree.get(_ITEMS)
        if rule is True:
            return [hash_value(item) for item in value]
        if isinstance(rule, Mapping):
            return [_redact(item, rule) for item in value]
    return value


def _error_order(error: jsonschema.exceptions.ValidationError) -> tuple[int, str]:
    return (len(error.absolute_path), "/".join(str(p) for p in error.absolute_path))


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(root)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(error: jsonschema.exceptions.ValidationError) -> dict[str, Any]:
    """A value-free description: the schema rule that failed, never the value that was sent."""
    validator = str(error.validator)
    expected = error.validator_value
    path = list(error.absolute_path)
    instance = error.instance
    if validator == "required" and isinstance(instance, Mapping) and isinstance(expected, list):
        missing = [name for name in expected if name not in instance]
        name = missing[0] if missing else "?"
        return {"field": _path([*path, name]), "message": "is required", "validator": validator}
    if validator == "additionalProperties" and isinstance(instance, Mapping):
        allowed = set(error.schema.get("properties", {})) if isinstance(error.schema, Mapping) else set()
        extra = sorted(str(k) for k in instance if k not in allowed)
        name = extra[0] if extra else "?"
        return {
            "field": _path([*path, name]),
            "message": "is not an allowed parameter" + (f"; allowed: {', '.join(sorted(allowed))}" if allowed else ""),
            "validator": validator,
        }
    messages: dict[str, Callable[[], str]] = {
        "type": lambda: f"must be of type {expected if isinstance(expected, str) else ' or '.join(expected)}",
        "minimum": lambda: f"must be >= {expected}",
        "maximum": lambda: f"must be <= {expected}",
        "exclusiveMinimum": lambda: f"must be > {expected}",
        "exclusiveMaximum": lambda: f"must be < {expected}",
        "minLength": lambda: f"must be at least {expected} characters long",
        "maxLength": lambda: f"must be at most {expected} characters long",
        "minItems": lambda: f"must have at least {expected} items",
        "maxItems": lambda: f"must have at most {expected} items",
        "uniqueItems": lambda: "must not contain duplicate items",
        "pattern": lambda: f"must match the pattern {_short(expected)}",
        "enum": lambda: f"must be one of {_short(expected)}",
        "const": lambda: f"must be {_short(expected)}",
        "format": lambda: f"must be a valid {expected}",
        "multipleOf": lambda: f"must be a multiple of {expected}",
        "minProperties": lambda: f"must have at least {expected} properties",
        "maxProperties": lambda: f"must have at most {expected} properties",
    }
    describe = messages.get(validator)
    message = describe() if describe else f"does not satisfy the schema rule '{validator}'"
    return {"field": _path(path), "message": message, "validator": validator}
