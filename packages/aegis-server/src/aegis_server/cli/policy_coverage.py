"""Rule coverage for `aegis-server policy test --coverage`: which rules of the enabled policies the test cases
reached. A rule is reached when at least one case made it match (its capability glob applied and its condition
was true); a rule whose condition could not be evaluated was not reached, and the report says how often that
happened. Enforced and shadow rules count alike: a shadow rule is tried on live traffic, so its tests matter."""

from __future__ import annotations

from dataclasses import dataclass

from aegis_sdk.models import PolicyMode
from aegis_server.engine import PolicySet, RuleMatches

__all__ = ["Coverage", "RuleCoverage"]


@dataclass
class RuleCoverage:
    """One rule's counts over the test cases."""

    policy_id: str
    mode: PolicyMode
    matched: int = 0
    failed: int = 0

    @property
    def reached(self) -> bool:
        return self.matched > 0


class Coverage:
    """The rules of `policy_set`'s enabled policies (in the canonical order: policy name, then rule index) and
    how many cases reached each; `record` one case's `RuleMatches` at a time."""

    def __init__(self, policy_set: PolicySet) -> None:
        self.rules: dict[str, RuleCoverage] = {}
        for policy in policy_set.enabled_policies:
            for index, rule in enumerate(policy.rules):
                policy_id = f"{policy.name}/{rule.id if rule.id is not None else index}"
                self.rules[policy_id] = RuleCoverage(policy_id, rule.mode or policy.mode)

    def record(self, matches: RuleMatches) -> None:
        for policy_id in matches.matched:
            self.rules[policy_id].matched += 1
        for policy_id in matches.failed:
            self.rules[policy_id].failed += 1

    @property
    def reached(self) -> int:
        return sum(1 for rule in self.rules.values() if rule.reached)

    @property
    def percent(self) -> float:
        """The share of rules reached, 0..100 (100 for a set without rules: nothing is left untested)."""
        return 100.0 * self.reached / len(self.rules) if self.rules else 100.0

    def unreached(self) -> list[RuleCoverage]:
        return [rule for rule in self.rules.values() if not rule.reached]

    def report(self) -> list[str]:
        """The lines `policy test --coverage` prints: every rule with its mode and times matched, then the
        unreached ones, then the summary."""
        lines = [f"Coverage of {len(self.rules)} rule{'s' if len(self.rules) != 1 else ''} in enabled policies:"]
        width = max((len(rule.policy_id) for rule in self.rules.values()), default=4)
        lines.append(f"  {'rule':<{width}}  {'mode':<7}  matched")
        for rule in self.rules.values():
            lines.append(f"  {rule.policy_id:<{width}}  {rule.mode:<7}  {rule.matched}{_failures(rule)}")
        unreached = self.unreached()
        if unreached:
            lines.append(f"NOT REACHED by any case ({len(unreached)}): add a case that makes each of them match")
            lines.extend(f"  - {rule.policy_id} ({rule.mode}){_failures(rule)}" for rule in unreached)
        lines.append(f"{self.reached} of {len(self.rules)} rules reached ({self.percent:.1f}%)")
        return lines


def _failures(rule: RuleCoverage) -> str:
    if not rule.failed:
        return ""
    return f"  (condition could not be evaluated in {rule.failed} case{'s' if rule.failed != 1 else ''})"
