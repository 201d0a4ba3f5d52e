"""Decision semantics: combination, default-deny, fail-closed, risk, constraints, scope variables."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import pytest
from engine_support import NOW, cap, compile_set, decide, policy, proposal, rule
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis_sdk._wire.canonical import canonical_json
from aegis_server.engine import (
    EngineConfig,
    ParameterSchemaError,
    UnknownCapabilityError,
    evaluate,
    value_key_from_secret,
)

# ---------------------------------------------------------------------------------------------
# Combination
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        (["ALLOW"], "ALLOW"),
        (["ALLOW", "REQUIRE_CONFIRMATION"], "REQUIRE_CONFIRMATION"),
        (["REQUIRE_CONFIRMATION", "ESCALATE", "ALLOW"], "ESCALATE"),
        (["ESCALATE", "DENY", "ALLOW", "REQUIRE_CONFIRMATION"], "DENY"),
        (["DENY", "ALLOW"], "DENY"),
    ],
)
def test_strictest_matching_outcome_wins(outcomes: list[str], expected: str) -> None:
    rules = [
        rule(outcome, id=f"r{i}", priority=100 - i if outcome == "ALLOW" else 0) for i, outcome in enumerate(outcomes)
    ]
    result = decide([policy("p", *rules)])
    assert result.outcome == expected
    assert sorted(result.policy_ids) == sorted(f"p/r{i}" for i in range(len(outcomes)))


def test_priority_only_picks_the_explaining_rule() -> None:
    result = decide(
        [
            policy(
                "p",
                rule("ALLOW", id="high-allow", priority=1000, reason="allow wins priority"),
                rule("DENY", id="low-deny", priority=-5, reason="deny by low"),
                rule("DENY", id="mid-deny", priority=10, reason="deny by mid"),
            )
        ]
    )
    assert result.outcome == "DENY"
    assert result.reason.startswith("DENY by p/mid-deny: deny by mid")
    assert "also DENY: p/low-deny" in result.reason
    assert "overrides ALLOW of p/high-allow" in result.reason
    assert result.policy_ids == ["p/mid-deny", "p/low-deny", "p/high-allow"]


def test_no_rule_for_the_capability_is_default_deny() -> None:
    result = decide([policy("p", rule("ALLOW", capability="other.thing"))], capabilities=[cap(), cap("other.thing")])
    assert result.outcome == "DENY"
    assert "default-deny" in result.reason and "no enabled policy rule applies" in result.reason
    assert result.policy_ids == []
    assert result.constraints == {}


def test_rules_that_do_not_match_are_default_deny_too() -> None:
    result = decide([policy("p", rule("ALLOW", "action.parameters.n > 5", id="big"))], proposal(parameters={"n": 1}))
    assert result.outcome == "DENY"
    assert "none of the 1 rule for capability 'database.query' matched (default-deny)" in result.reason


def test_empty_policy_set_denies() -> None:
    assert decide([]).outcome == "DENY"


def test_disabled_policies_do_not_vote() -> None:
    result = decide([policy("off", rule("DENY"), enabled=False), policy("on", rule("ALLOW"))])
    assert result.outcome == "ALLOW"
    assert result.policy_ids == ["on/0"]


def test_rule_ids_default_to_the_index() -> None:
    result = decide([policy("p", rule("DENY", "false"), rule("ALLOW"))])
    assert result.policy_ids == ["p/1"]


def test_glob_rules_apply_to_matching_capabilities_only() -> None:
    caps = [cap("payments.refund"), cap("payments.charge"), cap("database.query")]
    policies = [
        policy("g", rule("ESCALATE", capability="payments.*", id="pay")),
        policy("a", rule("ALLOW", capability="*")),
    ]
    assert decide(policies, proposal("payments.refund"), capabilities=caps).outcome == "ESCALATE"
    assert decide(policies, proposal("payments.charge"), capabilities=caps).outcome == "ESCALATE"
    assert decide(policies, proposal("database.query"), capabilities=caps).outcome == "ALLOW"


def test_glob_character_classes_and_single_wildcards() -> None:
    caps = [cap("db.v1"), cap("db.v2"), cap("db.v10")]
    policies = [policy("g", rule("ALLOW", capability="db.v[!2]"))]
    assert decide(policies, proposal("db.v1"), capabilities=caps).outcome == "ALLOW"
    assert decide(policies, proposal("db.v2"), capabilities=caps).outcome == "DENY"
    assert decide(policies, proposal("db.v10"), capabilities=caps).outcome == "DENY"


# ---------------------------------------------------------------------------------------------
# Constraints and review timeouts
# ---------------------------------------------------------------------------------------------


def test_constraints_of_the_deciding_rules_merge_and_higher_priority_wins() -> None:
    result = decide(
        [
            policy(
                "p",
                rule("ALLOW", id="a", priority=1, constraints={"max_rows": 1000, "read_only": True}),
                rule("ALLOW", id="b", priority=5, constraints={"max_rows": 10}),
                rule("DENY", "false", id="c", constraints={"ignored": 1}),
            ),
            policy("q", rule("REQUIRE_CONFIRMATION", "false", constraints={"ignored": 2})),
        ]
    )
    assert result.outcome == "ALLOW"
    assert result.constraints == {"max_rows": 10, "read_only": True}


def test_constraints_of_overridden_outcomes_are_dropped() -> None:
    result = decide(
        [policy("p", rule("ALLOW", constraints={"max_rows": 5}), rule("REQUIRE_CONFIRMATION", constraints={"ttl": 60}))]
    )
    assert result.constraints == {"ttl": 60}


def test_returned_constraints_are_copies() -> None:
    policy_set = compile_set([policy("p", rule("ALLOW", constraints={"tables": ["a", "b"]}))])
    first = evaluate(proposal(), policy_set, now=NOW)
    first.constraints["tables"].append("hacked")
    assert evaluate(proposal(), policy_set, now=NOW).constraints == {"tables": ["a", "b"]}


def test_escalate_review_timeout_is_the_shortest_of_the_deciding_rules() -> None:
    result = decide(
        [
            policy(
                "p",
                rule("ESCALATE", review_timeout_seconds=600),
                rule("ESCALATE", review_timeout_seconds=2),
                rule("ESCALATE"),
            )
        ]
    )
    assert result.outcome == "ESCALATE"
    assert result.review_timeout_seconds == 2


def test_escalate_without_a_rule_timeout_uses_the_config_default() -> None:
    result = decide([policy("p", rule("ESCALATE"))], config=EngineConfig(default_review_timeout_seconds=1800))
    assert result.review_timeout_seconds == 1800


@pytest.mark.parametrize("outcome", ["ALLOW", "DENY", "REQUIRE_CONFIRMATION"])
def test_only_escalate_has_a_review_timeout(outcome: str) -> None:
    assert decide([policy("p", rule(outcome))]).review_timeout_seconds is None


# ---------------------------------------------------------------------------------------------
# Risk
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "base"), [("low", 0.1), ("medium", 0.3), ("high", 0.6), ("critical", 0.85)])
def test_base_risk_by_level(level: str, base: float) -> None:
    result = decide([policy("p", rule("DENY"))], capabilities=[cap(risk_level=level)])
    assert result.risk_score == base
    assert f"base {base:g} ({level})" in result.reason


def test_matching_rules_adjust_the_risk_and_the_reason_explains_it() -> None:
    result = decide(
        [
            policy(
                "p", rule("ALLOW", id="a", risk=0.2), rule("ALLOW", id="b", risk=-0.05), rule("DENY", "false", risk=0.5)
            )
        ]
    )
    assert result.risk_score == 0.45
    assert "risk 0.45 = base 0.3 (medium) + 0.2 (p/a) - 0.05 (p/b)" in result.reason


def test_risk_is_clamped_to_0_1() -> None:
    high = decide([policy("p", rule("DENY", risk=1.0))], capabilities=[cap(risk_level="critical")])
    low = decide([policy("p", rule("DENY", risk=-1.0))], capabilities=[cap(risk_level="low")])
    assert (high.risk_score, low.risk_score) == (1.0, 0.0)
    assert "clamped" in high.reason and "clamped" in low.reason


def test_allow_above_the_threshold_escalates() -> None:
    policies = [policy("p", rule("ALLOW", id="ok", risk=0.3, constraints={"max_rows": 1}))]
    result = decide(policies, capabilities=[cap(risk_level="high")])  # 0.6 + 0.3 = 0.9 > 0.8
    assert result.outcome == "ESCALATE"
    assert "above the escalate threshold 0.8" in result.reason
    assert result.review_timeout_seconds == 3600
    assert result.constraints == {"max_rows": 1}
    relaxed = decide(policies, capabilities=[cap(risk_level="high")], config=EngineConfig(escalate_threshold=0.95))
    assert relaxed.outcome == "ALLOW"


def test_risk_equal_to_the_threshold_is_not_above_it() -> None:
    result = decide([policy("p", rule("ALLOW", risk=0.2))], capabilities=[cap(risk_level="high")])  # exactly 0.8
    assert (result.risk_score, result.outcome) == (0.8, "ALLOW")


def test_threshold_never_turns_a_stricter_outcome_into_escalate() -> None:
    result = decide([policy("p", rule("REQUIRE_CONFIRMATION", risk=0.5))], capabilities=[cap(risk_level="critical")])
    assert result.outcome == "REQUIRE_CONFIRMATION"


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_engine_config_rejects_a_bad_threshold(threshold: float) -> None:
    with pytest.raises(ValueError, match="escalate_threshold"):
        EngineConfig(escalate_threshold=threshold)


# ---------------------------------------------------------------------------------------------
# Fail-closed condition errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "fragment"),
    [
        ("action.parameters.missing == 1", "KeyError"),
        ("action.parameters.query > 3", "No such overload"),
        ("action.parameters.query", "not a bool"),
        ("action.parameters.query.matches(action.parameters.pattern)", "invalid regular expression"),
        ("action.parameters.n.matches('x')", "takes (string, string)"),
        ("1 / action.parameters.zero == 1", "division by zero"),
    ],
)
@pytest.mark.parametrize("outcome", ["ALLOW", "DENY", "ESCALATE", "REQUIRE_CONFIRMATION"])
def test_a_condition_that_errors_denies_and_names_the_rule(condition: str, fragment: str, outcome: str) -> None:
    params = {"query": "select 1", "pattern": "(", "n": 5, "zero": 0}
    result = decide(
        [policy("p", rule("ALLOW", id="fine"), rule(outcome, condition, id="broken"))], proposal(parameters=params)
    )
    assert result.outcome == "DENY"
    assert "fail-closed" in result.reason
    assert "p/broken" in result.reason
    assert fragment in result.reason
    assert result.policy_ids[0] == "p/broken"
    assert result.constraints == {}


def test_a_guarded_optional_field_does_not_error() -> None:
    policies = [
        policy("p", rule("DENY", "has(context.metadata.env) && context.metadata.env == 'prod'"), rule("ALLOW", id="a"))
    ]
    assert decide(policies, proposal()).outcome == "ALLOW"
    assert decide(policies, proposal(metadata={"env": "prod"})).outcome == "DENY"


def test_condition_errors_never_leak_parameter_values() -> None:
    secret = "s3cr3t-value-123"
    result = decide(
        [policy("p", rule("DENY", "action.parameters.token > 3"), rule("ALLOW", "int(action.parameters.token) > 1"))],
        proposal(parameters={"token": secret}),
    )
    assert result.outcome == "DENY"
    assert secret not in result.reason


# ---------------------------------------------------------------------------------------------
# Scope variables and regexes
# ---------------------------------------------------------------------------------------------


def test_scope_variables_are_available_to_conditions() -> None:
    condition = (
        "actor.id == 'bot-7' && actor.type == 'automation' && action.capability == 'database.query' && "
        "action.resource == 'db://prod' && context.session_id == 's-1' && context.metadata.team == 'ops' && "
        "time.hour == 12 && time.day_of_week == 0 && time.now == timestamp('2025-01-06T12:30:00Z') && "
        "risk == 0.3 && risk_level == 'medium'"
    )
    prop = proposal(
        actor="bot-7", actor_type="automation", resource="db://prod", session_id="s-1", metadata={"team": "ops"}
    )
    assert decide([policy("p", rule("ALLOW", condition))], prop).outcome == "ALLOW"


def test_time_is_taken_in_utc() -> None:
    policies = [policy("p", rule("ALLOW", "time.hour == 12 && time.day_of_week == 0"))]
    local = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert decide(policies, now=local).outcome == "ALLOW"
    assert decide(policies, now=NOW.replace(tzinfo=None)).outcome == "ALLOW"  # naive = UTC
    assert decide(policies, now=datetime(2025, 1, 7, 12, tzinfo=timezone.utc)).outcome == "DENY"


def test_absent_optional_fields_are_null() -> None:
    policies = [policy("p", rule("ALLOW", "action.resource == null && context.session_id == null"))]
    assert decide(policies).outcome == "ALLOW"


def test_matches_is_a_search_with_python_re_syntax() -> None:
    policies = [policy("p", rule("DENY", r"action.parameters.q.matches(r'(?i)\bdrop\b')"), rule("ALLOW", id="ok"))]
    assert decide(policies, proposal(parameters={"q": "select 1; DROP table x"})).outcome == "DENY"
    assert decide(policies, proposal(parameters={"q": "select dropped from x"})).outcome == "ALLOW"


def test_function_form_and_re_match_alias() -> None:
    for condition in (
        "matches(action.parameters.q, '^a+$')",
        "re_match(action.parameters.q, '^a+$')",
        "action.parameters.q.re_match('^a+$')",
    ):
        assert decide([policy("p", rule("ALLOW", condition))], proposal(parameters={"q": "aaa"})).outcome == "ALLOW"
        assert decide([policy("p", rule("ALLOW", condition))], proposal(parameters={"q": "aab"})).outcome == "DENY"


def test_matches_inside_string_literals_is_left_alone() -> None:
    condition = "action.parameters.q == 'x.matches(y)' || action.parameters.q == \"matches(\""
    policies = [policy("p", rule("ALLOW", condition))]
    assert decide(policies, proposal(parameters={"q": "x.matches(y)"})).outcome == "ALLOW"
    assert decide(policies, proposal(parameters={"q": "matches("})).outcome == "ALLOW"


def test_comprehension_macros_work() -> None:
    policies = [
        policy(
            "p",
            rule("REQUIRE_CONFIRMATION", "action.parameters.to.exists(r, !r.endsWith('@example.com'))"),
            rule("ALLOW"),
        )
    ]
    assert decide(policies, proposal(parameters={"to": ["a@example.com"]})).outcome == "ALLOW"
    assert (
        decide(policies, proposal(parameters={"to": ["a@example.com", "b@else.org"]})).outcome == "REQUIRE_CONFIRMATION"
    )


def test_numbers_compare_across_int_and_double() -> None:
    policies = [policy("p", rule("ALLOW", "action.parameters.amount <= 100"))]
    assert decide(policies, proposal(parameters={"amount": 99.5})).outcome == "ALLOW"
    assert decide(policies, proposal(parameters={"amount": 100})).outcome == "ALLOW"
    assert decide(policies, proposal(parameters={"amount": 100.01})).outcome == "DENY"


# ---------------------------------------------------------------------------------------------
# Unknown capabilities, parameter schemas, sensitive fields
# ---------------------------------------------------------------------------------------------


def test_unknown_capability_lists_the_nearest_names() -> None:
    policy_set = compile_set([], [cap("database.query"), cap("database.admin"), cap("payments.refund")])
    with pytest.raises(UnknownCapabilityError) as info:
        evaluate(proposal("database.querry"), policy_set, now=NOW)
    assert info.value.name == "database.querry"
    assert info.value.suggestions[0] == "database.query"
    assert "did you mean 'database.query'" in str(info.value)
    with pytest.raises(UnknownCapabilityError) as nothing_close:
        evaluate(proposal("zzz"), policy_set, now=NOW)
    assert nothing_close.value.suggestions == []
    assert "register it" in str(nothing_close.value)


_SCHEMA = {
    "type": "object",
    "properties": {
        "amount": {"type": "number", "maximum": 1000},
        "card": {"type": "string", "x-sensitive": True, "pattern": "^[0-9]+$"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}},
    },
    "required": ["amount"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("parameters", "field", "fragment"),
    [
        ({}, "amount", "is required"),
        ({"amount": "12"}, "amount", "must be of type number"),
        ({"amount": 5000}, "amount", "must be <= 1000"),
        ({"amount": 1, "extra": True}, "extra", "is not an allowed parameter"),
        ({"amount": 1, "items": [{"sku": 5}]}, "items[0].sku", "must be of type string"),
        ({"amount": 1, "card": "4111-secret-card"}, "card", "must match the pattern"),
    ],
)
def test_parameters_failing_the_schema_name_the_field(parameters: dict[str, object], field: str, fragment: str) -> None:
    policy_set = compile_set([policy("p", rule("ALLOW"))], [cap(schema=_SCHEMA)])
    with pytest.raises(ParameterSchemaError) as info:
        evaluate(proposal(parameters=parameters), policy_set, now=NOW)
    error = info.value
    assert (error.capability, error.field) == ("database.query", field)
    assert fragment in error.errors[0]["message"]
    assert fragment in str(error)
    assert "4111-secret-card" not in str(error) and "4111-secret-card" not in json.dumps(error.errors)


@pytest.mark.parametrize("combinator", ["anyOf", "oneOf"])
def test_parameters_failing_a_combinator_are_invalid_parameters_not_a_crash(combinator: str) -> None:
    # jsonschema's best_match picks an error from inside the branches, which is not in the top-level list.
    schema = {
        "type": "object",
        "properties": {"card": {"type": "string"}},
        combinator: [{"properties": {"card": {"not": {"pattern": "^sk-"}}}}, {"required": ["token"]}],
    }
    policy_set = compile_set([policy("p", rule("ALLOW"))], [cap(schema=schema)])
    assert evaluate(proposal(parameters={"card": "ok"}), policy_set, now=NOW).outcome == "ALLOW"
    with pytest.raises(ParameterSchemaError) as info:
        evaluate(proposal(parameters={"card": "sk-live"}), policy_set, now=NOW)
    assert info.value.errors and "sk-live" not in json.dumps(info.value.errors)


def test_sensitive_fields_are_keyed_hashes_in_audit_parameters_only() -> None:
    schema = {
        "type": "object",
        "properties": {
            "card": {"type": "string", "x-sensitive": True},
            "holder": {"type": "object", "properties": {"ssn": {"x-sensitive": True}, "name": {"type": "string"}}},
            "tokens": {"type": "array", "items": {"type": "string", "x-sensitive": True}},
        },
    }
    params = {"card": "4111111111111111", "holder": {"ssn": {"b": 1, "a": "é"}, "name": "Jo"}, "tokens": ["t1"], "n": 1}
    policies = [policy("p", rule("ALLOW", "action.parameters.card.startsWith('4111')"))]
    key = value_key_from_secret(b"a server secret of 32 bytes.....")
    config = EngineConfig(value_key=key)
    result = decide(policies, proposal(parameters=params), capabilities=[cap(schema=schema)], config=config)
    assert result.outcome == "ALLOW"  # conditions see the real value
    audit = result.audit_parameters

    def keyed(data: bytes) -> str:
        return "hmac-sha256:" + hmac.new(key, data, hashlib.sha256).hexdigest()

    assert audit["card"] == keyed(b'"4111111111111111"')
    assert audit["card"] != "sha256:" + hashlib.sha256(b'"4111111111111111"').hexdigest()
    assert audit["holder"] == {"ssn": keyed(canonical_json({"a": "é", "b": 1})), "name": "Jo"}
    assert audit["tokens"] == [keyed(b'"t1"')]
    assert audit["n"] == 1
    assert params["card"] == "4111111111111111"  # the proposal is not modified


def test_without_sensitive_fields_audit_parameters_equal_the_parameters() -> None:
    result = decide([policy("p", rule("ALLOW"))], proposal(parameters={"q": "select 1"}))
    assert result.audit_parameters == {"q": "select 1"}


_PATTERNS = [r"(?i)\b(drop|delete)\b", r"^\s*select", r"é+$", r"^$", r"a|", r"[^\x00-\x7f]", r"(?s).", r"\d{3,}"]


@given(text=st.text(alphabet=st.sampled_from(["a", "b", "é", "😀", " ", "\n", "D", "r", "o", "p", "1"]), max_size=12))
@settings(max_examples=300)
def test_the_regex_fast_path_answers_as_re2_search(text: str) -> None:
    import re2

    from aegis_server.engine._cel import re_match

    for pattern in _PATTERNS:
        assert re_match(text, pattern) == (re2.compile(pattern).search(text) is not None), pattern


def test_without_the_fast_entry_point_search_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    from aegis_server.engine import _cel, _regex

    monkeypatch.setattr(_regex, "_UNANCHORED", None)
    _regex.regex_searcher.cache_clear()
    try:
        assert _cel.re_match("please DROP it", r"(?i)\bdrop\b") is True
        assert _cel.re_match("select 1", r"(?i)\bdrop\b") is False
    finally:
        _regex.regex_searcher.cache_clear()  # the next calls build fast searchers again
