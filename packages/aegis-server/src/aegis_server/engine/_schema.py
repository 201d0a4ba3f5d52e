"""Parameter schemas: the one JSON Schema validator of a capability's parameters, and its value-free errors.

The `jsonschema` library is the authority: it checks the schema (draft 2020-12 unless `$schema` names
another draft), decides, and its errors are worded here without the value sent. `pattern` and
`patternProperties` are matched by RE2 (`_regex`), the dialect CEL's `matches()` uses, in linear time.
jsonschema walks a schema keyword by keyword (~10-100 µs per call), so a draft 2020-12 schema is also
compiled by `jsonschema-rs` (Rust, ~1 µs) with the same RE2 `pattern`: when it accepts, the parameters are
valid; anything else asks jsonschema, which decides and words the 422. Schemas where the two libraries
could disagree (`patternProperties`, whose keys jsonschema-rs would match in its own regex dialect;
`multipleOf` on floats) take only the jsonschema path. Sensitive fields are `_sensitive`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import jsonschema_rs
import re2
import referencing.exceptions

from ._refs import NO_RETRIEVAL, check_references
from ._regex import compiled_regex, regex_searcher
from ._sensitive import SensitiveTree, redact, sensitive_tree, sensitive_values
from .errors import ParameterSchemaError, SchemaCompileError, short_repr

__all__ = ["CompiledSchema", "compile_schema"]

_MAX_ERRORS = 20


@dataclass(frozen=True)
class CompiledSchema:
    """A capability's compiled validator and the map of its sensitive fields."""

    validator: Any  # a jsonschema Validator instance (the library is untyped for mypy)
    sensitive: SensitiveTree | None
    trivial: bool  # the schema accepts every object: skip validation
    accepts: Callable[[Any], bool] | None = None
    """The compiled fast check (see `_fast_check`): True only for values jsonschema accepts too; False means
    "ask jsonschema". None when the schema takes only the jsonschema path."""

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
            # best_match may pick an error from inside an anyOf/oneOf branch, which is not in the list itself.
            errors = [best, *(error for error in errors if error is not best)]
        details = [_describe(error) for error in errors[:_MAX_ERRORS]]
        raise ParameterSchemaError(capability, details[0]["field"], details)

    def redact(self, parameters: Mapping[str, Any], key: bytes) -> dict[str, Any]:
        """The parameters for the audit log: every sensitive field replaced by its keyed hash (`hash_value`)."""
        if self.sensitive is None:
            return dict(parameters)
        redacted = redact(parameters, self.sensitive, key)
        assert isinstance(redacted, dict)
        return redacted

    def sensitive_values(self, parameters: Mapping[str, Any]) -> list[Any]:
        """The raw values of the sensitive fields in `parameters` (to scrub them from error texts); each
        marked value whole (a string, a number, or an object or array as sent)."""
        if self.sensitive is None:
            return []
        return sensitive_values(parameters, self.sensitive)


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
            compiled_regex(pattern)
        except re2.error as exc:
            raise SchemaCompileError(
                f"parameter_schema has a pattern RE2 cannot run ({pattern!r}: {exc}); AEGIS matches patterns in "
                "linear time, without backreferences or lookarounds"
            ) from None
    trivial = dict(schema) in ({}, {"type": "object"})
    accepts = _fast_check(schema) if cls is jsonschema.Draft202012Validator and not trivial else None
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
        sensitive=sensitive_tree(schema),
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
        and compiled_regex(pattern).search(instance) is None
    ):
        yield jsonschema.exceptions.ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties_keyword(validator: Any, pattern_properties: Any, instance: Any, schema: Any) -> Any:
    """jsonschema's `patternProperties`, with RE2 matching the (caller-chosen) keys."""
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        search = compiled_regex(pattern).search
        for key, value in instance.items():
            if search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties_keyword(validator: Any, additional: Any, instance: Any, schema: Any) -> Any:
    """jsonschema's `additionalProperties`, with RE2 for the keys that `patternProperties` covers."""
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    searches = [compiled_regex(pattern).search for pattern in schema.get("patternProperties", {})]
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

# Keywords where jsonschema-rs could accept what jsonschema rejects: `patternProperties` (jsonschema-rs
# matches its keys, also for `additionalProperties`, in its own regex dialect, not RE2's) and
# `multipleOf` (jsonschema-rs accepts 0.07 as a multiple of 0.01, jsonschema's float division does not).
_JSONSCHEMA_ONLY = frozenset({"patternProperties", "multipleOf"})


class _Re2Pattern:
    """jsonschema-rs's `pattern` keyword, matched by RE2 as jsonschema's is (the library's dialect differs:
    its `\\s` also matches U+00A0, it has no `[[:alpha:]]` nor `\\Q...\\E`)."""

    __slots__ = ("_search",)

    def __init__(self, parent_schema: Any, value: Any, schema_path: Any) -> None:
        self._search = regex_searcher(value)

    def validate(self, instance: Any) -> None:
        if isinstance(instance, str) and not self._search(instance):
            raise ValueError("does not match the pattern")


def _uses(schema: Any, keywords: frozenset[str]) -> bool:
    """Whether any mapping in `schema` (nested ones included, data too: a conservative answer) has a key
    in `keywords`."""
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if not keywords.isdisjoint(item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _fast_check(schema: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    """jsonschema-rs's `is_valid` for a draft 2020-12 schema (formats not asserted, as jsonschema's are not;
    no retrieval), or None when the schema should take only the jsonschema path."""
    if _uses(schema, _JSONSCHEMA_ONLY):
        return None
    try:
        validator = jsonschema_rs.Draft202012Validator(
            dict(schema), validate_formats=False, offline=True, keywords={"pattern": _Re2Pattern}
        )
    except Exception:
        return None
    is_valid = validator.is_valid

    def accepts(value: Any) -> bool:
        try:
            return bool(is_valid(value))
        except Exception:
            return False

    return accepts


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
        "pattern": lambda: f"must match the pattern {short_repr(expected)}",
        "enum": lambda: f"must be one of {short_repr(expected)}",
        "const": lambda: f"must be {short_repr(expected)}",
        "format": lambda: f"must be a valid {expected}",
        "multipleOf": lambda: f"must be a multiple of {expected}",
        "minProperties": lambda: f"must have at least {expected} properties",
        "maxProperties": lambda: f"must have at most {expected} properties",
    }
    describe = messages.get(validator)
    message = describe() if describe else f"does not satisfy the schema rule '{validator}'"
    return {"field": _path(path), "message": message, "validator": validator}
