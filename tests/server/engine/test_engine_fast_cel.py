"""The fast path (`engine/_fast_cel.py`) against the `cel` library, its reference.

Wherever the fast path answers, the library must give the same answer; where it cannot be sure it must
say so (`Undecided`), and the engine's decisions must be the same with and without it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from engine_support import NOW, cap, decide, policy, proposal, rule
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegis_sdk.models import Capability, Policy, Proposal
from aegis_server.engine import ParameterSchemaError, compile_policy_set, evaluate
from aegis_server.engine._cel import compile_condition, new_context
from aegis_server.engine._fast_cel import Undecided, compile_fast
from aegis_server.engine._regex import regex_searcher
from aegis_server.policies.files import load_policy_set

ROOT = Path(__file__).resolve().parents[3]


def _load_bench_rules() -> Any:
    """`bench/rules.py` (the benchmark's rule sets), loaded from its file: `bench` is not an installed package."""
    spec = importlib.util.spec_from_file_location("aegis_bench_rules", ROOT / "bench" / "rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_rules = _load_bench_rules()

# Expressions ------------------------------------------------------------------------------------------

FIELDS = ["a", "b", "c"]
PATHS = [f"action.parameters.{name}" for name in FIELDS] + ["context.metadata.flag", "action.parameters.c.d"]
LITERALS = [
    "0", "1", "-1", "1000", "50", "9007199254740993", "9223372036854775807", "-9223372036854775808", "0x1F",
    "0.5", "1.0", "-0.0", "1e300", "100.25",
    "''", "'a'", "'b'", "'é'", "\"a\"", "r'\\d'", "'\\u00e9'",
    "true", "false", "null",
]  # fmt: skip
PATTERNS = ["'a'", "'^a'", "'(?i)B$'", "r'\\d+'", "'é'"]

scalar = st.sampled_from(PATHS) | st.sampled_from(LITERALS)


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    relation = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
    lists = st.lists(st.sampled_from(LITERALS), min_size=0, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
    return st.one_of(
        st.tuples(inner, relation, inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(inner, lists).map(lambda t: f"{t[0]} in {t[1]}"),
        st.sampled_from(PATHS).map(lambda path: f"has({path})"),
        inner.map(lambda e: f"!({e})"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]}) && ({t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]}) || ({t[1]})"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]}) ? ({t[1]}) : ({t[2]})"),
        st.tuples(inner, st.sampled_from(PATTERNS)).map(lambda t: f"({t[0]}).matches({t[1]})"),
        st.tuples(inner, st.sampled_from(["startsWith", "endsWith", "contains"]), inner).map(
            lambda t: f"({t[0]}).{t[1]}({t[2]})"
        ),
        inner.map(lambda e: f"size({e})"),
    )


expressions = st.recursive(scalar, _extend, max_leaves=6)

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.sampled_from([0, 1, 50, 1000, 2**53, 2**53 + 1, 2**63 - 1, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 1.0, -0.0, 50.0, 1000.0, 100.25]),
    st.text(max_size=4),
    st.sampled_from(["a", "b", "A1", "é", "e\u0301", "\ud800", ""]),
    st.lists(st.integers(0, 3), max_size=2),
    st.fixed_dictionaries({"d": st.integers(0, 3) | st.text(max_size=2)}),
)
parameters = st.dictionaries(st.sampled_from(FIELDS), values, max_size=3)
metadata = st.dictionaries(st.just("flag"), values, max_size=1)


def _library(condition: Any, variables: dict[str, Any]) -> tuple[str, Any]:
    try:
        context = new_context(variables)
    except ValueError:
        return "unusable", None  # a value the library cannot hold (a lone surrogate), wherever it is
    try:
        return "value", condition.program.execute(context)
    except Exception as exc:  # any failure is a result to compare
        return "error", type(exc).__name__


def _same_value(fast: Any, library: Any) -> bool:
    if isinstance(fast, float) and isinstance(library, float) and fast != fast:
        return library != library  # NaN
    return type(fast) is type(library) and fast == library


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=expressions, params=parameters, meta=metadata)
def test_where_the_fast_path_answers_the_library_gives_the_same_answer(
    source: str, params: dict[str, Any], meta: dict[str, Any]
) -> None:
    try:
        condition = compile_condition(source)
    except ValueError:
        return  # not a valid condition; the library refuses it at load time
    assert condition.fast is not None, f"{source!r} is in the fast subset but was not compiled"
    variables = {"action": {"parameters": params}, "context": {"metadata": meta}}
    try:
        fast = condition.fast(variables)
    except Undecided:
        return
    kind, library = _library(condition, variables)
    if kind == "unusable":
        return
    assert kind == "value", f"{source!r} with {variables!r}: fast {fast!r}, library raised {library}"
    assert _same_value(fast, library), f"{source!r} with {variables!r}: fast {fast!r}, library {library!r}"


# Cases worth naming -----------------------------------------------------------------------------------


def _fast(source: str, **variables: Any) -> Any:
    condition = compile_condition(source)
    assert condition.fast is not None
    return condition.fast(variables)


@pytest.mark.parametrize(
    ("source", "parameters", "expected"),
    [
        ("action.parameters.n > 1000", {"n": 1000.5}, True),  # a double beside an int literal
        ("action.parameters.n == 1", {"n": 1.0}, True),
        ("action.parameters.n == 'x'", {"n": 1}, False),  # equality across types is false
        ("action.parameters.n in ['a', 1]", {"n": "a"}, True),
        ("has(action.parameters.n) && action.parameters.n <= 100", {}, False),
        ("!has(action.parameters.n) || action.parameters.n == 'p'", {"n": "p"}, True),
        ("action.parameters.q.matches(r'(?i)^\\s*select\\b')", {"q": "  SELECT 1"}, True),
        ("action.parameters.q.startsWith('ab') && action.parameters.q.endsWith('yz')", {"q": "abxyz"}, True),
        ("size(action.parameters.to) > 1", {"to": ["a", "b"]}, True),
        ("action.parameters.n > 0 ? action.parameters.n < 10 : false", {"n": 5}, True),
    ],
)
def test_common_conditions_are_decided_by_the_fast_path(
    source: str, parameters: dict[str, Any], expected: bool
) -> None:
    assert _fast(source, action={"parameters": parameters}) is expected


@pytest.mark.parametrize(
    ("source", "parameters"),
    [
        ("action.parameters.n == 1", {}),  # a missing field: the library's error message
        ("action.parameters.n > 1", {"n": "x"}),  # no ordering across types
        ("action.parameters.n > 1.5", {"n": 2**53 + 1}),  # not exact as a double
        ("action.parameters.n == 1", {"n": 2**63}),  # beyond int64: the library reads it as uint
        ("action.parameters.n && true", {"n": 1}),  # a non-boolean operand
        ("action.parameters.s == 'x'", {"s": "\ud800"}),  # not UTF-8: the library cannot hold it
        ("size(action.parameters.s) == 2", {"s": "é"}),  # the library counts a string's bytes
        ("action.parameters.n.d == 1", {"n": [1]}),
    ],
)
def test_the_fast_path_leaves_uncertain_cases_to_the_library(source: str, parameters: dict[str, Any]) -> None:
    with pytest.raises(Undecided):
        _fast(source, action={"parameters": parameters})


@pytest.mark.parametrize(
    "source",
    [
        "action.parameters.n + 1 > 2",
        "action.parameters.to.exists(r, r.endsWith('@example.com'))",
        "action.parameters['n'] == 1",
        "{'a': 1}.a == 1",
        "time.now > timestamp('2025-01-01T00:00:00Z')",
        "int(action.parameters.n) == 1",
        "action.parameters.s.matches(action.parameters.p)",
        "action.parameters.s == b'x'",
        "action.parameters.n == 1u",
    ],
)
def test_conditions_outside_the_subset_are_left_to_the_library(source: str) -> None:
    assert compile_condition(source).fast is None


def test_an_invalid_pattern_in_the_function_form_is_left_to_the_library() -> None:
    assert compile_fast("re_match(action.parameters.q, '(')", regex_searcher) is None


# The engine with and without the fast path --------------------------------------------------------------


def _without_fast_path(policy_set: Any) -> Any:
    """The same compiled set with every condition forced through the library."""
    clone = dataclasses.replace(policy_set)
    index = {}
    for name in policy_set.capabilities:
        compiled = policy_set.compiled(name)
        rules = tuple(
            dataclasses.replace(rule, condition=dataclasses.replace(rule.condition, fast=None))
            for rule in compiled.rules
        )
        index[name] = dataclasses.replace(compiled, rules=rules)
    object.__setattr__(clone, "_index", index)
    return clone


def test_the_examples_decide_the_same_with_and_without_the_fast_path() -> None:
    policy_set = load_policy_set([ROOT / "examples" / "policies"])
    reference = _without_fast_path(policy_set)
    cases = [
        ("database.query", {"query": "SELECT 1", "database": "production"}, {}),
        ("database.query", {"query": "DROP TABLE users"}, {}),
        ("database.query", {"query": "UPDATE t SET a = 1", "database": "staging"}, {}),
        ("database.query", {"query": "SELECT 1"}, {"kill_switch": True}),
        ("database.query", {"query": "SELECT 1"}, {"kill_switch": "yes"}),  # fails closed in both
    ]
    for name in policy_set.capabilities:
        cases.append((name, {}, {}))
    for capability, params, meta in cases:
        proposal = Proposal.model_validate(
            {
                "actor": {"id": "agent-1", "type": "ai-agent"},
                "action": {"capability": capability, "parameters": params},
                "context": {"metadata": meta},
            }
        )
        try:
            expected = evaluate(proposal, reference, now=NOW)
        except ParameterSchemaError as exc:  # the same error with the fast path
            with pytest.raises(type(exc)):
                evaluate(proposal, policy_set, now=NOW)
            continue
        assert evaluate(proposal, policy_set, now=NOW) == expected


def test_the_benchmark_sets_decide_the_same_with_and_without_the_fast_path() -> None:
    policy_docs, capability_docs = bench_rules.rule_set(100)
    policy_set = compile_policy_set(
        [Policy.model_validate(p) for p in policy_docs], [Capability.model_validate(c) for c in capability_docs]
    )
    reference = _without_fast_path(policy_set)
    for doc in bench_rules.proposals(len(capability_docs)):
        proposal = Proposal.model_validate(doc)
        assert evaluate(proposal, policy_set, now=NOW) == evaluate(proposal, reference, now=NOW)


def test_the_examples_and_benchmark_conditions_take_the_fast_path() -> None:
    """Guards the speed: these conditions are the common shapes, and each compiles to Python."""
    policy_set = load_policy_set([ROOT / "examples" / "policies"])
    conditions = [rule.condition for policy in policy_set.policies for rule in policy.rules]
    conditions += [template["condition"] for template in bench_rules._TEMPLATES]
    slow = [c for c in conditions if compile_condition(c).fast is None and ".exists(" not in c]
    assert slow == []


def test_a_value_the_library_cannot_hold_fails_closed_with_the_reason() -> None:
    # size() of a string is outside the fast path, so the library needs a context, and it cannot hold a
    # lone surrogate: the rule is denied with the library's error instead of the decision raising.
    evaluation = decide(
        [policy("p", rule("ALLOW", "size(action.parameters.s) == 1"))],
        proposal(parameters={"s": "\ud800"}),
    )
    assert evaluation.outcome == "DENY"
    assert "fail-closed" in evaluation.reason and "p/0" in evaluation.reason


def test_an_unforeseen_error_on_the_fast_path_leaves_the_decision_to_the_library() -> None:
    policy_set = compile_policy_set([policy("p", rule("ALLOW", "action.parameters.n > 1"))], [cap()])

    def broken(scope: Any) -> bool:
        raise RuntimeError("a bug in a closure")

    compiled = policy_set.compiled("database.query")
    assert compiled is not None
    rules = tuple(
        dataclasses.replace(r, condition=dataclasses.replace(r.condition, fast=broken)) for r in compiled.rules
    )
    object.__setattr__(policy_set, "_index", {"database.query": dataclasses.replace(compiled, rules=rules)})
    assert evaluate(proposal(parameters={"n": 2}), policy_set, now=NOW).outcome == "ALLOW"
    assert evaluate(proposal(parameters={"n": 0}), policy_set, now=NOW).outcome == "DENY"
