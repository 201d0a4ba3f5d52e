"""Parameter schemas: compiled validators, value-free error messages, and sensitive-field redaction."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import re2
import referencing.exceptions

from aegis_server.canonical import canonical_json

from ._cel import _compiled as _compiled_regex
from ._refs import NO_RETRIEVAL, check_references
from .errors import ParameterSchemaError

__all__ = [
    "SENSITIVE_PREFIX",
    "CompiledSchema",
    "SchemaCompileError",
    "compile_schema",
    "hash_value",
    "keyed_digest",
    "value_key_from_secret",
]

_MAX_ERRORS = 20
_SENSITIVE_KEY = "x-sensitive"
_ITEMS = "[]"

SensitiveTree = Mapping[str, Any]
"""`{property: True | subtree}`; the key `"[]"` stands for every item of an array."""


class SchemaCompileError(ValueError):
    """A `parameter_schema` is not a valid JSON Schema."""


SENSITIVE_PREFIX = "hmac-sha256:"
"""What a redacted sensitive value starts with: a keyed HMAC-SHA256, not a bare (reversible) hash."""

_VALUE_KEY_LABEL = b"aegis sensitive-values v1"


def value_key_from_secret(secret: bytes) -> bytes:
    """The key for sensitive values and parameter hashes, derived from the server secret.

    `HMAC-SHA256(secret, "aegis sensitive-values v1")`: the confirmation-token key is never used directly
    for another purpose, and the derived key does not reveal the secret.
    """
    return hmac.new(secret, _VALUE_KEY_LABEL, hashlib.sha256).digest()


def keyed_digest(key: bytes, data: bytes) -> str:
    """`HMAC-SHA256(key, data)` as 64 hex digits (the `params_hash` and idempotency `request_hash`)."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def hash_value(value: Any, key: bytes) -> str:
    """`"hmac-sha256:<hex>"` of the canonical JSON of `value` (sorted keys, compact, NFC strings), keyed.

    Without the key, a small value (a card number, a PIN) cannot be recovered by hashing guesses.
    """
    try:
        data = canonical_json(value)
    except (TypeError, ValueError):
        # Not JSON data (cannot come from a JSON request); still never store the value itself.
        data = repr(value).encode("utf-8", "replace")
    return SENSITIVE_PREFIX + keyed_digest(key, data)


@dataclass(frozen=True)
class CompiledSchema:
    """A capability's compiled validator and the map of its sensitive fields."""

    validator: Any  # a jsonschema Validator instance (the library is untyped for mypy)
    sensitive: SensitiveTree | None
    trivial: bool  # the schema accepts every object: skip validation
    accepts: Callable[[Any], bool] | None = None
    """A fast check compiled from the common keywords (see `_fast_check`): True only for values jsonschema
    accepts too; False means "ask jsonschema". None when the schema uses keywords it does not know."""

    def validate(self, capability: str, parameters: Mapping[str, Any]) -> None:
        """Raise `ParameterSchemaError` when `parameters` do not match."""
        if self.trivial or (self.accepts is not None and self.accepts(parameters)):
            return
        try:
            if self.validator.is_valid(parameters):
                return
            errors = sorted(self.validator.iter_errors(parameters), key=_error_order)
        except referencing.exceptions.Unresolvable:
            # Not reachable for a schema that passed `check_references`; fail closed if it ever is.
            raise ParameterSchemaError(
                capability,
                "(root)",
                [
                    {
                        "field": "(root)",
                        "message": "the capability's parameter_schema has a reference that cannot be resolved "
                        "inside the schema; fix the schema",
                        "validator": "$ref",
                    }
                ],
            ) from None
        except RecursionError:
            # Not reachable for a schema that passed `check_references` (it refuses reference loops), nor for
            # parameters within `max_json_depth`; fail closed with a 422, never a 500 and a traceback.
            raise ParameterSchemaError(
                capability,
                "(root)",
                [
                    {
                        "field": "(root)",
                        "message": "the parameters could not be checked against the capability's parameter_schema "
                        "(its references recurse without end, or the value nests too deeply); fix the schema or "
                        "send flatter parameters",
                        "validator": "$ref",
                    }
                ],
            ) from None
        best = jsonschema.exceptions.best_match(errors)
        if best is not None:
            errors.remove(best)
            errors.insert(0, best)
        details = [_describe(error) for error in errors[:_MAX_ERRORS]]
        raise ParameterSchemaError(capability, details[0]["field"], details)

    def redact(self, parameters: Mapping[str, Any], key: bytes) -> dict[str, Any]:
        """The parameters for the audit log: every sensitive field replaced by its keyed hash (`hash_value`)."""
        if self.sensitive is None:
            return dict(parameters)
        redacted = _redact(parameters, self.sensitive, key)
        assert isinstance(redacted, dict)
        return redacted


def compile_schema(schema: Mapping[str, Any]) -> CompiledSchema:
    """Check and compile a JSON Schema (draft 2020-12 unless `$schema` names another draft).

    References must stay inside the schema (`_refs.check_references`), and the validator is built with
    a registry that retrieves nothing: validation never does I/O.
    """
    reference_problem = check_references(schema)
    if reference_problem is not None:
        raise SchemaCompileError(f"parameter_schema: {reference_problem}")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        path = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        raise SchemaCompileError(f"parameter_schema is not a valid JSON Schema at {path}: {exc.message}") from None
    for pattern in _patterns(schema):
        try:
            _compiled_regex(pattern)
        except re2.error as exc:
            raise SchemaCompileError(
                f"parameter_schema has a pattern RE2 cannot run ({pattern!r}: {exc}); AEGIS matches patterns in "
                "linear time, without backreferences or lookarounds"
            ) from None
    trivial = dict(schema) in ({}, {"type": "object"})
    accepts = None
    if cls is jsonschema.Draft202012Validator:
        accepts = _fast_check({key: value for key, value in schema.items() if key != "$schema"})
    validator_cls = jsonschema.validators.extend(
        cls,
        {
            "pattern": _pattern_keyword,
            "patternProperties": _pattern_properties_keyword,
            "additionalProperties": _additional_properties_keyword,
        },
    )
    return CompiledSchema(
        validator=validator_cls(schema, registry=NO_RETRIEVAL),
        sensitive=_sensitive_tree(schema),
        trivial=trivial,
        accepts=accepts,
    )


def _patterns(schema: Any) -> list[str]:
    """Every `pattern` keyword value in a schema (nested schemas included)."""
    found: list[str] = []
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if isinstance(item.get("pattern"), str):
                found.append(item["pattern"])
            if isinstance(item.get("patternProperties"), Mapping):
                found.extend(str(key) for key in item["patternProperties"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _pattern_keyword(validator: Any, pattern: Any, instance: Any, schema: Any) -> Any:
    """jsonschema's `pattern`, run by RE2 (linear time: a pattern like `^(a+)+$` cannot stall a request)."""
    if (
        validator.is_type(instance, "string")
        and isinstance(pattern, str)
        and _compiled_regex(pattern).search(instance) is None
    ):
        yield jsonschema.exceptions.ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties_keyword(validator: Any, pattern_properties: Any, instance: Any, schema: Any) -> Any:
    """jsonschema's `patternProperties`, with RE2 matching the (caller-chosen) keys."""
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        search = _compiled_regex(pattern).search
        for key, value in instance.items():
            if search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties_keyword(validator: Any, additional: Any, instance: Any, schema: Any) -> Any:
    """jsonschema's `additionalProperties`, with RE2 for the keys that `patternProperties` covers."""
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    searches = [_compiled_regex(pattern).search for pattern in schema.get("patternProperties", {})]
    extras = [
        key for key in instance if key not in properties and not any(search(key) is not None for search in searches)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        names = ", ".join(repr(extra) for extra in sorted(extras, key=str))
        yield jsonschema.exceptions.ValidationError(f"Additional properties are not allowed ({names} unexpected)")


# -- the fast path --------------------------------------------------------------------------------
# jsonschema walks a schema keyword by keyword on every call (~10-20 µs for a small object). Most
# capability schemas use a handful of keywords, so those compile to plain Python closures that answer
# "valid" in ~1-2 µs. They are conservative: any keyword outside the list below disables the fast path
# for the whole schema, and any value they do not accept goes to jsonschema, which decides and words
# the error. Semantics follow draft 2020-12 as jsonschema implements it (an integer-valued float is an
# "integer", a bool is never a number, `pattern` searches, lengths count code points, each keyword
# applies only to values of its type).

_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "format", "$comment", _SENSITIVE_KEY})
_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}
_Check = Callable[[Any], bool]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fast_check(schema: Any) -> _Check | None:
    """A closure that returns True only when `schema` accepts the value, or None if it cannot say."""
    if schema is True:
        return lambda _value: True
    if not isinstance(schema, Mapping):
        return None
    checks: list[_Check] = []
    for keyword, expected in schema.items():
        if keyword in _ANNOTATIONS or keyword in ("properties", "additionalProperties"):
            continue
        check = _keyword_check(keyword, expected, schema)
        if check is None:
            return None
        checks.append(check)
    if "properties" in schema or "additionalProperties" in schema:
        check = _object_check(schema.get("properties", {}), schema.get("additionalProperties", True))
        if check is None:
            return None
        checks.append(check)
    if not checks:
        return lambda _value: True
    if len(checks) == 1:
        return checks[0]
    bound = tuple(checks)

    def check_all(value: Any) -> bool:
        for check in bound:  # noqa: SIM110 (a loop: no generator per call on the hot path)
            if not check(value):
                return False
        return True

    return check_all


def _keyword_check(keyword: str, expected: Any, schema: Mapping[str, Any]) -> _Check | None:
    if keyword == "type":
        names = [expected] if isinstance(expected, str) else expected
        if not isinstance(names, list) or not names or any(n not in _TYPE_CHECKS for n in names):
            return None
        if len(names) == 1:
            return _TYPE_CHECKS[names[0]]
        type_checks = tuple(_TYPE_CHECKS[n] for n in names)
        return lambda v: any(c(v) for c in type_checks)
    if keyword == "required":
        if not isinstance(expected, list) or not all(isinstance(n, str) for n in expected):
            return None
        names = tuple(expected)
        return lambda v: not isinstance(v, dict) or all(n in v for n in names)
    if keyword == "enum":
        if not isinstance(expected, list) or not expected or not all(isinstance(e, str) for e in expected):
            return None
        members = frozenset(expected)
        return lambda v: isinstance(v, str) and v in members
    if keyword in ("minLength", "maxLength", "minItems", "maxItems"):
        if not isinstance(expected, int) or isinstance(expected, bool):
            return None
        kind = str if keyword.endswith("Length") else list
        limit = expected
        if keyword.startswith("min"):
            return lambda v: not isinstance(v, kind) or len(v) >= limit
        return lambda v: not isinstance(v, kind) or len(v) <= limit
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if not _is_number(expected):
            return None
        bound = expected
        compare: Callable[[Any], bool] = {
            "minimum": lambda v: v >= bound,
            "maximum": lambda v: v <= bound,
            "exclusiveMinimum": lambda v: v > bound,
            "exclusiveMaximum": lambda v: v < bound,
        }[keyword]
        return lambda v: not _is_number(v) or compare(v)
    if keyword == "pattern":
        if not isinstance(expected, str):
            return None
        try:
            search = _compiled_regex(expected).search
        except re2.error:
            return None
        return lambda v: not isinstance(v, str) or search(v) is not None
    if keyword == "items":
        item_check = _fast_check(expected)
        if item_check is None:
            return None
        return lambda v: not isinstance(v, list) or all(item_check(item) for item in v)
    return None


def _object_check(properties: Any, additional: Any) -> _Check | None:
    if not isinstance(properties, Mapping) or additional not in (True, False):
        return None
    compiled: dict[str, _Check] = {}
    for name, sub in properties.items():
        check = _fast_check(sub)
        if check is None:
            return None
        compiled[str(name)] = check
    closed = additional is False

    def check_object(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for key, item in value.items():
            check = compiled.get(key)
            if check is None:
                if closed:
                    return False
            elif not check(item):
                return False
        return True

    return check_object


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


def _redact(value: Any, tree: SensitiveTree, key: bytes) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for name, item in value.items():
            rule = tree.get(name)
            if rule is True:
                out[name] = hash_value(item, key)
            elif isinstance(rule, Mapping):
                out[name] = _redact(item, rule, key)
            else:
                out[name] = item
        return out
    if isinstance(value, list):
        rule = tree.get(_ITEMS)
        if rule is True:
            return [hash_value(item, key) for item in value]
        if isinstance(rule, Mapping):
            return [_redact(item, rule, key) for item in value]
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
