"""Parameter schemas: compiled validators, value-free error messages, and sensitive-field redaction."""

from __future__ import annotations

import functools
import hashlib
import hmac
import urllib.parse
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
    digest = _prepared_hmac(key).copy()  # as the audit chain's linker: the key's state prepared once
    digest.update(data)
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _prepared_hmac(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


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

    def sensitive_values(self, parameters: Mapping[str, Any]) -> list[Any]:
        """The raw values of the sensitive fields in `parameters` (to scrub them from error texts); each
        marked value whole (a string, a number, or an object or array as sent)."""
        if self.sensitive is None:
            return []
        found: list[Any] = []

        def collect(value: Any) -> Any:
            found.append(value)
            return value

        _walk(parameters, self.sensitive, collect)
        return found


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


# -- sensitive fields ------------------------------------------------------------------------------
# `"x-sensitive": true` marks a subschema: every value it validates is stored as a keyed hash. The mark is
# honoured under the keywords that say which value a subschema validates: `properties`,
# `patternProperties`, `additionalProperties`, `items` (a schema or, in older drafts, a list),
# `prefixItems`, `additionalItems`, the in-place applicators `allOf`/`anyOf`/`oneOf`, `if`/`then`/`else`,
# `dependentSchemas` (and draft-7 `dependencies`), and local references (`$ref` into `$defs`). Where
# branches disagree (`anyOf` with one marked branch), the value is redacted: a branch that marks it is
# enough. Everywhere else (`not`, `contains`, `propertyNames`, `unevaluated*`, an unreferenced `$defs`
# entry, a recursive reference, a keyword AEGIS does not know) the mark could not be honoured, so the
# schema is refused when it is compiled, naming the JSON path. The mark must be a JSON boolean.

_SENSITIVE_KEYWORDS = (
    "properties, patternProperties, additionalProperties, items, prefixItems, additionalItems, allOf, anyOf, "
    "oneOf, if/then/else, dependentSchemas, and local $ref (e.g. to '#/$defs/name')"
)
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_SINGLE = ("if", "then", "else")
_IN_PLACE_MAPS = ("dependentSchemas", "dependencies")
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
_SCHEMA_SINGLE = (
    "additionalProperties",
    "items",
    "additionalItems",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contentSchema",
)
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
_DATA = frozenset({"enum", "const", "default", "examples", "example"})

_Path = tuple[str | int, ...]


class _Facet:
    """What one schema object says about the children of the value it validates (only marked parts kept)."""

    __slots__ = ("additional", "names", "patterns", "prefix", "properties", "rest", "searches")

    def __init__(
        self,
        properties: dict[str, _Node],
        names: frozenset[str],
        patterns: tuple[tuple[Callable[[str], Any], _Node], ...],
        searches: tuple[Callable[[str], Any], ...],
        additional: _Node | None,
        prefix: tuple[_Node | None, ...],
        rest: _Node | None,
    ) -> None:
        self.properties = properties  # marked properties
        self.names = names  # every property name of the schema object (for additionalProperties)
        self.patterns = patterns  # marked patternProperties
        self.searches = searches  # every patternProperties pattern (for additionalProperties)
        self.additional = additional
        self.prefix = prefix  # prefixItems (or a draft-4..2019 `items` list)
        self.rest = rest  # the items after the prefix

    def key_children(self, name: str, found: list[_Node]) -> None:
        child = self.properties.get(name)
        if child is not None:
            found.append(child)
        for search, node in self.patterns:
            if search(name) is not None:
                found.append(node)
        if (
            self.additional is not None
            and name not in self.names
            and not any(search(name) is not None for search in self.searches)
        ):
            found.append(self.additional)

    def index_child(self, index: int) -> _Node | None:
        return self.prefix[index] if index < len(self.prefix) else self.rest


class _Node:
    """The sensitive part of a (sub)schema: `whole` (the value itself), or what its facets mark below."""

    __slots__ = ("facets", "simple", "whole")

    def __init__(self, whole: bool, facets: tuple[_Facet, ...] = ()) -> None:
        self.whole = whole
        self.facets = facets
        # The common shape (one schema object marking only named properties): a plain lookup per key.
        only = facets[0] if len(facets) == 1 else None
        self.simple: dict[str, _Node] | None = (
            only.properties if only is not None and not only.patterns and only.additional is None else None
        )


_WHOLE = _Node(True)

SensitiveTree = _Node
"""The compiled map of a schema's sensitive values (see `_SensitivePlan`)."""


def _merge(nodes: list[_Node]) -> _Node | None:
    if not nodes:
        return None
    if len(nodes) == 1:
        return nodes[0]
    if any(node.whole for node in nodes):
        return _WHOLE
    return _Node(False, tuple(facet for node in nodes for facet in node.facets))


def _pointer(path: _Path) -> str:
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _marks(schema: Any) -> list[_Path]:
    """The JSON paths of every `"x-sensitive": true` in schema positions; refuses non-boolean marks and marks
    where no schema is (under a keyword AEGIS does not know)."""
    found: list[_Path] = []
    stack: list[tuple[Any, _Path, bool]] = [(schema, (), True)]
    while stack:
        node, path, is_schema = stack.pop()
        if isinstance(node, list):
            stack.extend((item, (*path, index), is_schema) for index, item in enumerate(node))
            continue
        if not isinstance(node, Mapping):
            continue
        if _SENSITIVE_KEY in node:
            where = _pointer((*path, _SENSITIVE_KEY))
            mark = node[_SENSITIVE_KEY]
            if not isinstance(mark, bool):
                raise SchemaCompileError(
                    f"parameter_schema: {_SENSITIVE_KEY} at {where} must be true or false (a JSON boolean), "
                    f'not {_short(mark)}; write "{_SENSITIVE_KEY}": true'
                )
            if not is_schema:
                raise SchemaCompileError(
                    f"parameter_schema: {_SENSITIVE_KEY} at {where} is not in a schema, so nothing would be "
                    f"redacted; put it on the schema of the value to redact (under {_SENSITIVE_KEYWORDS})"
                )
            if mark:
                found.append(path)
        if not is_schema:
            stack.extend((value, (*path, key), False) for key, value in node.items())
            continue
        for key, value in node.items():
            if key in _DATA or key == _SENSITIVE_KEY:
                continue
            if key in _SCHEMA_MAPS and isinstance(value, Mapping):
                stack.extend((sub, (*path, key, name), True) for name, sub in value.items())
            elif key in _SCHEMA_SINGLE or key in _SCHEMA_LISTS:
                stack.append((value, (*path, key), True))
            else:  # an unknown keyword's value is not a schema
                stack.append((value, (*path, key), False))
    return found


class _SensitivePlan:
    """Builds the `_Node` of a schema, recording which marks it honoured."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.honoured: set[_Path] = set()
        self.done: dict[str, _Node | None] = {}
        self.active: list[str] = []
        self.recursive: set[str] = set()

    def build(self, schema: Any, path: _Path) -> _Node | None:
        if not isinstance(schema, Mapping):
            return None
        nodes: list[_Node] = []
        whole = schema.get(_SENSITIVE_KEY) is True
        if whole:
            self.honoured.add(path)
        facet = self._facet(schema, path)
        if facet is not None:
            nodes.append(_Node(False, (facet,)))
        for keyword in _IN_PLACE_LISTS:
            branches = schema.get(keyword)
            if isinstance(branches, list):
                for index, branch in enumerate(branches):
                    self._add(nodes, self.build(branch, (*path, keyword, index)))
        for keyword in _IN_PLACE_SINGLE:
            self._add(nodes, self.build(schema.get(keyword), (*path, keyword)))
        for keyword in _IN_PLACE_MAPS:
            named = schema.get(keyword)
            if isinstance(named, Mapping):
                for name, sub in named.items():
                    self._add(nodes, self.build(sub, (*path, keyword, name)))
        for keyword in _REF_KEYWORDS:
            reference = schema.get(keyword)
            if isinstance(reference, str) and reference.startswith("#"):
                self._add(nodes, self._reference(reference))
        if whole:
            return _WHOLE
        return _merge(nodes)

    @staticmethod
    def _add(nodes: list[_Node], node: _Node | None) -> None:
        if node is not None:
            nodes.append(node)

    def _facet(self, schema: Mapping[str, Any], path: _Path) -> _Facet | None:
        properties: dict[str, _Node] = {}
        names: frozenset[str] = frozenset()
        declared = schema.get("properties")
        if isinstance(declared, Mapping):
            names = frozenset(str(name) for name in declared)
            for name, sub in declared.items():
                self._put(properties, str(name), self.build(sub, (*path, "properties", name)))
        patterns: list[tuple[Callable[[str], Any], _Node]] = []
        searches: list[Callable[[str], Any]] = []
        pattern_schemas = schema.get("patternProperties")
        if isinstance(pattern_schemas, Mapping):
            for pattern, sub in pattern_schemas.items():
                search = _compiled_regex(str(pattern)).search
                searches.append(search)
                node = self.build(sub, (*path, "patternProperties", pattern))
                if node is not None:
                    patterns.append((search, node))
        additional = self.build(schema.get("additionalProperties"), (*path, "additionalProperties"))
        items = schema.get("items")
        prefix_schemas = schema.get("prefixItems")
        prefix_key = "prefixItems"
        if not isinstance(prefix_schemas, list) and isinstance(items, list):
            prefix_schemas, prefix_key = items, "items"
        prefix: tuple[_Node | None, ...] = ()
        if isinstance(prefix_schemas, list):
            prefix = tuple(self.build(sub, (*path, prefix_key, index)) for index, sub in enumerate(prefix_schemas))
        if isinstance(items, Mapping):
            rest = self.build(items, (*path, "items"))
        else:
            rest = self.build(schema.get("additionalItems"), (*path, "additionalItems"))
        if all(node is None for node in prefix):
            prefix = ()
        if not (properties or patterns or additional or prefix or rest):
            return None
        return _Facet(properties, names, tuple(patterns), tuple(searches), additional, prefix, rest)

    @staticmethod
    def _put(properties: dict[str, _Node], name: str, node: _Node | None) -> None:
        if node is not None:
            properties[name] = node

    def _reference(self, reference: str) -> _Node | None:
        if reference in self.done:
            return self.done[reference]
        if reference in self.active:
            self.recursive.add(reference)
            return None
        target: Any = self.root
        path: list[str | int] = []
        for raw in reference[1:].split("/")[1:] if reference != "#" else []:
            token = urllib.parse.unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(target, Mapping) and token in target:
                target = target[token]
                path.append(token)
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
                path.append(int(token))
            else:  # `check_references` refuses this first; nothing to honour here
                return None
        self.active.append(reference)
        try:
            node = self.build(target, tuple(path))
        finally:
            self.active.pop()
        if node is not None and reference in self.recursive:
            raise SchemaCompileError(
                f"parameter_schema: {_SENSITIVE_KEY} under the recursive reference {reference!r} is not supported "
                "(the redactor cannot follow a schema into itself); mark the field in a schema that does not "
                "refer to itself"
            )
        self.done[reference] = node
        return node


def _sensitive_tree(schema: Any) -> SensitiveTree | None:
    """The compiled sensitive map of `schema`, or None when nothing is marked. Raises `SchemaCompileError`
    for a mark that is not a boolean or that the redactor could not honour where it stands."""
    marks = _marks(schema)
    if not marks:
        return None
    plan = _SensitivePlan(schema)
    try:
        node = plan.build(schema, ())
    except RecursionError:
        raise SchemaCompileError(
            "parameter_schema nests too deeply to map its x-sensitive fields; flatten it (use $defs)"
        ) from None
    for mark in sorted(marks, key=lambda path: [str(part) for part in path]):
        if mark not in plan.honoured:
            raise SchemaCompileError(
                f"parameter_schema: {_SENSITIVE_KEY} at {_pointer((*mark, _SENSITIVE_KEY))} cannot be honoured "
                f"there, so the value would be stored in clear; AEGIS redacts values marked under "
                f"{_SENSITIVE_KEYWORDS}, and not under not, contains, propertyNames, unevaluatedProperties, "
                "unevaluatedItems or an unreferenced $defs entry; move the mark"
            )
    return node


def _walk(value: Any, node: _Node, replace: Callable[[Any], Any]) -> Any:
    """`value` with every sensitive part replaced by `replace(part)`."""
    if node.whole:
        return replace(value)
    if isinstance(value, Mapping):
        simple = node.simple
        if simple is not None:
            return {
                name: item if (child := simple.get(name)) is None else _walk(item, child, replace)
                for name, item in value.items()
            }
        out: dict[str, Any] = {}
        found: list[_Node] = []
        for name, item in value.items():
            found.clear()
            for facet in node.facets:
                facet.key_children(name, found)
            child = _merge(found)
            out[name] = item if child is None else _walk(item, child, replace)
        return out
    if isinstance(value, list):
        if len(node.facets) == 1:
            facet = node.facets[0]
            return [
                item if (child := facet.index_child(index)) is None else _walk(item, child, replace)
                for index, item in enumerate(value)
            ]
        items: list[Any] = []
        for index, item in enumerate(value):
            children = [c for c in (facet.index_child(index) for facet in node.facets) if c is not None]
            child = _merge(children)
            items.append(item if child is None else _walk(item, child, replace))
        return items
    return value


def _redact(value: Any, tree: SensitiveTree, key: bytes) -> Any:
    return _walk(value, tree, lambda item: hash_value(item, key))


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
