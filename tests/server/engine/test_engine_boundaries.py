"""Unit tests of the engine's trust boundaries (issue 13): the schema reference check, the no-retrieval
registry, the condition cost estimator and budget, and the keyed hashes of sensitive values."""

from __future__ import annotations

import hashlib
import hmac
import socket
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing.exceptions
from engine_support import cap, compile_set, decide, policy, proposal, rule

from aegis_sdk._wire.canonical import canonical_json
from aegis_server.engine import (
    EngineConfig,
    ParameterSchemaError,
    PolicySetError,
    hash_value,
    keyed_digest,
    value_key_from_secret,
)
from aegis_server.engine._cel import compile_condition
from aegis_server.engine._cost import MAX_INDEPENDENT_NESTING, MAX_UNESTIMATED_CONCATENATIONS, compile_cost
from aegis_server.engine._refs import NO_RETRIEVAL, check_references
from aegis_server.engine._schema import CompiledSchema, compile_schema
from aegis_server.engine.errors import SchemaCompileError
from aegis_server.policies.files import load_policy_set

# -- schema references -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"properties": {"a": {"$ref": "http://127.0.0.1:9/x.json"}}}, "/properties/a/$ref"),
        ({"properties": {"a": {"$ref": "https://example.com/s#/x"}}}, "/properties/a/$ref"),
        ({"$ref": "file:///etc/passwd"}, "/$ref"),
        ({"items": {"$ref": "other.json"}}, "/items/$ref"),
        ({"allOf": [{"$ref": "/absolute/path"}]}, "/allOf/0/$ref"),
        ({"$dynamicRef": "http://example.com/meta#meta"}, "/$dynamicRef"),
        ({"$recursiveRef": "other.json"}, "/$recursiveRef"),
        ({"$defs": {"m": {"$ref": "urn:x:y"}}}, "/$defs/m/$ref"),
        ({"properties": {"a/b": {"$ref": "#anchor"}}}, "/properties/a~1b/$ref"),
    ],
)
def test_references_outside_the_schema_are_refused_naming_their_path(schema: dict[str, Any], where: str) -> None:
    problem = check_references(schema)
    assert problem is not None and where in problem and "only local references" in problem
    with pytest.raises(SchemaCompileError, match="only local references"):
        compile_schema(schema)


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"$id": "http://example.com/s", "properties": {"a": {"$ref": "#/$defs/a"}}, "$defs": {"a": {}}}, "$id at"),
        ({"properties": {"a": {"$id": "b.json"}}}, "$id at /properties/a/$id"),
        ({"$schema": "http://example.com/my-dialect"}, "unknown dialect"),
        ({"$schema": "http://json-schema.org/draft-04/schema#", "id": "http://x/y"}, "id at /id"),
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "points at nothing"),
        ({"properties": {"a": {"$ref": 3}}}, "must be a string"),
    ],
)
def test_identifiers_unknown_dialects_and_dangling_pointers_are_refused(schema: dict[str, Any], fragment: str) -> None:
    problem = check_references(schema)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"m": {"type": "number"}}, "properties": {"a": {"$ref": "#/$defs/m"}}},
        {"definitions": {"m": {"type": "number"}}, "properties": {"a": {"$ref": "#/definitions/m"}}},
        {"properties": {"tree": {"type": "object", "properties": {"child": {"$ref": "#/properties/tree"}}}}},
        {"properties": {"self": {"$ref": "#"}}},
        {"$defs": {"a b%": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/a%20b%25"}}},
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
        # Data and names are not references: an enum member, a const, a property called "$ref" or "$id".
        {"enum": [{"$ref": "http://example.com"}], "const": {"$id": "http://example.com"}},
        {"properties": {"$ref": {"type": "string"}, "$id": {"type": "string"}, "id": {"type": "string"}}},
    ],
)
def test_local_references_data_and_names_are_accepted(schema: dict[str, Any]) -> None:
    assert check_references(schema) is None
    compile_schema(schema)


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        # Red team 2, finding H: a local pointer into schema data saved, and every proposal was then a 422.
        ({"enum": [{"$ref": "http://example.com/x"}], "properties": {"a": {"$ref": "#/enum/0"}}}, "'enum'"),
        ({"const": {"$ref": "http://example.com/x"}, "properties": {"a": {"$ref": "#/const"}}}, "'const'"),
        ({"default": {"x": {}}, "properties": {"a": {"$ref": "#/default/x"}}}, "'default'"),
        ({"examples": [{}], "properties": {"a": {"$ref": "#/examples/0"}}}, "'examples'"),
        ({"x-common": {"type": "string"}, "properties": {"a": {"$ref": "#/x-common"}}}, "'x-common'"),
        ({"properties": {"a": {"type": "string"}, "b": {"$ref": "#/properties/a/type"}}}, "'type'"),
        ({"properties": {"a": {"type": "string"}, "b": {"$ref": "#/properties"}}}, "does not point at a subschema"),
    ],
)
def test_a_reference_must_point_at_a_subschema(schema: dict[str, Any], fragment: str) -> None:
    problem = check_references(schema)
    assert problem is not None and fragment in problem and "must point at a subschema" in problem
    with pytest.raises(SchemaCompileError, match="must point at a subschema"):
        compile_schema(schema)


@pytest.mark.parametrize(
    "schema",
    [
        # Red team 2, finding I: each saved, and every proposal was then a 500 (RecursionError).
        {"properties": {"a": {"$ref": "#/properties/a"}}},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "properties": {"x": {"$ref": "#/$defs/a"}}},
        {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"not": {"$ref": "#/$defs/a"}}}},
        {"$ref": "#"},
        {"anyOf": [{"type": "string"}, {"$ref": "#"}]},
    ],
)
def test_reference_loops_that_consume_no_input_are_refused(schema: dict[str, Any]) -> None:
    problem = check_references(schema)
    assert problem is not None and "loop" in problem
    with pytest.raises(SchemaCompileError, match="loop"):
        compile_schema(schema)


def test_recursive_schemas_that_descend_into_the_value_are_accepted_and_validate() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
            }
        },
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/node"}},
    }
    assert check_references(tree) is None
    compiled = compile_schema(tree)
    compiled.validate("t", {"root": {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}})
    with pytest.raises(ParameterSchemaError):
        compiled.validate("t", {"root": {"name": "a", "children": [{"name": 3}]}})


def test_a_recursion_error_in_validation_is_a_parameter_error_not_a_crash() -> None:
    # A loop the static check refuses, built directly: the validator recurses until RecursionError.
    validator = jsonschema.Draft202012Validator(
        {"properties": {"a": {"$ref": "#/properties/a"}}}, registry=NO_RETRIEVAL
    )
    compiled = CompiledSchema(validator=validator, sensitive=None, trivial=False)
    with pytest.raises(ParameterSchemaError) as info:
        compiled.validate("loop", {"a": 1})
    assert info.value.field == "(root)"


def test_local_references_still_validate() -> None:
    compiled = compile_schema(
        {
            "$defs": {"money": {"type": "number", "minimum": 0}},
            "type": "object",
            "properties": {"amount": {"$ref": "#/$defs/money"}},
        }
    )
    compiled.validate("pay", {"amount": 5})
    with pytest.raises(ParameterSchemaError) as info:
        compiled.validate("pay", {"amount": -5})
    assert info.value.field == "amount"


def test_the_validator_registry_retrieves_nothing_even_when_the_check_is_bypassed() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.json"
    try:
        schema = {"properties": {"a": {"$ref": url}}}
        validator = jsonschema.Draft202012Validator(schema, registry=NO_RETRIEVAL)
        with pytest.raises(referencing.exceptions.Unresolvable):
            validator.is_valid({"a": 1})
        # Through CompiledSchema the failure is a value-free ParameterSchemaError (a 422), not a 500.
        compiled = CompiledSchema(validator=validator, sensitive=None, trivial=False)
        with pytest.raises(ParameterSchemaError, match="cannot be resolved"):
            compiled.validate("probe", {"a": 1})
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_a_capability_with_a_remote_ref_is_a_policy_set_error() -> None:
    with pytest.raises(PolicySetError) as info:
        compile_set([policy("p", rule())], [cap(schema={"properties": {"a": {"$ref": "http://example.com/x"}}})])
    message = str(info.value)
    assert "database.query" in message and "/properties/a/$ref" in message


def test_a_policy_file_with_a_file_ref_fails_to_load_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "caps.yaml"
    path.write_text(
        "capabilities:\n"
        "  - name: x.read\n"
        "    parameter_schema: {properties: {path: {$ref: 'file:///etc/passwd'}}}\n"
        "policies:\n"
        "  - name: p\n"
        "    rules: [{capability: x.read, outcome: ALLOW}]\n"
    )
    with pytest.raises(PolicySetError) as info:
        load_policy_set([path])
    message = str(info.value)
    assert str(path) in message or "caps.yaml" in message
    assert "/properties/path/$ref" in message and "only local references" in message


# -- the cost estimator ------------------------------------------------------------------------------

FINDING = "action.parameters.to.exists(r, action.parameters.to.exists(s, r == s + 'x'))"


def _scope(**parameters: Any) -> dict[str, Any]:
    return {"action": {"capability": "c", "parameters": parameters, "resource": None}}


def _estimate(condition: str, limit: int = 10**15, **parameters: Any) -> int:
    model = compile_cost(condition)
    return model.estimate(_scope(**parameters), limit)


def test_nested_comprehensions_over_one_list_cost_its_square() -> None:
    small = _estimate(FINDING, to=[f"r{i}@x.io" for i in range(30)])
    large = _estimate(FINDING, to=[f"r{i}@x.io" for i in range(300)])
    assert 80 < large / small < 120  # ten times the data, a hundred times the cost
    assert _estimate(FINDING, to=[f"r{i}@x.io" for i in range(3000)]) > EngineConfig().condition_cost_budget


def test_a_single_comprehension_is_linear_and_within_the_default_budget() -> None:
    to = [f"r{i}@x.io" for i in range(3000)]
    single = _estimate("action.parameters.to.all(r, r.endsWith('@x.io'))", to=to)
    assert single < EngineConfig().condition_cost_budget
    assert _estimate("action.parameters.to.all(r, r.endsWith('@x.io'))", to=to[:300]) * 9 < single


def test_iterating_parts_of_each_element_is_charged_by_the_largest_part() -> None:
    orders = [{"lines": [{"sku": f"s{i}"} for i in range(5)]} for _ in range(200)]
    cost = _estimate("action.parameters.orders.all(o, o.lines.all(l, l.sku != 'x'))", orders=orders)
    assert cost < 200 * 5 * 60  # elements x (largest part + its copy) x a small body, not a cross product


def test_map_and_filter_are_charged_quadratically_and_in_for_each_element() -> None:
    nums = list(range(2000))
    mapped = _estimate("action.parameters.n.map(x, x).size() > 0", n=nums)
    assert mapped > 2000 * 1999  # the library copies its accumulator each step
    member = _estimate("action.parameters.n.all(x, x in action.parameters.n)", n=nums)
    assert member > 2000 * 2000


def _grows(condition: str) -> bool:
    cost = compile_condition(condition).cost
    assert cost is not None  # every readable condition has a cost model, estimated before the library runs it
    return cost.needs_estimate


def test_literal_ranges_and_conditions_without_comprehensions() -> None:
    assert _estimate("[1, 2, 3].all(x, x > 0)") < 100
    assert not _grows("action.parameters.amount > 5 && actor.id == 'a'")
    assert _grows("action.parameters.to.exists(r, r == 'a')")
    assert not _grows("action.parameters.a + action.parameters.b > 5")  # linear
    chain = " + ".join(["action.parameters.l"] * (MAX_UNESTIMATED_CONCATENATIONS + 2))
    assert _grows(f"size({chain}) > 0")  # quadratic in the chain's length
    assert not _grows("['eu', 'us'].exists(r, r == action.parameters.region)")
    assert _grows("[action.parameters.l].exists(l, l.exists(x, x == 1))")


def test_the_estimate_stops_early_above_its_limit() -> None:
    to = [f"r{i}@x.io" for i in range(3000)]
    assert _estimate(FINDING, limit=1000, to=to) > 1000


def test_missing_fields_and_odd_values_do_not_break_the_estimate() -> None:
    assert _estimate(FINDING) >= 0  # no `to`: the library raises later, the estimate is small
    assert _estimate(FINDING, to="not a list") >= 0
    assert _estimate("action.parameters.m.exists(k, action.parameters.m[k] > 1)", m={"a": 1, "b": 2}) > 0
    assert _estimate("{'a': [1, 2]}.a.exists(x, x == 1) ? true : [1].size() > 0") > 0


def test_cross_products_of_three_lists_are_refused_at_compile() -> None:
    source = "action.parameters.a.exists(x, action.parameters.b.exists(y, action.parameters.c.exists(z, x == y)))"
    with pytest.raises(PolicySetError) as info:
        compile_set([policy("p", rule(condition=source))])
    assert f"at most {MAX_INDEPENDENT_NESTING}" in str(info.value)
    # Nesting over parts of the outer element, or over literal lists, is not a cross product.
    compile_set([policy("p", rule(condition="action.parameters.a.all(x, x.b.all(y, y.c.all(z, z > 0)))"))])
    compile_set([policy("p", rule(condition="[1, 2].all(x, [3].all(y, [4].all(z, x < y + z)))"))])


def test_a_condition_over_budget_is_denied_without_being_evaluated() -> None:
    to = [f"r{i}@x.io" for i in range(3000)]
    policies = [policy("mail", rule("ALLOW", f"!({FINDING})", capability="mail.send", id="lookalikes"))]
    result = decide(policies, proposal("mail.send", {"to": to}), capabilities=[cap("mail.send")])
    assert result.outcome == "DENY"
    assert "evaluation_budget_exceeded" in result.reason and "mail/lookalikes" in result.reason
    assert result.policy_ids == ["mail/lookalikes"]
    # The same rule on small data is evaluated as usual; a larger budget evaluates the large one too.
    small = decide(policies, proposal("mail.send", {"to": to[:3]}), capabilities=[cap("mail.send")])
    assert small.outcome == "ALLOW"
    generous = EngineConfig(condition_cost_budget=10**9)
    mid = decide(policies, proposal("mail.send", {"to": to[:200]}), capabilities=[cap("mail.send")], config=generous)
    assert mid.outcome == "ALLOW"


# Red team 2, finding A: the library copies the whole value on every selection and index (`m[k]`, `l[0]`,
# `action.parameters.m`), so a loop over a map that indexes it is quadratic; each took seconds, estimated ~1 unit.
RED_TEAM_INDEXING = [
    (
        "has(context.metadata.flags) && context.metadata.flags.exists(k, context.metadata.flags[k] == 'block')",
        {},
        {"flags": {f"k{i}": "ok" for i in range(12_000)}},
    ),
    (
        "has(action.parameters.m) && action.parameters.m.exists(k, action.parameters.m[k] > 100000)",
        {"m": {f"k{i}": i for i in range(4_400)}},
        {},
    ),
    (
        "has(action.parameters.l) && action.parameters.l.exists(x, action.parameters.l[0] == x + 1)",
        {"l": list(range(10_000))},
        {},
    ),
]


@pytest.mark.parametrize(("condition", "parameters", "metadata"), RED_TEAM_INDEXING)
def test_indexing_a_collection_in_a_loop_over_it_is_charged_its_copy(
    condition: str, parameters: dict[str, Any], metadata: dict[str, Any]
) -> None:
    policies = [policy("red", rule("DENY", condition, capability="red.map", id="flagged"), rule(capability="red.map"))]
    result = decide(policies, proposal("red.map", parameters, metadata=metadata), capabilities=[cap("red.map")])
    assert result.outcome == "DENY"
    assert "evaluation_budget_exceeded" in result.reason and "red/flagged" in result.reason
    # The same condition over a few entries is evaluated as usual.
    small_parameters = {
        key: (dict(list(v.items())[:5]) if isinstance(v, dict) else v[:5]) for key, v in parameters.items()
    }
    small_metadata = {key: dict(list(v.items())[:5]) for key, v in metadata.items()}
    small = decide(
        policies, proposal("red.map", small_parameters, metadata=small_metadata), capabilities=[cap("red.map")]
    )
    assert small.outcome == "ALLOW", small.reason


def test_the_copy_of_a_selected_value_is_charged_per_item_and_strings_by_their_length() -> None:
    m = {f"k{i}": i for i in range(1000)}
    once = _estimate("action.parameters.m.k0 == 1", m=m)
    assert once > 1000  # the library copies `action.parameters` and then `m`... once
    in_loop = _estimate("action.parameters.l.exists(x, action.parameters.m.k0 == x)", m=m, l=list(range(100)))
    assert in_loop > 100 * 1000  # ... and again on every iteration
    text = "a" * 60_000  # a string is one memcpy: not charged per character like a list is per item
    assert _estimate("action.parameters.l.exists(x, action.parameters.s == 'b')", s=text, l=list(range(100))) < 100_000


def test_the_budget_is_per_proposal_not_per_condition() -> None:
    # Red team 2, finding B: 60 rules each under the budget took 471 ms together for one proposal.
    conditions = [
        f"action.parameters.l.exists(a, action.parameters.l.exists(b, a == b + {100000 + i}))" for i in range(60)
    ]
    capability = [cap("red.many")]
    data = proposal("red.many", {"l": list(range(100))})
    alone = decide(
        [policy("red", rule("DENY", conditions[0], capability="red.many"), rule(capability="red.many"))],
        data,
        capabilities=capability,
    )
    assert alone.outcome == "ALLOW", alone.reason  # one of them is within the budget
    rules = [rule("DENY", c, capability="red.many", id=f"r{i}") for i, c in enumerate(conditions)]
    together = decide([policy("red", *rules, rule(capability="red.many"))], data, capabilities=capability)
    assert together.outcome == "DENY"
    assert "evaluation_budget_exceeded" in together.reason
    assert "together exceeded the proposal's evaluation budget" in together.reason


def test_plain_conditions_over_huge_metadata_are_estimated_too() -> None:
    # One `flags['k1']` over 80,000 flags took ~340 ms in the library (the context conversion and copies).
    flags = {f"k{i}": "ok" for i in range(80_000)}
    policies = [policy("red", rule("DENY", "context.metadata.flags['k1'] == 'block'", id="one"), rule())]
    result = decide(policies, proposal(metadata={"flags": flags}))
    assert result.outcome == "DENY" and "evaluation_budget_exceeded" in result.reason
    assert decide(policies, proposal(metadata={"flags": {"k1": "ok"}})).outcome == "ALLOW"


def test_the_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="condition_cost_budget"):
        EngineConfig(condition_cost_budget=0)


# -- keyed hashes ------------------------------------------------------------------------------------


def test_value_keys_are_derived_with_a_label_and_differ_per_secret() -> None:
    secret = b"s" * 32
    key = value_key_from_secret(secret)
    assert key == hmac.new(secret, b"aegis sensitive-values v1", hashlib.sha256).digest()
    assert key != secret and key != value_key_from_secret(b"t" * 32)


def test_hash_value_and_keyed_digest_are_hmacs() -> None:
    key = value_key_from_secret(b"s" * 32)
    card = "4111111111111111"
    assert hash_value(card, key) == "hmac-sha256:" + hmac.new(key, canonical_json(card), hashlib.sha256).hexdigest()
    assert hashlib.sha256(canonical_json(card)).hexdigest() not in hash_value(card, key)
    assert keyed_digest(key, b"x") == hmac.new(key, b"x", hashlib.sha256).hexdigest()
    assert len(keyed_digest(key, b"x")) == 64  # fits the params_hash column


def test_without_a_configured_key_each_config_draws_its_own() -> None:
    assert EngineConfig().value_key != EngineConfig().value_key
    assert "value_key" not in repr(EngineConfig())
    with pytest.raises(ValueError, match="value_key"):
        EngineConfig(value_key=b"short")


# -- x-sensitive wherever a schema can mark a value (red team D) -------------------------------------

CARD = "4111111111111111"
_CARD_DEF = {"type": "string", "x-sensitive": True}


@pytest.mark.parametrize(
    ("schema", "parameters"),
    [
        ({"$defs": {"card": _CARD_DEF}, "properties": {"card": {"$ref": "#/$defs/card"}}}, {"card": CARD}),
        ({"definitions": {"card": _CARD_DEF}, "properties": {"card": {"$ref": "#/definitions/card"}}}, {"card": CARD}),
        ({"$defs": {"o": {"properties": {"card": _CARD_DEF}}}, "$ref": "#/$defs/o"}, {"card": CARD}),
        ({"additionalProperties": _CARD_DEF}, {"card": CARD}),
        ({"properties": {"id": {}}, "additionalProperties": _CARD_DEF}, {"id": "o-1", "card": CARD}),
        ({"patternProperties": {"^card": _CARD_DEF}}, {"card_1": CARD}),
        ({"properties": {"card": {"anyOf": [_CARD_DEF, {"type": "integer"}]}}}, {"card": CARD}),
        ({"properties": {"card": {"oneOf": [_CARD_DEF, {"type": "integer"}]}}}, {"card": CARD}),
        ({"properties": {"card": {"allOf": [{"x-sensitive": True}]}}}, {"card": CARD}),
        ({"allOf": [{"properties": {"card": {}}}, {"additionalProperties": _CARD_DEF}]}, {"card": CARD}),
        ({"properties": {"cards": {"prefixItems": [_CARD_DEF]}}}, {"cards": [CARD, "x"]}),
        ({"properties": {"cards": {"prefixItems": [{}], "items": _CARD_DEF}}}, {"cards": ["x", CARD]}),
        ({"properties": {"cards": {"items": {"properties": {"n": _CARD_DEF}}}}}, {"cards": [{"n": CARD}]}),
        ({"if": {"required": ["card"]}, "then": {"properties": {"card": _CARD_DEF}}}, {"card": CARD}),
        ({"if": {"required": ["x"]}, "else": {"properties": {"card": _CARD_DEF}}}, {"card": CARD}),
        ({"dependentSchemas": {"card": {"properties": {"card": _CARD_DEF}}}}, {"card": CARD}),
        ({"properties": {"card": {"x-sensitive": True, "properties": {"n": {}}}}}, {"card": {"n": CARD}}),
        (
            {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "properties": {"cards": {"items": [{"x-sensitive": True}], "additionalItems": _CARD_DEF}},
            },
            {"cards": [CARD, CARD]},
        ),
    ],
)
def test_x_sensitive_is_honoured_wherever_it_marks_a_value(schema: dict[str, Any], parameters: dict[str, Any]) -> None:
    compiled = compile_schema({"type": "object", **schema})
    key = value_key_from_secret(b"s" * 32)
    redacted = compiled.redact(parameters, key)
    assert CARD not in repr(redacted)
    assert "hmac-sha256:" in repr(redacted)
    assert CARD in repr(compiled.sensitive_values(parameters))
    # What is not marked stays readable.
    if "id" in parameters:
        assert redacted["id"] == "o-1"
    if parameters.get("cards", [None])[-1] == "x":
        assert redacted["cards"][-1] == "x"


@pytest.mark.parametrize(
    ("schema", "fragments"),
    [
        ({"properties": {"card": {"x-sensitive": "true"}}}, ["/properties/card/x-sensitive", "JSON boolean"]),
        ({"properties": {"card": {"x-sensitive": 1}}}, ["/properties/card/x-sensitive", "JSON boolean"]),
        ({"properties": {"card": {"not": {"x-sensitive": True}}}}, ["/properties/card/not/x-sensitive", "honoured"]),
        ({"properties": {"c": {"contains": {"x-sensitive": True}}}}, ["/c/contains/x-sensitive", "honoured"]),
        ({"propertyNames": {"x-sensitive": True}}, ["/propertyNames/x-sensitive", "honoured"]),
        ({"unevaluatedProperties": {"x-sensitive": True}}, ["/unevaluatedProperties/x-sensitive", "honoured"]),
        ({"$defs": {"card": {"x-sensitive": True}}}, ["/$defs/card/x-sensitive", "unreferenced $defs"]),
        ({"x-extra": {"card": {"x-sensitive": True}}}, ["/x-extra/card/x-sensitive", "not in a schema"]),
        (
            {"$defs": {"n": {"properties": {"pin": _CARD_DEF, "next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"},
            ["recursive reference '#/$defs/n'"],
        ),
    ],
)
def test_x_sensitive_that_cannot_be_honoured_is_refused_naming_its_path(
    schema: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(SchemaCompileError) as raised:
        compile_schema({"type": "object", **schema})
    for fragment in fragments:
        assert fragment in str(raised.value)


def test_x_sensitive_as_data_or_as_a_property_name_is_not_a_mark() -> None:
    compiled = compile_schema(
        {"properties": {"x-sensitive": {"type": "string"}, "k": {"const": {"x-sensitive": "yes"}}}}
    )
    assert compiled.sensitive is None
    assert compiled.redact({"x-sensitive": "a"}, b"k" * 32) == {"x-sensitive": "a"}
    assert compile_schema({"properties": {"a": {"x-sensitive": False}}}).sensitive is None


def test_a_refused_mark_is_a_policy_set_error() -> None:
    capability = cap("pay", schema={"type": "object", "additionalProperties": {"x-sensitive": "true"}})
    with pytest.raises(PolicySetError, match="x-sensitive at /additionalProperties/x-sensitive"):
        compile_set([policy("p", rule(capability="pay"))], [capability])


# -- sensitive values in the reason of a failed condition (red team E) -------------------------------

PIN = "SECRET-PIN-("


@pytest.mark.parametrize(
    "condition",
    [
        "{'a': 1}[action.parameters.pin] == 1",
        "action.parameters[action.parameters.pin] == 1",
        "duration(action.parameters.pin) > duration('1s')",
        "'x'.matches(action.parameters.pin)",
        "action.parameters.pin.matches(action.parameters.pin)",
        "timestamp(action.parameters.pin) > timestamp('2020-01-01T00:00:00Z')",
        "{'a': 1}[action.parameters.cards[0]] == 1",
    ],
)
@pytest.mark.parametrize("pin", [PIN, PIN + "x" * 600, "1234-(5678"])
def test_a_failed_condition_never_quotes_a_sensitive_value(condition: str, pin: str) -> None:
    schema = {
        "type": "object",
        "properties": {"pin": {"type": "string", "x-sensitive": True}},
        "patternProperties": {"^cards$": {"items": {"x-sensitive": True}}},
    }
    result = decide(
        [policy("p", rule("ALLOW", condition, capability="sec"))],
        proposal("sec", {"pin": pin, "cards": [pin]}),
        capabilities=[cap("sec", schema=schema)],
    )
    assert result.outcome == "DENY" and "fail-closed" in result.reason, result.reason
    assert pin[:4] not in result.reason, result.reason
    assert "p/0" in result.reason


def test_a_failed_condition_keeps_its_values_without_sensitive_fields() -> None:
    result = decide(
        [policy("p", rule("ALLOW", "{'a': 1}[action.parameters.pin] == 1", capability="open"))],
        proposal("open", {"pin": "visible-key"}),
        capabilities=[cap("open")],
    )
    assert "visible-key" in result.reason  # nothing to hide: the key the condition missed helps its author


def test_a_cut_off_quote_of_a_sensitive_value_is_scrubbed() -> None:
    from aegis_server.engine.evaluate import _error_text, _Secrets

    secret = "TOPSECRET-" + "z" * 50
    text = _error_text(RuntimeError(f"bad input {secret[:20]} (cut) and 'TOPSEC"), _Secrets([secret, 4321]))
    assert "TOPSEC" not in text and "[redacted]" in text
    assert "4321" not in _error_text(ValueError("no 4321 here"), _Secrets([4321]))
    assert _error_text(ValueError("kept 'quote'"), _Secrets(None)) == "ValueError: kept 'quote'"


def test_regex_errors_do_not_repeat_the_pattern() -> None:
    from aegis_server.engine._cel import re_match

    with pytest.raises(ValueError) as raised:
        re_match("x", "SECRET-(")
    assert "SECRET" not in str(raised.value) and "invalid regular expression" in str(raised.value)


def test_a_scrubbed_reason_keeps_the_function_name_unless_it_is_the_value() -> None:
    from aegis_server.engine.evaluate import _error_text, _Secrets

    message = "Function 'duration' error: Error { input: \"SECRET\" }"
    assert _error_text(RuntimeError(message), _Secrets(["SECRET"])) == (
        "RuntimeError: Function 'duration' error: Error { input: [redacted] }"
    )
    assert "duration" not in _error_text(RuntimeError(message), _Secrets(["duration"]))
