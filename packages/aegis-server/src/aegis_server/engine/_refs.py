"""Schema references stay inside the schema: the static check, and a registry that retrieves nothing.

A JSON Schema can point elsewhere: `"$ref": "http://host/x.json"`, `"$ref": "file:///etc/passwd"`, a
relative `"$ref": "other.json"` resolved against an `$id`, `$dynamicRef`/`$recursiveRef`, or an
unknown `$schema` dialect. jsonschema would fetch such a document synchronously, on the event loop, the
first time a proposal is validated: a server-side request forgery, a file read, and a stalled server.

`check_references` refuses all of that when a capability is compiled (saved through the API, or loaded
from a policy file): the only references allowed are local JSON pointers (`#` and `#/...`, e.g.
`#/$defs/money`) that point at a subschema of the schema itself (never into `enum`, `const`, `default`,
`examples` or other data), no references that loop without consuming input (jsonschema would recurse
until `RecursionError`), and `$schema` may only name a draft
jsonschema knows. `NO_RETRIEVAL` is the registry every validator is built with: its `retrieve` refuses
every URI, so even a reference the check missed cannot make a validator do I/O.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

import jsonschema.validators
import referencing
import referencing.exceptions
import referencing.jsonschema

__all__ = ["NO_RETRIEVAL", "check_references"]

_REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# Keywords whose value is data, not a schema: a `$ref` inside an `enum` member is a string, not a reference.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "example"})
# Keywords whose value maps arbitrary names (property names, definition names) to schemas.
_NAMED_SCHEMAS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
)
# Keywords whose value is a schema, and those whose value is a list of schemas (`items` is either).
_SUBSCHEMA = frozenset(
    {
        "additionalItems",
        "additionalProperties",
        "contains",
        "contentSchema",
        "else",
        "if",
        "items",
        "not",
        "propertyNames",
        "then",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
_SUBSCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
# Keywords applying their schemas to the same instance: a loop of references through these alone never
# consumes any input, and jsonschema recurses until Python's RecursionError.
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_NAMED = ("dependentSchemas", "dependencies")


def _known_dialects() -> frozenset[str]:
    uris: set[str] = set()
    for name in dir(jsonschema.validators):
        cls = getattr(jsonschema.validators, name)
        meta = getattr(cls, "META_SCHEMA", None)
        if isinstance(meta, Mapping) and isinstance(meta.get("$schema"), str):
            uri = meta["$schema"]
            uris.update({uri, uri.rstrip("#"), uri.rstrip("#") + "#"})
    return frozenset(uris)


KNOWN_DIALECTS: frozenset[str] = _known_dialects()
"""The `$schema` values accepted: the metaschema URIs of the drafts jsonschema implements (with or
without the trailing `#`)."""


def _refuse(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(retrieve=_refuse)  # type: ignore[call-arg]
"""A registry that retrieves nothing (no network, no files). jsonschema combines it with the bundled
metaschemas, so the drafts themselves still resolve."""


def _pointer(path: list[str | int]) -> str:
    if not path:
        return "(root)"
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in path)


Location = tuple[str, ...]


def _resolve(root: Any, fragment: str) -> Location | str:
    """Where the JSON pointer `fragment` (after `#`, percent-encoded) leads in `root`, as its decoded tokens;
    or what is wrong: it points at nothing, or at something that is not a subschema."""
    if fragment == "":
        return ()
    if not fragment.startswith("/"):
        return "points at nothing in the schema"
    node, state = root, "schema"  # what `node` is: a schema, a map of named schemas, a list of schemas
    tokens: list[str] = []
    for raw in fragment[1:].split("/"):
        token = urllib.parse.unquote(raw).replace("~1", "/").replace("~0", "~")
        tokens.append(token)
        if isinstance(node, Mapping):
            if token not in node:
                return "points at nothing in the schema"
            value = node[token]
        elif isinstance(node, list):
            if not token.isdigit() or int(token) >= len(node) or (len(token) > 1 and token[0] == "0"):
                return "points at nothing in the schema"
            value = node[int(token)]
        else:
            return "points at nothing in the schema"
        if state == "schema":
            if not isinstance(node, Mapping):
                return "points at nothing in the schema"
            if token in _NAMED_SCHEMAS and isinstance(value, Mapping):
                state = "named"
            elif token in _SUBSCHEMA_LISTS and isinstance(value, list):
                state = "list"
            elif token in _SUBSCHEMA:
                state = "schema"
            else:  # enum, const, default, examples, or a keyword jsonschema does not apply: data, not a schema
                return f"passes through {_quoted(token)}, which holds data, not schemas"
        else:
            state = "schema"
        node = value
    if state != "schema" or not isinstance(node, Mapping | bool):
        return "does not point at a subschema"
    return tuple(tokens)


def _at(root: Any, location: Location) -> Any:
    node = root
    for token in location:
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def _in_place(root: Any, location: Location) -> list[Location]:
    """The schemas applied to the same instance as the one at `location`: its reference and in-place keywords."""
    node = _at(root, location)
    if not isinstance(node, Mapping):
        return []
    found: list[Location] = []
    for keyword in _REFERENCE_KEYWORDS:
        value = node.get(keyword)
        if isinstance(value, str) and (value == "#" or value.startswith("#/")):
            target = _resolve(root, value[1:])
            if isinstance(target, tuple):
                found.append(target)
    for keyword in _IN_PLACE_LISTS:
        if isinstance(node.get(keyword), list):
            found.extend((*location, keyword, str(i)) for i in range(len(node[keyword])))
    for keyword in _IN_PLACE_ONE:
        if isinstance(node.get(keyword), Mapping):
            found.append((*location, keyword))
    for keyword in _IN_PLACE_NAMED:
        if isinstance(node.get(keyword), Mapping):
            found.extend((*location, keyword, name) for name, sub in node[keyword].items() if isinstance(sub, Mapping))
    return found


def _reference_loop(root: Any, starts: list[Location]) -> list[Location] | None:
    """A loop of references that consumes no input (each step a `$ref` or an in-place keyword), if any."""
    done: set[Location] = set()
    for start in starts:
        if start in done:
            continue
        path: list[Location] = [start]
        on_path = {start}
        stack = [iter(_in_place(root, start))]
        while stack:
            following = next(stack[-1], None)
            if following is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if following in on_path:
                return [*path[path.index(following) :], following]
            if following in done:
                continue
            path.append(following)
            on_path.add(following)
            stack.append(iter(_in_place(root, following)))
    return None


def check_references(schema: Any) -> str | None:
    """None when every reference of `schema` stays inside it, else what is wrong and where.

    Refused: any `$ref`/`$dynamicRef`/`$recursiveRef` that is not `#` or `#/<JSON pointer>`, a local
    pointer that points at nothing or at something other than a subschema (through `enum`, `const`,
    `default`, `examples` or a keyword that holds no schemas), references that loop back to where they
    started through `$ref` and in-place keywords only (`allOf`, `anyOf`, `oneOf`, `not`, `if`...: a loop
    that consumes no input, on which jsonschema recurses until `RecursionError`), any `$id` (it changes
    what relative references resolve against, and names a document that could be retrieved), and a
    `$schema` that is not a known draft.
    """
    root_dialect = schema.get("$schema") if isinstance(schema, Mapping) else None
    # `id` is the identifier keyword of drafts 3 and 4 (`$id` from draft 6 on); elsewhere it is an
    # unknown keyword without effect.
    base_keywords = (
        ("$id", "id")
        if isinstance(root_dialect, str) and ("draft-03" in root_dialect or "draft-04" in root_dialect)
        else ("$id",)
    )
    references: list[Location] = []  # where the local references are, to look for loops once all resolve
    stack: list[tuple[Any, list[str | int]]] = [(schema, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, list):
            stack.extend((item, [*path, index]) for index, item in enumerate(node))
            continue
        if not isinstance(node, Mapping):
            continue
        for keyword in _REFERENCE_KEYWORDS:
            if keyword not in node:
                continue
            value = node[keyword]
            where = _pointer([*path, keyword])
            if not isinstance(value, str):
                return f"{keyword} at {where} must be a string"
            if not (value == "#" or value.startswith("#/")):
                return (
                    f"{keyword} at {where} points outside the schema ({_quoted(value)}); only local references "
                    "are allowed: '#' or a JSON pointer such as '#/$defs/name'. Copy the referenced schema into "
                    "$defs and refer to it there"
                )
            target = _resolve(schema, value[1:])
            if isinstance(target, str):
                return (
                    f"{keyword} at {where} ({_quoted(value)}) {target}; a reference must point at a subschema "
                    "(under properties, $defs, items, allOf, ...), never into enum, const, default or examples: "
                    "fix the JSON pointer (e.g. '#/$defs/name')"
                )
            references.append(tuple(str(part) for part in path))
        for keyword in base_keywords:
            if isinstance(node.get(keyword), str):
                return (
                    f"{keyword} at {_pointer([*path, keyword])} is not allowed: a schema identifier changes "
                    "what references resolve against and names a document that could be fetched; remove it "
                    "and use local references ('#/$defs/name')"
                )
        dialect = node.get("$schema")
        if dialect is not None and (not isinstance(dialect, str) or dialect not in KNOWN_DIALECTS):
            return (
                f"$schema at {_pointer([*path, '$schema'])} names an unknown dialect ({_quoted(dialect)}); "
                "remove it (draft 2020-12 is the default) or name a JSON Schema draft, e.g. "
                "'https://json-schema.org/draft/2020-12/schema'"
            )
        for key, value in node.items():
            if key in _DATA_KEYWORDS:
                continue
            if key in _NAMED_SCHEMAS and isinstance(value, Mapping):
                stack.extend((sub, [*path, key, name]) for name, sub in value.items())
            elif isinstance(value, Mapping | list):
                stack.append((value, [*path, key]))
    loop = _reference_loop(schema, sorted(references))
    if loop is not None:
        steps = " -> ".join(_pointer(list(location)) for location in loop)
        return (
            f"the references loop without consuming any input ({steps}): validating would recurse forever; "
            "break the loop (a recursive schema must go through properties, items or another keyword that "
            "descends into the value)"
        )
    return None


def _quoted(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
