"""The compiled fast check of parameter schemas (jsonschema-rs) never accepts what jsonschema rejects."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis_server.engine._schema import compile_schema

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 12},
            "database": {"type": "string", "enum": ["development", "staging", "production"]},
            "max_rows": {"type": "integer", "minimum": 1},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
            "card": {"type": "string", "pattern": "^[0-9]{3,5}$", "x-sensitive": True},
            "to": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "string", "pattern": "@"}},
            "flag": {"type": ["boolean", "null"]},
        },
        "required": ["amount"],
    },
    {"properties": {"n": {"minimum": 2, "exclusiveMaximum": 5.5}, "s": {"maxLength": 2}}},
    {
        "$defs": {"money": {"type": "number", "minimum": 0}},
        "properties": {
            "amount": {"$ref": "#/$defs/money"},
            "query": {"anyOf": [{"type": "string", "pattern": "^\\s*SELECT"}, {"type": "integer"}]},
            "to": {"type": "array", "uniqueItems": True, "items": {"const": "a@b"}},
        },
    },
]

values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 2000) | st.floats(-10, 2000, allow_nan=False) | st.text(max_size=14),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(["query", "database", "max_rows", "amount", "card", "to", "flag", "n", "s", "other"])
documents = st.dictionaries(keys, values, max_size=5) | st.dictionaries(
    keys,
    st.sampled_from(["SELECT 1", "staging", "", 3, 3.0, 0, 1000, 1000.5, True, None, ["a@b"], ["x", "y@z"], "1234"]),
    max_size=5,
)


@pytest.mark.parametrize("schema", SCHEMAS)
@settings(max_examples=300, deadline=None)
@given(document=documents)
def test_fast_check_agrees_with_jsonschema(schema: dict[str, Any], document: dict[str, Any]) -> None:
    compiled = compile_schema(schema)
    assert compiled.accepts is not None
    expected = jsonschema.Draft202012Validator(schema).is_valid(document)
    if compiled.accepts(document):
        assert expected, f"fast path accepted what jsonschema rejects: {document!r}"


def test_schemas_the_libraries_could_disagree_on_take_only_the_jsonschema_path() -> None:
    assert compile_schema({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}).accepts is None
    assert (
        compile_schema({"patternProperties": {"^a": {"type": "integer"}}, "additionalProperties": False}).accepts
        is None
    )
    assert compile_schema({"properties": {"n": {"multipleOf": 0.01}}}).accepts is None
    # Applicators and local references take the fast path too (they agree: see the property test above).
    assert compile_schema({"type": "object", "anyOf": [{"required": ["a"]}]}).accepts is not None
    with_ref = {"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {}}}
    assert compile_schema(with_ref).accepts is not None


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        (r"^\s+$", "\u00a0", False),  # RE2's \s is ASCII; jsonschema-rs's own dialect would say yes
        (r"^[[:alpha:]]+$", "abc", True),  # RE2 has POSIX classes
        (r"^\d+$", "\u0663", False),  # \d is ASCII
        (r"(?i)^drop$", "DROP", True),
    ],
)
def test_the_fast_path_matches_patterns_as_re2(pattern: str, text: str, matches: bool) -> None:
    compiled = compile_schema({"properties": {"q": {"type": "string", "pattern": pattern}}})
    assert compiled.accepts is not None
    assert compiled.accepts({"q": text}) is matches
    assert jsonschema.Draft202012Validator({}).is_valid({"q": text})  # (the value itself is JSON)


def test_valid_values_take_the_fast_path() -> None:
    compiled = compile_schema(SCHEMAS[0])
    assert compiled.accepts is not None
    assert compiled.accepts({"query": "SELECT 1", "database": "staging", "max_rows": 10.0})
    assert not compiled.accepts({"query": "SELECT 1", "extra": 1})
