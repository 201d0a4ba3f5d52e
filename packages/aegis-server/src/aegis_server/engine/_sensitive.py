"""Sensitive values: the keyed digests, and the map of a schema's `"x-sensitive": true` fields.

`keyed_digest` is the HMAC behind `params_hash`, the idempotency `request_hash` and every redacted value;
`sensitive_tree` compiles a parameter schema's marks into a map that `redact` (for the audit log) and
`sensitive_values` (to scrub error texts) walk. A mark the map cannot honour where it stands is refused
when the schema is compiled: x-sensitive is honoured everywhere, or the schema is refused.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from aegis_sdk._wire.canonical import canonical_json

from ._regex import compiled_regex
from .errors import SchemaCompileError, short_repr

__all__ = [
    "SENSITIVE_PREFIX",
    "SensitiveTree",
    "hash_value",
    "keyed_digest",
    "redact",
    "sensitive_tree",
    "sensitive_values",
    "value_key_from_secret",
]

_SENSITIVE_KEY = "x-sensitive"

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
                    f'not {short_repr(mark)}; write "{_SENSITIVE_KEY}": true'
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
                search = compiled_regex(str(pattern)).search
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


def sensitive_tree(schema: Any) -> SensitiveTree | None:
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


def redact(value: Any, tree: SensitiveTree, key: bytes) -> Any:
    """`value` with every sensitive part replaced by its keyed hash (`hash_value`)."""
    return _walk(value, tree, lambda item: hash_value(item, key))


def sensitive_values(value: Any, tree: SensitiveTree) -> list[Any]:
    """The raw sensitive parts of `value`, each whole (a string, a number, or an object or array as sent)."""
    found: list[Any] = []

    def collect(part: Any) -> Any:
        found.append(part)
        return part

    _walk(value, tree, collect)
    return found
