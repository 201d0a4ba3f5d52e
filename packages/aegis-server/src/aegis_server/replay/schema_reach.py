"""What a parameter schema asserts about the value at one path of the parameters, for replay.

A replayed proposal's sensitive values are keyed hashes: a candidate schema validating them validates the hash,
not the value. `assertions_at(schema, path)` lists the schema objects that apply to the value at `path` (each
without its annotations), reached through the keywords that pick a child by its name or index and apply
whatever the value is (`properties`, `patternProperties`, `additionalProperties`, `items`, `prefixItems`,
`additionalItems`, `allOf`, local `$ref`). It answers None when the validity of the parameters may depend on
that value in another way: an ancestor with `enum`/`const`/`contains`/`unevaluated*`, a branch of
`anyOf`/`oneOf`/`not`/`if`/`then`/`else`/`dependentSchemas` that reaches the path with an assertion (which branch
applies, or whether it passes, would be decided on the hash), or a keyword this walk does not know.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["assertions_at"]

_Path = tuple[str | int, ...]

_ANNOTATIONS = frozenset(
    {
        "x-sensitive",
        "title",
        "description",
        "$comment",
        "examples",
        "example",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$id",
        "$schema",
        "$anchor",
        "$defs",
        "definitions",
    }
)
# At an ancestor of the path, these look at the names or the number of the children (or, for uniqueItems,
# at equality, which a keyed hash of the canonical value keeps), never at the content of the value at the path.
_NEUTRAL_AT_ANCESTOR = frozenset(
    {
        "type",
        "required",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "dependentRequired",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minContains",
        "maxContains",
    }
)
_CHILD_KEYWORDS = frozenset(
    {"properties", "patternProperties", "additionalProperties", "items", "prefixItems", "additionalItems", "$ref"}
)
_BRANCHES_LISTS = ("anyOf", "oneOf")
_BRANCHES_SINGLE = ("not", "if", "then", "else")
_BRANCHES_MAPS = ("dependentSchemas", "dependencies")
_MAX_DEPTH = 64


def assertions_at(schema: Any, path: _Path) -> list[dict[str, Any]] | None:
    """The schema objects (annotations removed, empty ones left out) applying to the value at `path` of the
    parameters whatever that value is; None when the validity may depend on that value otherwise."""
    return _at(schema, path, schema, 0)


def _at(schema: Any, path: _Path, root: Any, depth: int) -> list[dict[str, Any]] | None:
    if isinstance(schema, bool):
        return []  # true and false do not look at the value
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    found: list[dict[str, Any]] = []
    if "$ref" in schema:
        target = _resolve(root, schema["$ref"])
        below = None if target is None else _at(target, path, root, depth + 1)
        if below is None:
            return None
        found.extend(below)
    if not path:
        own = {
            key: value
            for key, value in schema.items()
            if key not in _ANNOTATIONS and key != "$ref" and not key.startswith("x-")  # x-*: annotations
        }
        if _mentions_reference(own):
            return None  # a reference inside would be compared by its text, not by what it points to
        if own:
            found.append(own)
        return found
    for key, value in schema.items():
        if key in _ANNOTATIONS or key in _NEUTRAL_AT_ANCESTOR or key in _CHILD_KEYWORDS or key.startswith("x-"):
            continue
        if key == "allOf" and isinstance(value, list):
            for branch in value:
                below = _at(branch, path, root, depth + 1)
                if below is None:
                    return None
                found.extend(below)
        elif key in _BRANCHES_LISTS and isinstance(value, list):
            if any(_at(branch, path, root, depth + 1) != [] for branch in value):
                return None
        elif key in _BRANCHES_SINGLE:
            if _at(value, path, root, depth + 1) != []:
                return None
        elif key in _BRANCHES_MAPS and isinstance(value, dict):
            for branch in value.values():
                if not isinstance(branch, list) and _at(branch, path, root, depth + 1) != []:
                    return None
        else:
            return None  # enum, const, contains, unevaluated*, $dynamicRef, or a keyword not known here
    children = _children(schema, path[0])
    if children is None:
        return None
    for child in children:
        below = _at(child, path[1:], root, depth + 1)
        if below is None:
            return None
        found.extend(below)
    return found


def _mentions_reference(value: Any) -> bool:
    if isinstance(value, dict):
        return "$ref" in value or any(_mentions_reference(item) for item in value.values())
    if isinstance(value, list):
        return any(_mentions_reference(item) for item in value)
    return False


def _children(schema: dict[str, Any], step: str | int) -> list[Any] | None:
    """The subschemas that apply to the child `step` (a property name or an item index) of the value."""
    if isinstance(step, str):
        properties = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        if not isinstance(properties, dict) or not isinstance(patterns, dict):
            return None
        children = [properties[step]] if step in properties else []
        try:
            matched = [sub for pattern, sub in patterns.items() if re.search(pattern, step)]
        except re.error:
            return None
        children.extend(matched)
        if step not in properties and not matched and "additionalProperties" in schema:
            children.append(schema["additionalProperties"])
        return children
    prefix = schema.get("prefixItems")
    items = schema.get("items")
    if isinstance(prefix, list):
        if step < len(prefix):
            return [prefix[step]]
        return [items] if items is not None else []
    if isinstance(items, list):  # an older draft's tuple form
        if step < len(items):
            return [items[step]]
        return [schema["additionalItems"]] if "additionalItems" in schema else []
    return [items] if items is not None else []


def _resolve(root: Any, reference: Any) -> Any:
    """A local reference (`#`, `#/$defs/name`, `#/definitions/name`, any JSON pointer into the schema)."""
    if not isinstance(reference, str) or not reference.startswith("#"):
        return None
    node = root
    for part in reference[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node
