"""`diff_versions`: policies and capabilities added, removed or changed, rules by id, mode and enabled
changes, where each item came from, and the text diff."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from aegis_sdk.models import Capability, Policy
from aegis_server.policies.diff import diff_versions
from aegis_server.store.policy_versions import PolicyVersion


def _version(
    number: int, policies: list[dict[str, Any]], capabilities: list[str], sources: dict[str, str]
) -> PolicyVersion:
    return PolicyVersion(
        version=number,
        digest=f"sha256:{number}",
        policies=tuple(Policy.model_validate(p) for p in policies),
        capabilities=tuple(Capability(name=name) for name in capabilities),
        sources=sources,
        cause="policy_saved",
        summary="",
        created_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
    )


def _rule(rule_id: str | None, outcome: str = "ALLOW") -> dict[str, Any]:
    rule: dict[str, Any] = {"capability": "a.*", "outcome": outcome}
    if rule_id is not None:
        rule["id"] = rule_id
    return rule


def test_rules_mode_enabled_and_sources() -> None:
    old = _version(
        1,
        [
            {"name": "p", "rules": [_rule("keep"), _rule("drop"), _rule("edit")]},
            {"name": "gone", "rules": []},
            {"name": "moved", "rules": []},
        ],
        ["a.one", "a.two"],
        {"p": "api", "gone": "api", "moved": "files/a.yaml", "capability:a.two": "files/a.yaml"},
    )
    new = _version(
        2,
        [
            {
                "name": "p",
                "mode": "shadow",
                "enabled": False,
                "rules": [_rule("keep"), _rule("edit", "DENY"), _rule("new")],
            },
            {"name": "moved", "rules": []},
            {"name": "fresh", "rules": [_rule(None)]},
        ],
        ["a.one", "a.two"],
        {"p": "api", "moved": "api", "fresh": "api"},
    )
    diff = diff_versions(old, new)
    assert not diff.identical and (diff.from_version, diff.to_version) == (1, 2)
    changes = {p.name: p for p in diff.policies}
    assert set(changes) == {"p", "gone", "moved", "fresh"}
    p = changes["p"]
    assert p.change == "changed" and p.fields == ["enabled", "mode", "rules"]
    assert (p.mode_before, p.mode_after, p.enabled_before, p.enabled_after) == ("enforce", "shadow", True, False)
    assert [(r.id, r.change) for r in p.rules] == [("drop", "removed"), ("edit", "changed"), ("new", "added")]
    assert changes["gone"].change == "removed" and changes["gone"].source_after is None
    assert changes["moved"].fields == ["source"]
    assert (changes["moved"].source_before, changes["moved"].source_after) == ("files/a.yaml", "api")
    assert [(r.id, r.change) for r in changes["fresh"].rules] == [("0", "added")]  # no id: its index
    [capability] = diff.capabilities
    assert capability.name == "a.two" and capability.fields == ["source"]
    assert "\n-  name: gone\n" in diff.text and "\n+  mode: shadow\n" in diff.text
    assert diff.text.startswith("--- version 1\n+++ version 2\n")


def test_the_same_content_is_identical() -> None:
    version = _version(3, [{"name": "p", "rules": [_rule("r")]}], ["a.one"], {"p": "api"})
    diff = diff_versions(version, version)
    assert diff.identical and diff.policies == [] and diff.capabilities == [] and diff.text == ""
