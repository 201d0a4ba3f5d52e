"""What changed between two recorded policy-set versions: policies and capabilities added, removed or
changed (for a policy: its rules by id, its mode and whether it is enabled), where each came from, and a
unified diff of a canonical YAML rendering of both sets."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from aegis_sdk.models import Capability, Policy, PolicyRule
from aegis_server.store.policy_versions import PolicyVersion

__all__ = ["CapabilityChange", "PolicyChange", "PolicySetDiff", "RuleChange", "canonical_yaml", "diff_versions"]

Change = Literal["added", "removed", "changed"]


class RuleChange(BaseModel):
    """A rule of a changed policy, by id (a rule without an id is known by its index)."""

    id: str
    change: Change


class PolicyChange(BaseModel):
    name: str
    change: Change
    source_before: str | None = Field(description="'api' or the file that defined it (null: absent).")
    source_after: str | None
    fields: list[str] = Field(default_factory=list, description="The policy's fields that differ, 'source' too.")
    mode_before: str | None = None
    mode_after: str | None = None
    enabled_before: bool | None = None
    enabled_after: bool | None = None
    rules: list[RuleChange] = Field(default_factory=list)


class CapabilityChange(BaseModel):
    name: str
    change: Change
    source_before: str | None
    source_after: str | None
    fields: list[str] = Field(default_factory=list, description="The capability's fields that differ, 'source' too.")


class PolicySetDiff(BaseModel):
    """From version `from_version` to `to_version`."""

    from_version: int
    to_version: int
    from_digest: str
    to_digest: str
    identical: bool = Field(description="Same policies, capabilities and sources.")
    policies: list[PolicyChange] = Field(default_factory=list)
    capabilities: list[CapabilityChange] = Field(default_factory=list)
    text: str = Field(description="Unified diff of the canonical YAML of both versions ('' when identical).")


def canonical_yaml(version: PolicyVersion) -> str:
    """The version's content as YAML, keys sorted: `{capabilities, policies, sources}`."""
    content = {
        "capabilities": [c.model_dump(mode="json") for c in version.capabilities],
        "policies": [p.model_dump(mode="json") for p in version.policies],
        "sources": dict(version.sources),
    }
    return yaml.safe_dump(content, sort_keys=True, allow_unicode=True, default_flow_style=False)


def _rule_key(index: int, rule: PolicyRule) -> str:
    return rule.id if rule.id is not None else str(index)


def _changed_fields(before: Any, after: Any, exclude: frozenset[str] = frozenset()) -> list[str]:
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    return sorted(name for name in set(old) | set(new) if name not in exclude and old.get(name) != new.get(name))


def _rule_changes(before: Policy, after: Policy) -> list[RuleChange]:
    old = {_rule_key(i, r): r for i, r in enumerate(before.rules)}
    new = {_rule_key(i, r): r for i, r in enumerate(after.rules)}
    changes = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            changes.append(RuleChange(id=key, change="removed"))
        elif key not in old:
            changes.append(RuleChange(id=key, change="added"))
        elif old[key] != new[key]:
            changes.append(RuleChange(id=key, change="changed"))
    return changes


def _change(before: object | None, after: object | None) -> Change:
    return "added" if before is None else "removed" if after is None else "changed"


def _policy_changes(old: PolicyVersion, new: PolicyVersion) -> list[PolicyChange]:
    before: Mapping[str, Policy] = {p.name: p for p in old.policies}
    after: Mapping[str, Policy] = {p.name: p for p in new.policies}
    changes = []
    for name in sorted(set(before) | set(after)):
        was, now = before.get(name), after.get(name)
        source_before = old.source_of(name) if was is not None else None
        source_after = new.source_of(name) if now is not None else None
        fields = _changed_fields(was, now) if was is not None and now is not None else []
        if was is not None and now is not None and not fields and source_before == source_after:
            continue
        if source_before != source_after and was is not None and now is not None:
            fields.append("source")
        changes.append(
            PolicyChange(
                name=name,
                change=_change(was, now),
                source_before=source_before,
                source_after=source_after,
                fields=fields,
                mode_before=was.mode if was is not None else None,
                mode_after=now.mode if now is not None else None,
                enabled_before=was.enabled if was is not None else None,
                enabled_after=now.enabled if now is not None else None,
                rules=_rule_changes(was or Policy(name=name), now or Policy(name=name)),
            )
        )
    return changes


def _capability_changes(old: PolicyVersion, new: PolicyVersion) -> list[CapabilityChange]:
    before: Mapping[str, Capability] = {c.name: c for c in old.capabilities}
    after: Mapping[str, Capability] = {c.name: c for c in new.capabilities}
    changes = []
    for name in sorted(set(before) | set(after)):
        was, now = before.get(name), after.get(name)
        source_before = old.source_of(name, capability=True) if was is not None else None
        source_after = new.source_of(name, capability=True) if now is not None else None
        fields = _changed_fields(was, now) if was is not None and now is not None else []
        if source_before != source_after and was is not None and now is not None:
            fields.append("source")
        if was is not None and now is not None and not fields:
            continue
        changes.append(
            CapabilityChange(
                name=name,
                change=_change(was, now),
                source_before=source_before,
                source_after=source_after,
                fields=fields,
            )
        )
    return changes


def diff_versions(old: PolicyVersion, new: PolicyVersion) -> PolicySetDiff:
    """What changed from `old` to `new`."""
    policies = _policy_changes(old, new)
    capabilities = _capability_changes(old, new)
    before, after = canonical_yaml(old), canonical_yaml(new)
    text = "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"version {old.version}",
            tofile=f"version {new.version}",
        )
    )
    return PolicySetDiff(
        from_version=old.version,
        to_version=new.version,
        from_digest=old.digest,
        to_digest=new.digest,
        identical=not policies and not capabilities and before == after,
        policies=policies,
        capabilities=capabilities,
        text=text,
    )
