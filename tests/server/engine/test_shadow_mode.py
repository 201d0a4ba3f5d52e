"""Shadow mode in the engine: a shadow rule (by its own `mode` or its policy's) is evaluated on every proposal
and recorded as what the decision would have been had it been enforced, and never changes the decision."""

from __future__ import annotations

from typing import Any

import pytest
from engine_support import NOW, cap, compile_set, decide, proposal, rule

from aegis_sdk.models import Policy, PolicyRule, ShadowOutcome
from aegis_server.engine import EngineConfig, Evaluation, RuleMatches, evaluate, evaluate_traced

# Nested comprehensions over one list: estimated far over the default budget on 3,000 items.
COSTLY = "action.parameters.to.exists(r, action.parameters.to.exists(s, r == s + 'x'))"
MANY = {"to": [f"r{i}@x.io" for i in range(3000)]}


def shadow_policy(name: str, *rules: PolicyRule) -> Policy:
    return Policy(name=name, rules=list(rules), mode="shadow")


def enforced(name: str, *rules: PolicyRule) -> Policy:
    return Policy(name=name, rules=list(rules))


def without_shadow(evaluation: Evaluation) -> dict[str, Any]:
    """Everything the enforced decision says."""
    return {
        "outcome": evaluation.outcome,
        "reason": evaluation.reason,
        "risk_score": evaluation.risk_score,
        "constraints": evaluation.constraints,
        "policy_ids": evaluation.policy_ids,
        "review_timeout_seconds": evaluation.review_timeout_seconds,
        "audit_parameters": evaluation.audit_parameters,
    }


BASE = [
    enforced(
        "base",
        rule("ALLOW", id="read", constraints={"max_rows": 100}, risk=0.1),
        rule("ESCALATE", "action.parameters.n > 10", id="big", review_timeout_seconds=60),
    )
]

SHADOW_RULES = [
    rule("DENY", "action.parameters.n > 5", id="deny-over-5", risk=0.4, constraints={"x": 1}),
    rule("REQUIRE_CONFIRMATION", id="confirm-all", constraints={"max_rows": 1}),
    rule("ALLOW", "action.parameters.missing == 1", id="fails"),
    rule("DENY", "action.parameters.n > 1000", id="never"),
]


@pytest.mark.parametrize("n", [1, 7, 20])
@pytest.mark.parametrize("how", ["policy", "rule"])
def test_a_shadow_rule_changes_nothing_of_the_enforced_decision(n: int, how: str) -> None:
    if how == "policy":
        shadow = [shadow_policy("try", *SHADOW_RULES)]
    else:
        shadow = [enforced("try", *(r.model_copy(update={"mode": "shadow"}) for r in SHADOW_RULES))]
    data = proposal(parameters={"n": n})
    alone = decide(BASE, data)
    together = decide(BASE + shadow, data)
    assert without_shadow(together) == without_shadow(alone)
    assert alone.shadow == ()
    assert together.shadow  # the shadow rules did run


def test_entries_for_matching_and_failing_rules_none_for_the_others() -> None:
    result = decide([*BASE, shadow_policy("try", *SHADOW_RULES)], proposal(parameters={"n": 7}))
    assert result.outcome == "ALLOW"
    assert [entry.policy_id for entry in result.shadow] == ["try/deny-over-5", "try/confirm-all", "try/fails"]
    by_id = {entry.policy_id: entry for entry in result.shadow}
    assert by_id["try/deny-over-5"].outcome == "DENY"
    assert by_id["try/deny-over-5"].reason.startswith("DENY by try/deny-over-5")
    assert by_id["try/confirm-all"].outcome == "REQUIRE_CONFIRMATION"
    assert by_id["try/fails"].outcome == "DENY"
    assert "fail-closed" in by_id["try/fails"].reason and "try/fails" in by_id["try/fails"].reason


def test_an_entry_is_the_decision_had_the_rule_been_enforced_with_the_enforced_rules() -> None:
    data = proposal(parameters={"n": 7})
    result = decide([*BASE, shadow_policy("try", *SHADOW_RULES[:2])], data)
    for shadow_rule in SHADOW_RULES[:2]:
        promoted = decide([*BASE, enforced("try", shadow_rule)], data)
        entry = next(e for e in result.shadow if e.policy_id == f"try/{shadow_rule.id}")
        assert entry == ShadowOutcome(policy_id=entry.policy_id, outcome=promoted.outcome, reason=promoted.reason)


def test_a_shadow_rule_that_would_not_change_the_outcome_still_has_an_entry() -> None:
    result = decide([*BASE, shadow_policy("try", rule("ALLOW", id="also-allow"))], proposal(parameters={"n": 1}))
    assert result.outcome == "ALLOW"
    (entry,) = result.shadow
    assert entry.outcome == "ALLOW" and "also ALLOW: try/also-allow" in entry.reason


def test_an_over_budget_shadow_rule_has_an_entry_and_leaves_the_decision_alone() -> None:
    policies = [
        enforced("mail", rule("ALLOW", capability="mail.send", id="send")),
        shadow_policy("try", rule("DENY", COSTLY, capability="mail.send", id="costly")),
    ]
    result = decide(policies, proposal("mail.send", MANY), capabilities=[cap("mail.send")])
    assert result.outcome == "ALLOW" and result.policy_ids == ["mail/send"]
    (entry,) = result.shadow
    assert entry.policy_id == "try/costly" and entry.outcome == "DENY"
    assert "evaluation_budget_exceeded" in entry.reason and "try/costly" in entry.reason


def test_the_shadow_rules_have_a_budget_of_their_own() -> None:
    # An enforced rule that spends most of the budget, then a shadow rule that needs most of it too: each is
    # within its own budget, so the decision is the enforced one's and the shadow entry is a real evaluation.
    condition = "action.parameters.l.exists(a, action.parameters.l.exists(b, a == b + 100000))"
    data = proposal("red.cost", {"l": list(range(100))})
    capability = [cap("red.cost")]
    one = decide(
        [enforced("e", rule("ALLOW", f"!({condition})", capability="red.cost"))], data, capabilities=capability
    )
    assert one.outcome == "ALLOW", one.reason
    config = EngineConfig(condition_cost_budget=_budget_for_one(condition, data))
    policies = [
        enforced("e", rule("ALLOW", f"!({condition})", capability="red.cost", id="costly-allow")),
        shadow_policy("s", rule("DENY", condition.replace("100000", "100001"), capability="red.cost", id="twin")),
    ]
    result = decide(policies, data, capabilities=capability, config=config)
    assert result.outcome == "ALLOW", result.reason
    assert result.shadow == ()  # the twin was evaluated within its own budget, and did not match
    # Had the two shared one budget, the second would have been over it.
    both = decide(
        [enforced("e", policies[0].rules[0], policies[1].rules[0].model_copy(update={"mode": None}))],
        data,
        capabilities=capability,
        config=config,
    )
    assert "evaluation_budget_exceeded" in both.reason


def test_what_a_shadow_rule_reads_adds_nothing_to_the_enforced_rules_cost() -> None:
    # The library is handed the fields the rules read, and the enforced rules' budget is charged for copying them;
    # a shadow rule reading a large field must not make that copy larger (it once turned an ALLOW into a DENY).
    condition = "action.parameters.tags.exists(t, t == 'urgent')"
    data = proposal("red.cost", {"tags": ["urgent"], "blob": [{"k": 0}] * 2000})
    capability = [cap("red.cost")]
    alone = [enforced("e", rule("ALLOW", condition, capability="red.cost", id="tagged"))]
    budget = _smallest_budget(alone, data, capability)
    config = EngineConfig(condition_cost_budget=budget)
    with_shadow = [*alone, shadow_policy("s", rule("DENY", "size(action.parameters.blob) > 10", capability="red.cost"))]
    result = decide(with_shadow, data, capabilities=capability, config=config)
    assert without_shadow(result) == without_shadow(decide(alone, data, capabilities=capability, config=config))
    assert result.outcome == "ALLOW", result.reason
    (entry,) = result.shadow
    assert entry.outcome == "DENY" and "evaluation_budget_exceeded" not in entry.reason


def _smallest_budget(policies: list[Policy], data: Any, capabilities: Any) -> int:
    """The smallest budget under which `policies` ALLOW `data` (found by bisection on the engine's answer)."""
    low, high = 1, 10**9
    while low < high:
        middle = (low + high) // 2
        result = decide(policies, data, capabilities=capabilities, config=EngineConfig(condition_cost_budget=middle))
        if result.outcome == "ALLOW":
            high = middle
        else:
            low = middle + 1
    return low


def _budget_for_one(condition: str, data: Any) -> int:
    """The smallest budget that evaluates `condition` once (found by bisection on the engine's answer)."""
    policies = [enforced("e", rule("ALLOW", f"!({condition})", capability="red.cost"))]
    low, high = 1, 10**9
    while low < high:
        middle = (low + high) // 2
        result = decide(
            policies, data, capabilities=[cap("red.cost")], config=EngineConfig(condition_cost_budget=middle)
        )
        if result.outcome == "ALLOW":
            high = middle
        else:
            low = middle + 1
    return low


def test_a_costly_shadow_rule_leaves_the_rest_of_the_budget_to_the_next_shadow_rules() -> None:
    policies = [
        enforced("mail", rule("ALLOW", capability="mail.send", id="send")),
        shadow_policy(
            "try",
            rule("DENY", COSTLY, capability="mail.send", id="a-costly"),
            # Run by the library (no fast path), and well within the budget on its own.
            rule("DENY", "action.parameters.to.exists(r, r.endsWith('@x.io'))", capability="mail.send", id="b-cheap"),
        ),
    ]
    result = decide(policies, proposal("mail.send", MANY), capabilities=[cap("mail.send")])
    by_id = {entry.policy_id: entry for entry in result.shadow}
    assert "evaluation_budget_exceeded" in by_id["try/a-costly"].reason
    assert by_id["try/b-cheap"].outcome == "DENY"
    assert by_id["try/b-cheap"].reason.startswith("DENY by try/b-cheap")


def test_every_failing_shadow_rule_names_its_own_error() -> None:
    # The enforced evaluation words only the first failure; each shadow entry is read alone and needs its own.
    policies = [
        enforced("e", rule("ALLOW", id="a")),
        shadow_policy(
            "s", rule("DENY", "action.parameters.x > 1", id="f1"), rule("DENY", "action.parameters.y > 1", id="f2")
        ),
    ]
    result = decide(policies, proposal(parameters={}))
    by_id = {entry.policy_id: entry for entry in result.shadow}
    assert "no such key 'x'" in by_id["s/f1"].reason
    assert "no such key 'y'" in by_id["s/f2"].reason


def test_a_failing_shadow_rule_keeps_sensitive_values_out_of_its_reason() -> None:
    schema = {"type": "object", "properties": {"card": {"type": "string", "x-sensitive": True}}}
    policies = [
        enforced("pay", rule("ALLOW", capability="pay.card", id="ok")),
        shadow_policy("s", rule("DENY", "int(action.parameters.card) > 0", capability="pay.card", id="bad")),
    ]
    result = decide(
        policies, proposal("pay.card", {"card": "4111-secret"}), capabilities=[cap("pay.card", schema=schema)]
    )
    (entry,) = result.shadow
    assert entry.outcome == "DENY" and "fail-closed" in entry.reason
    assert "4111" not in entry.reason and "secret" not in entry.reason


def test_an_explicit_enforce_rule_in_a_shadow_policy_is_enforced() -> None:
    policies = [
        enforced("base", rule("ALLOW", id="read")),
        shadow_policy("mixed", rule("DENY", id="enforce-me", mode="enforce"), rule("ESCALATE", id="just-try")),
    ]
    result = decide(policies, proposal())
    assert result.outcome == "DENY" and result.policy_ids[0] == "mixed/enforce-me"
    assert [(entry.policy_id, entry.outcome) for entry in result.shadow] == [("mixed/just-try", "DENY")]
    assert "DENY by mixed/enforce-me" in result.shadow[0].reason  # with the enforced rules, the DENY still wins


def test_a_shadow_rule_in_an_enforced_policy_is_not_enforced() -> None:
    policies = [enforced("p", rule("ALLOW", id="read"), rule("DENY", id="try", mode="shadow"))]
    result = decide(policies, proposal())
    assert result.outcome == "ALLOW" and result.policy_ids == ["p/read"]
    assert [(entry.policy_id, entry.outcome) for entry in result.shadow] == [("p/try", "DENY")]


def test_only_shadow_rules_for_a_capability_is_default_deny_with_entries() -> None:
    result = decide([shadow_policy("try", rule("ALLOW", id="allow-all"))], proposal())
    assert result.outcome == "DENY" and "default-deny" in result.reason and result.policy_ids == []
    (entry,) = result.shadow
    assert entry.policy_id == "try/allow-all" and entry.outcome == "ALLOW"


def test_only_non_matching_shadow_rules_is_default_deny_without_entries() -> None:
    result = decide([shadow_policy("try", rule("ALLOW", "action.parameters.n > 5"))], proposal(parameters={"n": 1}))
    assert result.outcome == "DENY" and "default-deny" in result.reason
    assert result.shadow == ()


def test_a_disabled_shadow_policy_is_not_evaluated() -> None:
    disabled = Policy(name="try", rules=[rule("DENY")], mode="shadow", enabled=False)
    result = decide([*BASE, disabled], proposal(parameters={"n": 1}))
    assert result.shadow == ()


def test_the_set_counts_shadow_rules_and_its_digest_changes_with_the_mode() -> None:
    shadow = compile_set([*BASE, shadow_policy("try", *SHADOW_RULES)])
    promoted = compile_set([*BASE, enforced("try", *SHADOW_RULES)])
    one_rule = compile_set(
        [*BASE, enforced("try", SHADOW_RULES[0].model_copy(update={"mode": "shadow"}), *SHADOW_RULES[1:])]
    )
    assert shadow.rule_count == promoted.rule_count == one_rule.rule_count == 6
    assert (shadow.shadow_rule_count, promoted.shadow_rule_count, one_rule.shadow_rule_count) == (4, 0, 1)
    assert len({shadow.digest, promoted.digest, one_rule.digest}) == 3


def test_traced_evaluation_reports_the_rules_reached() -> None:
    policy_set = compile_set([*BASE, shadow_policy("try", *SHADOW_RULES)])
    evaluation, matches = evaluate_traced(proposal(parameters={"n": 7}), policy_set, now=NOW)
    assert evaluation == evaluate(proposal(parameters={"n": 7}), policy_set, now=NOW)
    assert matches == RuleMatches(matched=("base/read", "try/deny-over-5", "try/confirm-all"), failed=("try/fails",))
    unknown_rules = compile_set([enforced("p", rule("ALLOW", capability="other.thing"))], [cap(), cap("other.thing")])
    assert evaluate_traced(proposal(), unknown_rules, now=NOW)[1] == RuleMatches()
