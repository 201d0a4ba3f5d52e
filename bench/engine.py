"""Engine: decisions per second and p50/p99 of `evaluate()` for 1 to 10,000 rules, and load/compile time.

Baseline of the same run: the same proposals through `Proposal.model_validate` only (the part of a
decision that is not the engine), so a noisy machine shows in both numbers.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aegis_sdk.models import Capability, Policy, Proposal
from aegis_server.engine import compile_policy_set, evaluate
from aegis_server.engine._schema import compile_schema
from aegis_server.policies.files import load_policy_set

from . import rules
from ._common import summary_us

NOW = datetime(2025, 1, 6, 12, 0, tzinfo=timezone.utc)


def _time_decisions(proposals: list[Proposal], policy_set: Any, n: int) -> list[int]:
    samples: list[int] = []
    count = len(proposals)
    for k in range(min(n // 10, 2000)):  # warm-up
        evaluate(proposals[k % count], policy_set, now=NOW)
    gc.collect()
    clock = time.perf_counter_ns
    for k in range(n):
        proposal = proposals[k % count]
        start = clock()
        evaluate(proposal, policy_set, now=NOW)
        samples.append(clock() - start)
    return samples


def _case(n_rules: int, decisions: int, *, single: bool = False) -> dict[str, Any]:
    policy_docs, capability_docs = (rules.single_capability if single else rules.rule_set)(n_rules)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.json"
        path.write_text(json.dumps({"capabilities": capability_docs, "policies": policy_docs}))
        start = time.perf_counter()
        load_policy_set([path])
        load_s = time.perf_counter() - start
    policies = [Policy.model_validate(p) for p in policy_docs]
    capabilities = [Capability.model_validate(c) for c in capability_docs]
    start = time.perf_counter()
    policy_set = compile_policy_set(policies, capabilities)
    compile_s = time.perf_counter() - start
    proposals = [Proposal.model_validate(p) for p in rules.proposals(len(capability_docs))]
    samples = _time_decisions(proposals, policy_set, decisions)
    stats = summary_us(samples)
    outcomes: dict[str, int] = {}
    for p in proposals:
        outcome = evaluate(p, policy_set, now=NOW).outcome
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    candidates = max(len(policy_set.compiled(c["name"]).rules) for c in capability_docs)  # type: ignore[union-attr]
    return {
        "rules": n_rules,
        "layout": "all on one capability" if single else f"{rules.RULES_PER_CAPABILITY} per capability + globs",
        "capabilities": len(capability_docs),
        "max_rules_per_capability": candidates,
        "load_s": round(load_s, 3),
        "compile_s": round(compile_s, 3),
        "decisions_per_s": round(1e6 / stats["mean_us"]) if stats["mean_us"] else 0,
        **stats,
        "outcomes": outcomes,
    }


def _baseline(decisions: int) -> dict[str, Any]:
    docs = rules.proposals(10)
    clock = time.perf_counter_ns
    samples = []
    for k in range(decisions):
        doc = docs[k % len(docs)]
        start = clock()
        Proposal.model_validate(doc)
        samples.append(clock() - start)
    return summary_us(samples)


_SCHEMAS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "common keywords (bench rules)": (
        rules.PARAMETER_SCHEMA,
        {"query": "SELECT * FROM orders", "database": "staging", "amount": 12.5},
    ),
    "pattern + x-sensitive": (
        {
            "type": "object",
            "properties": {
                "card": {"type": "string", "pattern": "^[0-9]{12,19}$", "x-sensitive": True},
                "amount": {"type": "number", "exclusiveMinimum": 0},
            },
            "required": ["card", "amount"],
        },
        {"card": "4111111111111111", "amount": 10},
    ),
    "$ref + anyOf": (
        {
            "type": "object",
            "$defs": {"money": {"type": "number", "minimum": 0}},
            "properties": {
                "amount": {"$ref": "#/$defs/money"},
                "id": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
        },
        {"amount": 3, "id": "a-1"},
    ),
}


def _schema_cases(n: int) -> list[dict[str, Any]]:
    """`CompiledSchema.validate` of valid parameters (the check every proposal of a capability with a schema pays)."""
    out = []
    clock = time.perf_counter_ns
    for name, (schema, parameters) in _SCHEMAS.items():
        compiled = compile_schema(schema)
        for _ in range(min(n // 10, 2000)):
            compiled.validate("bench", parameters)
        samples = []
        for _ in range(n):
            start = clock()
            compiled.validate("bench", parameters)
            samples.append(clock() - start)
        out.append({"schema": name, **summary_us(samples)})
    return out


def run(quick: bool = False) -> dict[str, Any]:
    sizes = [1, 100, 1_000, 10_000]
    decisions = 5_000 if quick else 20_000
    cases = [_case(n, decisions) for n in sizes]
    cases.append(_case(100, decisions // 2, single=True))
    baseline = _baseline(decisions)
    by_rules = {c["rules"]: c for c in cases if "per capability" in c["layout"]}
    p50_100 = by_rules[100]["p50_us"]
    return {
        "decisions_per_case": decisions,
        "cases": cases,
        "baseline_proposal_model_validate": baseline,
        "schema_validate": _schema_cases(decisions),
        "ratio_p50_10000_over_100": round(by_rules[10_000]["p50_us"] / p50_100, 2) if p50_100 else None,
        "targets": {
            "p50_100_rules_us<=30": p50_100 <= 30,
            "p50_10000_rules<=3x_100": by_rules[10_000]["p50_us"] <= 3 * p50_100,
        },
    }
