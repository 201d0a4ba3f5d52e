"""Capabilities and policies in the fake: registered, stored, served back. No policy decides here."""

from __future__ import annotations

from collections.abc import Iterable

from aegis_sdk._wire.envelope import governance_error
from aegis_sdk.models import Capability, Policy, PolicyProblem
from aegis_sdk.testing._audit import append_audit
from aegis_sdk.testing._state import FakeState

__all__ = [
    "delete_policy",
    "get_capability",
    "get_policy",
    "put_capability",
    "put_policy",
    "validate_policies",
]


def put_capability(state: FakeState, capability: Capability) -> bool:
    """Register or replace; True when it was new."""
    with state.lock:
        created = capability.name not in state.capabilities
        state.capabilities[capability.name] = capability
        append_audit(state, "capability_registered", payload={"name": capability.name, "created": created})
        return created


def get_capability(state: FakeState, name: str) -> Capability:
    return state.lookup(state.capabilities, "capability", name)


def validate_policies(policies: Iterable[Policy]) -> list[PolicyProblem]:
    """What the fake checks of a policy set: unique policy names and rule ids, and
    `review_timeout_seconds` only on ESCALATE rules (conditions are not compiled)."""
    problems: list[PolicyProblem] = []
    seen: set[str] = set()
    for policy in policies:
        if policy.name in seen:
            problems.append(PolicyProblem(message=f"the policy name {policy.name!r} appears twice", policy=policy.name))
        seen.add(policy.name)
        rule_ids: set[str] = set()
        for index, rule in enumerate(policy.rules):
            rule_id = rule.id or str(index)
            if rule_id in rule_ids:
                problems.append(
                    PolicyProblem(message=f"the rule id {rule_id!r} appears twice", policy=policy.name, rule=rule_id)
                )
            rule_ids.add(rule_id)
            if rule.review_timeout_seconds is not None and rule.outcome != "ESCALATE":
                problems.append(
                    PolicyProblem(
                        message="review_timeout_seconds only applies to ESCALATE rules",
                        policy=policy.name,
                        rule=rule_id,
                    )
                )
    return problems


def put_policy(state: FakeState, policy: Policy, *, create: bool) -> bool:
    """Store a policy (`create`: only if new, else 409); True when it was new."""
    with state.lock:
        created = policy.name not in state.policies
        if create and not created:
            raise governance_error(
                409,
                "policy_conflict",
                f"A policy named {policy.name!r} already exists. Update it with PUT /api/v1/policies/"
                f"{policy.name}, or choose another name.",
                {"policy": policy.name},
            )
        problems = validate_policies([*(p for n, p in state.policies.items() if n != policy.name), policy])
        if problems:
            raise governance_error(
                422,
                "invalid_policy",
                "The policy set would not compile: " + "; ".join(p.message for p in problems[:5]) + ".",
                {"errors": [p.model_dump(mode="json") for p in problems]},
            )
        state.policies[policy.name] = policy
        append_audit(state, "policy_updated", payload={"name": policy.name, "created": created})
        return created


def get_policy(state: FakeState, name: str) -> Policy:
    return state.lookup(state.policies, "policy", name)


def delete_policy(state: FakeState, name: str) -> None:
    with state.lock:
        get_policy(state, name)
        del state.policies[name]
        append_audit(state, "policy_deleted", payload={"name": name})
