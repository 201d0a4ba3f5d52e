"""Compiling a policy set: every problem is reported, with policy, rule and the compiler's message."""

from __future__ import annotations

import pytest
from engine_support import cap, compile_set, policy, rule

from aegis_server.engine import PolicySetError, compile_policy_set


def _problems(policies: list, capabilities: list | None = None) -> list:  # type: ignore[type-arg]
    with pytest.raises(PolicySetError) as info:
        compile_set(policies, capabilities)
    return info.value.problems


@pytest.mark.parametrize(
    ("condition", "fragment"),
    [
        ("action.parameters.n >", "CEL syntax error"),
        ("acton.parameters.n > 1", "unknown variable 'acton' (did you mean 'action'?)"),
        ("user == 'x'", "unknown variable 'user'"),
        ("action.parameters.q.matches('(unclosed')", "invalid regular expression"),
        ("action.parameters.q.matches(r'[z-a]')", "invalid regular expression"),
        ("   ", "the condition is empty"),
    ],
)
def test_bad_conditions_are_rejected_with_the_compiler_message(condition: str, fragment: str) -> None:
    problems = _problems([policy("sql", rule("DENY", condition, id="bad"))])
    assert len(problems) == 1
    assert (problems[0].policy, problems[0].rule) == ("sql", "bad")
    assert fragment in problems[0].message


def test_macro_bound_names_are_not_unknown_variables() -> None:
    compile_set([policy("p", rule("ALLOW", "action.parameters.xs.all(x, x > 0) && [1].map(y, y * 2)[0] == 2"))])


@pytest.mark.parametrize("glob", ["data base.*", "db.[abc", "db.]", "db.[]", "db.[!]", "db.[[a]]", "db/query"])
def test_bad_globs_are_rejected(glob: str) -> None:
    problems = _problems([policy("p", rule("ALLOW", capability=glob))])
    assert "capability glob" in problems[0].message


def test_duplicate_policy_names_and_rule_ids_are_rejected() -> None:
    problems = _problems(
        [
            policy("p", rule("ALLOW", id="a"), rule("DENY", id="a")),
            policy("p", rule("ALLOW")),
            policy("q", rule("ALLOW", id="1"), rule("DENY")),  # explicit id "1" clashes with index 1
        ]
    )
    messages = [p.message for p in problems]
    assert any("two policies are named 'p'" in m for m in messages)
    assert any("duplicate rule id 'a'" in m for m in messages)
    assert any("duplicate rule id '1'" in m for m in messages)


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        [
            policy("a", rule("ALLOW", "nope("), rule("DENY", capability="x y")),
            policy("b", rule("ALLOW", review_timeout_seconds=5), rule("ALLOW", id="has/slash")),
        ],
        [cap(), cap(), cap("bad.schema", schema={"type": "nonsense"})],
    )
    assert len(problems) == 6
    text = "\n".join(p.message for p in problems)
    assert "defined twice" in text
    assert "not a valid JSON Schema" in text
    assert "review_timeout_seconds only applies to ESCALATE" in text
    assert "without '/'" in text


def test_non_json_constraints_are_rejected() -> None:
    problems = _problems([policy("p", rule("ALLOW", constraints={"limit": float("nan")}))])
    assert "constraints must be JSON data" in problems[0].message


def test_sources_name_the_file() -> None:
    with pytest.raises(PolicySetError) as info:
        compile_policy_set([policy("p", rule("ALLOW", "bad ("))], [cap()], sources={"p": "policies/p.yaml"})
    assert info.value.problems[0].source == "policies/p.yaml"
    assert "policies/p.yaml: policy 'p' rule '0': condition" in str(info.value)


def test_disabled_policies_are_still_validated() -> None:
    assert _problems([policy("off", rule("ALLOW", "bad ("), enabled=False)])


def test_digest_is_independent_of_input_order_and_changes_with_content() -> None:
    a, b = policy("a", rule("ALLOW")), policy("b", rule("DENY"))
    caps = [cap("x.one"), cap("x.two")]
    first = compile_set([a, b], caps)
    assert first.digest == compile_set([b, a], list(reversed(caps))).digest
    assert first.digest != compile_set([a], caps).digest
    assert first.digest.startswith("sha256:")


def test_summary_fields_and_warnings() -> None:
    policy_set = compile_set(
        [policy("a", rule("ALLOW"), rule("DENY", capability="nothing.*")), policy("off", rule("ALLOW"), enabled=False)]
    )
    assert policy_set.rule_count == 2
    assert [p.name for p in policy_set.policies] == ["a", "off"]
    assert [p.name for p in policy_set.enabled_policies] == ["a"]
    assert list(policy_set.capabilities) == ["database.query"]
    assert [(w.policy, w.rule) for w in policy_set.warnings] == [("a", "1")]
    assert "matches no registered capability" in policy_set.warnings[0].message


def test_rules_are_indexed_by_capability() -> None:
    policy_set = compile_set(
        [policy("p", rule("ALLOW", capability="a.x"), rule("DENY", capability="a.*"), rule("ALLOW", capability="b.x"))],
        [cap("a.x"), cap("a.y"), cap("b.x")],
    )
    candidates = {name: [r.policy_id for r in policy_set.compiled(name).rules] for name in ("a.x", "a.y", "b.x")}  # type: ignore[union-attr]
    assert candidates == {"a.x": ["p/0", "p/1"], "a.y": ["p/1"], "b.x": ["p/2"]}
    assert policy_set.compiled("c.z") is None
