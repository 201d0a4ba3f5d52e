"""Builders shared by the engine tests."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from aegis_sdk.models import Capability, Policy, PolicyRule, Proposal
from aegis_server.engine import EngineConfig, Evaluation, PolicySet, compile_policy_set, evaluate

NOW = datetime(2025, 1, 6, 12, 30, tzinfo=timezone.utc)  # a Monday


def cap(name: str = "database.query", risk_level: str = "medium", schema: dict[str, Any] | None = None) -> Capability:
    return Capability.model_validate(
        {"name": name, "risk_level": risk_level, "parameter_schema": schema or {"type": "object"}}
    )


def rule(
    outcome: str = "ALLOW", condition: str = "true", capability: str = "database.query", **extra: Any
) -> PolicyRule:
    return PolicyRule.model_validate({"capability": capability, "condition": condition, "outcome": outcome, **extra})


def policy(name: str, *rules: PolicyRule, enabled: bool = True) -> Policy:
    return Policy(name=name, rules=list(rules), enabled=enabled)


def compile_set(policies: list[Policy], capabilities: list[Capability] | None = None) -> PolicySet:
    return compile_policy_set(policies, capabilities if capabilities is not None else [cap()])


def proposal(
    capability: str = "database.query",
    parameters: dict[str, Any] | None = None,
    *,
    actor: str = "bot-1",
    actor_type: str = "ai-agent",
    metadata: dict[str, Any] | None = None,
    session_id: str | None = None,
    resource: str | None = None,
) -> Proposal:
    return Proposal.model_validate(
        {
            "actor": {"id": actor, "type": actor_type},
            "action": {"capability": capability, "parameters": parameters or {}, "resource": resource},
            "context": {"session_id": session_id, "metadata": metadata or {}},
        }
    )


def decide(
    policies: list[Policy],
    prop: Proposal | None = None,
    *,
    capabilities: list[Capability] | None = None,
    config: EngineConfig | None = None,
    now: datetime = NOW,
) -> Evaluation:
    policy_set = compile_set(policies, capabilities)
    return evaluate(prop or proposal(), policy_set, now=now, config=config or EngineConfig())
