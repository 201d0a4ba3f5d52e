"""Schema references stay inside the schema: the static check, and a registry that retrieves nothing.

A JSON Schema can point elsewhere: `"$ref": "http://host/x.json"`, `"$ref": "file:///etc/passwd"`, a
relative `"$ref": "other.json"` resolved against an `$id`, `$dynamicRef`/`$recursiveRef`, or an
unknown `$schema` dialect. jsonschema would fetch such a document synchronously, on the event loop, the
first time a proposal is validated: a server-side request forgery, a file read, and a stalled server.

`check_references` refuses all of that when a capability is compiled (saved through the API, or loaded
from a policy file): the only references allowed are local JSON pointers (`#` and `#/...`, e.g.
`#/$defs/money`) that point at something in the schema itself, and `$schema` may only name a draft
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


def _resolves(root: Any, fragment: str) -> bool:
    """Does the JSON pointer `fragment` (after `#`, percent-encoded) point at something in `root`?"""
    if fragment == "":
        return True
    if not fragment.startswith("/"):
        return False
    node = root
    for raw in fragment[1:].split("/"):
        token = urllib.parse.unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping):
            if token not in node:
                return False
            node = node[token]
        elif isinstance(node, list):
            if not token.isdigit() or int(token) >= len(node) or (len(token) > 1 and token[0] == "0"):
                return False
            node = node[int(token)]
        else:
            return False
    return True


def check_references(schema: Any) -> str | None:
    """None when every reference of `schema` stays inside it, else what is wrong and where.

    Refused: any `$ref`/`$dynamicRef`/`$recursiveRef` that is not `#` or `#/<JSON pointer>`, a local
    pointer that points at nothing, any `$id` (it changes what relative references resolve against,
    and names a document that could be retrieved), and a `$schema` that is not a known draft.
    """
    root_dialect = schema.get("$schema") if isinstance(schema, Mapping) else None
    # `id` is the identifier keyword of drafts 3 and 4 (`$id` from draft 6 on); elsewhere it is an
    # unknown keyword without effect.
    base_keywords = (
        ("$id", "id")
        if isinstance(root_dialect, str) and ("draft-03" in root_dialect or "draft-04" in root_dialect)
        else ("$id",)
    )
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
            if not _resolves(schema, value[1:]):
                return (
                    f"{keyword} at {where} ({_quoted(value)}) points at nothing in the schema; "
                    "fix the JSON pointer (e.g. '#/$defs/name')"
                )
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
    return None


def _quoted(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
