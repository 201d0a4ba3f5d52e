"""Property tests: stricter rules never loosen, decisions are deterministic, loading never crashes."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import yaml
from engine_support import NOW, cap, compile_set, policy, proposal, rule
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegis_sdk.models import Policy
from aegis_server.engine import STRICTNESS, EngineConfig, PolicySetError, evaluate
from aegis_server.policies.files import parse_policy_text

OUTCOMES = ["ALLOW", "DENY", "ESCALATE", "REQUIRE_CONFIRMATION"]
CAPABILITIES = ["db.query", "db.admin", "pay.refund"]
CONDITIONS = [
    "true",
    "false",
    "action.parameters.n > 5",
    "action.parameters.n <= 5",
    "action.parameters.q.matches('(?i)drop')",
    "actor.type == 'human'",
    "action.parameters.missing == 1",  # errors at evaluation time
    "has(context.metadata.flag) && context.metadata.flag",
    "time.hour < 12",
]

rules_strategy = st.lists(
    st.builds(
        lambda outcome, condition, capability, priority, risk: rule(
            outcome, condition, capability=capability, priority=priority, risk=risk
        ),
        st.sampled_from(OUTCOMES),
        st.sampled_from(CONDITIONS),
        st.sampled_from([*CAPABILITIES, "db.*", "*"]),
        st.integers(-5, 5),
        st.none() | st.floats(-0.5, 0.5, allow_nan=False),
    ),
    max_size=8,
)
proposal_strategy = st.builds(
    lambda capability, n, q, actor_type, flag: proposal(
        capability, {"n": n, "q": q}, actor_type=actor_type, metadata={} if flag is None else {"flag": flag}
    ),
    st.sampled_from(CAPABILITIES),
    st.integers(-10, 20),
    st.sampled_from(["select 1", "DROP TABLE x", ""]),
    st.sampled_from(["ai-agent", "human"]),
    st.none() | st.booleans(),
)
now_strategy = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(timezone.utc)
)
CAPS = [cap(name, risk_level=level) for name, level in zip(CAPABILITIES, ["medium", "critical", "high"], strict=True)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rules_strategy, extra=rules_strategy, prop=proposal_strategy, now=now_strategy)
def test_adding_deny_rules_never_loosens_a_decision(
    rules: list[Any], extra: list[Any], prop: Any, now: datetime
) -> None:
    base = compile_set([policy("base", *rules)], CAPS)
    denies = [r.model_copy(update={"outcome": "DENY", "review_timeout_seconds": None}) for r in extra]
    stricter = compile_set([policy("base", *rules), policy("more", *denies)], CAPS)
    before = evaluate(prop, base, now=now)
    after = evaluate(prop, stricter, now=now)
    assert STRICTNESS[after.outcome] >= STRICTNESS[before.outcome]
    if after.outcome == "ALLOW":
        assert before.outcome == "ALLOW"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rules_strategy, prop=proposal_strategy, now=now_strategy, threshold=st.floats(0, 1))
def test_the_same_input_gives_the_same_decision(rules: list[Any], prop: Any, now: datetime, threshold: float) -> None:
    config = EngineConfig(escalate_threshold=threshold)
    policies = [policy("p", *rules)]
    first = evaluate(prop, compile_set(policies, CAPS), now=now, config=config)
    reordered = compile_set([Policy(name="p", rules=list(rules))], list(reversed(CAPS)))
    for _ in range(2):
        again = evaluate(prop.model_copy(deep=True), reordered, now=now, config=config)
        assert again == first
    assert 0.0 <= first.risk_score <= 1.0
    if first.outcome == "ALLOW":
        assert first.risk_score <= threshold


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rules_strategy, prop=proposal_strategy)
def test_an_allow_always_comes_from_a_matching_allow_rule(rules: list[Any], prop: Any) -> None:
    result = evaluate(prop, compile_set([policy("p", *rules)], CAPS), now=NOW)
    if result.outcome == "ALLOW":
        assert result.policy_ids
        assert "fail-closed" not in result.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=300))
def test_loading_arbitrary_text_never_crashes(text: str) -> None:
    try:
        parse_policy_text(text, "fuzz.yaml")
    except PolicySetError as exc:
        assert exc.problems
        assert all(problem.message for problem in exc.problems)
        assert str(exc).startswith("the policy set was rejected")


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)
policyish = st.fixed_dictionaries(
    {"name": st.text(max_size=10) | st.sampled_from(["p", "q"])},
    optional={
        "rules": st.lists(
            st.dictionaries(
                st.sampled_from(
                    ["id", "capability", "condition", "outcome", "priority", "risk", "constraints", "junk"]
                ),
                yaml_values | st.sampled_from(OUTCOMES + CONDITIONS + ["*", "db.[", "1 +"]),
                max_size=6,
            ),
            max_size=3,
        )
        | yaml_values,
        "enabled": yaml_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=yaml_values | policyish | st.fixed_dictionaries({"policies": st.lists(policyish, max_size=3)}))
def test_loading_arbitrary_yaml_structures_never_crashes(document: Any) -> None:
    text = yaml.safe_dump(document)
    try:
        docs = parse_policy_text(text, "fuzz.yaml")
        compile_set(docs.policies, CAPS)
    except PolicySetError as exc:
        assert exc.problems and all(p.message for p in exc.problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    condition=st.text(
        alphabet=st.sampled_from(list("action.parameters q n ()'\"!&|<>=+-*/[]{}0123xmatches,")), max_size=40
    )
)
def test_condition_compile_errors_are_clear(condition: str) -> None:
    try:
        policy_set = compile_set([policy("p", rule("ALLOW", condition, id="c"))], CAPS)
    except PolicySetError as exc:
        assert len(exc.problems) == 1
        problem = exc.problems[0]
        assert (problem.policy, problem.rule) == ("p", "c")
        assert "condition" in problem.message
        return
    result = evaluate(proposal("db.query", {"n": 1, "q": "x"}), policy_set, now=NOW)
    assert result.outcome in ("ALLOW", "DENY", "ESCALATE")
    if "fail-closed" in result.reason:
        assert result.outcome == "DENY" and "p/c" in result.reason


PROJECTION_CONDITIONS = [
    "has(action.parameters.q) && action.parameters.q == 'x'",
    "size(action.parameters) > 1",
    "action.parameters.items.exists(i, i > 2)",
    "action.parameters.items[0] == 1",
    "'q' in action.parameters",
    "action.parameters.nested.a.b == 1",
    "has(action.parameters.nested.a)",
    "action.parameters.q.size() == 1",
    "action.capability == 'db.query' && action.resource == null",
    "context.metadata == {}",
    "actor.id.startsWith('b')",
    "time.now > timestamp('2024-01-01T00:00:00Z')",
    "[1, 2].exists(action, action == 2)",
]
param_values = st.fixed_dictionaries(
    {},
    optional={
        "q": st.sampled_from(["x", "yy", 3]),
        "items": st.lists(st.integers(0, 5), max_size=3),
        "nested": st.sampled_from([{"a": {"b": 1}}, {"a": 2}, {}, "str"]),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    conditions=st.lists(st.sampled_from(PROJECTION_CONDITIONS + CONDITIONS), min_size=1, max_size=4),
    params=param_values,
)
def test_projected_scope_decides_like_the_full_scope(conditions: list[str], params: dict[str, Any]) -> None:
    import dataclasses

    policy_set = compile_set([policy("p", *(rule("ALLOW", c, capability="db.query") for c in conditions))], CAPS)
    full_index = {
        name: dataclasses.replace(compiled, projection={})  # type: ignore[union-attr]
        for name in CAPABILITIES
        if (compiled := policy_set.compiled(name)) is not None
    }
    unprojected = dataclasses.replace(policy_set, _index=full_index)
    prop = proposal("db.query", params)
    assert evaluate(prop, policy_set, now=NOW) == evaluate(prop, unprojected, now=NOW)
