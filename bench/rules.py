"""Realistic generated policy sets of any size, and proposals that exercise them.

Shape of a set of N rules (the mix the issue asks for: globs, CEL conditions with regexes, numeric and
membership tests):

- capabilities `g<G>.c<I>` (one per `RULES_PER_CAPABILITY` rules), grouped ten to a group `g<G>`;
- per capability, rules cycling through eight templates: two regex DENY/REQUIRE_CONFIRMATION, a regex
  ALLOW for reads, numeric ESCALATE/ALLOW on `amount`, membership tests on the region and the actor,
  and a context test;
- per group, one glob rule `g<G>.*` (a kill switch in the context metadata), and one `*` rule for the set.

So a decision sees the rules of its own capability plus its group's glob and the global one: the cost of
a decision depends on the rules per capability, which an indexed engine keeps flat as the set grows.
`single_capability(n)` puts all n rules on one capability instead (the worst case for any index).
"""

from __future__ import annotations

from typing import Any

RULES_PER_CAPABILITY = 8
GROUP_SIZE = 10

PARAMETER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 1, "maxLength": 20000},
        "database": {"type": "string", "enum": ["development", "staging", "production"]},
        "amount": {"type": "number", "minimum": 0},
        "region": {"type": "string"},
    },
    "required": ["query"],
    "additionalProperties": False,
}

_TEMPLATES: list[dict[str, Any]] = [
    {
        "condition": r"action.parameters.query.matches(r'(?i)\b(drop|delete|truncate)\b')",
        "outcome": "DENY",
        "priority": 100,
        "reason": "Destructive SQL is never run by an agent",
    },
    {
        "condition": (
            "(!has(action.parameters.database) || action.parameters.database == 'production') && "
            r"action.parameters.query.matches(r'(?i)\b(insert|update|merge|alter|create|grant)\b')"
        ),
        "outcome": "REQUIRE_CONFIRMATION",
        "priority": 50,
        "reason": "Writes to production need the user's confirmation",
    },
    {
        "condition": r"action.parameters.query.matches(r'(?i)^\s*(select|with|explain|show)\b')",
        "outcome": "ALLOW",
        "constraints": {"max_rows": 1000},
        "reason": "Reads are allowed",
    },
    {
        "condition": "has(action.parameters.amount) && action.parameters.amount > 1000",
        "outcome": "ESCALATE",
        "priority": 10,
        "reason": "Large amounts need a reviewer",
    },
    {
        "condition": "has(action.parameters.amount) && action.parameters.amount <= 100",
        "outcome": "ALLOW",
        "reason": "Small amounts are fine",
    },
    {
        "condition": "has(action.parameters.region) && action.parameters.region in ['eu-west-1', 'eu-central-1']",
        "outcome": "ALLOW",
        "reason": "EU regions are allowed",
    },
    {
        "condition": "actor.id in ['intern-bot', 'untrusted-agent', 'sandbox-7']",
        "outcome": "DENY",
        "priority": 90,
        "reason": "These agents may not use this capability",
    },
    {
        "condition": (
            "has(context.metadata.env) && context.metadata.env == 'prod' && "
            "has(action.parameters.amount) && action.parameters.amount > 500"
        ),
        "outcome": "ESCALATE",
        "reason": "Large production amounts need a reviewer",
    },
]

_KILL_SWITCH = "has(context.metadata.kill_switch) && context.metadata.kill_switch == true"


def capability_name(index: int) -> str:
    return f"g{index // GROUP_SIZE}.c{index}"


def rule_set(n_rules: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(policies, capabilities) as plain documents (what a YAML file or the API would hold), n_rules rules."""
    if n_rules < 1:
        raise ValueError("n_rules must be at least 1")
    n_caps = max(1, n_rules // RULES_PER_CAPABILITY)
    capabilities = [
        {"name": capability_name(i), "risk_level": "medium", "parameter_schema": PARAMETER_SCHEMA}
        for i in range(n_caps)
    ]
    rules: list[dict[str, Any]] = []
    n_groups = (n_caps + GROUP_SIZE - 1) // GROUP_SIZE
    if n_rules >= 10:
        rules.append({"id": "global-kill-switch", "capability": "*", "condition": _KILL_SWITCH, "outcome": "DENY"})
        for g in range(n_groups):
            if len(rules) >= n_rules:
                break
            rules.append(
                {"id": f"g{g}-kill-switch", "capability": f"g{g}.*", "condition": _KILL_SWITCH, "outcome": "DENY"}
            )
    i = 0
    while len(rules) < n_rules:
        cap = i % n_caps
        template = _TEMPLATES[(i // n_caps) % len(_TEMPLATES)]
        rules.append({"id": f"r{i}", "capability": capability_name(cap), **template})
        i += 1
    # Split into policies of at most 100 rules (as people write them: one file per concern).
    policies = [{"name": f"bench-{k // 100}", "rules": rules[k : k + 100]} for k in range(0, len(rules), 100)]
    return policies, capabilities


def single_capability(n_rules: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """n_rules rules all on capability `g0.c0` (no index can skip any of them)."""
    capabilities = [{"name": capability_name(0), "risk_level": "medium", "parameter_schema": PARAMETER_SCHEMA}]
    rules = [
        {"id": f"r{i}", "capability": capability_name(0), **_TEMPLATES[i % len(_TEMPLATES)]} for i in range(n_rules)
    ]
    policies = [{"name": f"bench-{k // 100}", "rules": rules[k : k + 100]} for k in range(0, len(rules), 100)]
    return policies, capabilities


def proposals(n_caps: int, count: int = 64) -> list[dict[str, Any]]:
    """Proposals as sent to POST /propose, cycling through capabilities and parameter shapes."""
    shapes: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({"query": "SELECT id, email FROM users WHERE id = 42", "database": "production"}, {}, "support-bot"),
        ({"query": "DELETE FROM sessions WHERE expired", "database": "staging", "amount": 20}, {}, "ops-agent"),
        ({"query": "UPDATE orders SET status = 'shipped'", "amount": 700}, {"env": "prod"}, "billing-agent"),
        ({"query": "SHOW TABLES", "region": "eu-west-1", "amount": 50.5}, {}, "intern-bot"),
    ]
    out = []
    for k in range(count):
        params, metadata, actor = shapes[k % len(shapes)]
        out.append(
            {
                "actor": {"id": actor, "type": "ai-agent"},
                "action": {"capability": capability_name((k * 7) % n_caps), "parameters": params},
                "context": {"session_id": f"s-{k % 8}", "metadata": metadata},
            }
        )
    return out


def server_proposal() -> dict[str, Any]:
    """The proposal the server benchmarks send: the example SQL read (ALLOW with a row cap)."""
    return {
        "actor": {"id": "support-bot", "type": "ai-agent"},
        "action": {
            "capability": "database.query",
            "parameters": {"query": "SELECT id, email FROM users WHERE id = 42", "database": "production"},
        },
        "context": {"session_id": "bench-session", "metadata": {"ticket": "T-1"}},
    }
