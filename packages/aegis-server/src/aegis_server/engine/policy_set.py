"""Compiling policies and capabilities into an immutable, indexed `PolicySet`.

Everything compilable is compiled once here: JSON Schema validators, CEL programs, capability globs.
Rules are indexed by capability: for every registered capability the set holds the tuple of rules
that can apply to it (exact names and the globs that match it), so a decision only looks at those.
A set with any problem is rejected whole (`PolicySetError` listing every problem).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from aegis_sdk._wire.canonical import canonical_json, normalise_json
from aegis_sdk.models import Capability, Outcome, Policy, PolicyProblem, PolicyRule

from ._cel import CompiledCondition, ConditionCompileError, compile_condition
from ._schema import CompiledSchema, compile_schema
from .config import BASE_RISK, STRICTNESS
from .errors import PolicySetError, SchemaCompileError

__all__ = ["CompiledCapability", "CompiledRule", "PolicySet", "compile_policy_set"]

_GLOB_CHARS = re.compile(r"^[A-Za-z0-9_.:\-*?\[\]!]+$")
_GLOB_META = frozenset("*?[")


@dataclass(frozen=True)
class CompiledRule:
    """One enabled rule, compiled. `order` is its position in the canonical order (policy name, index)."""

    policy_id: str
    policy: str
    rule: PolicyRule
    condition: CompiledCondition
    strictness: int
    order: int
    shadow: bool = False
    """In shadow mode: evaluated and recorded on the decision, never enforced."""

    @property
    def outcome(self) -> Outcome:
        return self.rule.outcome

    @functools.cached_property
    def precedence(self) -> tuple[int, int]:
        """Sort key among rules of one outcome: higher priority first, then the canonical order."""
        return (-self.rule.priority, self.order)

    @functools.cached_property
    def explanation(self) -> str:
        """Why this rule decides, as the reason says it."""
        if self.rule.reason:
            return self.rule.reason
        if self.condition.always_true:
            return f"applies to every '{self.rule.capability}' proposal"
        return f"condition `{self.condition.source}` is true"

    @functools.cached_property
    def risk_text(self) -> str:
        """This rule's term in the reason's risk sum (`" + 0.2 (policy/rule)"`), empty without an adjustment."""
        adjustment = self.rule.risk
        if not adjustment:
            return ""
        return f" {'+' if adjustment > 0 else '-'} {abs(adjustment):g} ({self.policy_id})"


@dataclass(frozen=True)
class CompiledCapability:
    """A registered capability with its compiled schema and the rules that can apply to it."""

    capability: Capability
    schema: CompiledSchema
    base_risk: float
    rules: tuple[CompiledRule, ...]
    variables: frozenset[str]  # the scope variables the enforced candidate rules reference
    projection: Mapping[str, Any] = field(default_factory=dict)
    """Per scope variable, the fields the candidate rules read: `None` = the whole value, else a nested
    `{field: spec}`. Only those are converted to CEL values (conversion costs ~0.5-1 µs a value)."""
    shadow_rules: tuple[CompiledRule, ...] = ()
    """The candidate rules in shadow mode: evaluated after the enforced ones, never changing the outcome."""
    shadow_variables: frozenset[str] = frozenset()
    shadow_projection: Mapping[str, Any] = field(default_factory=dict)
    """What the shadow rules read, kept apart: what they read must not add to the enforced rules' scope, whose
    size the enforced rules' condition budget is charged for."""

    @functools.cached_property
    def risk_text(self) -> str:
        """The start of the reason's risk sum: `"= base 0.3 (medium)"`."""
        return f"= base {self.base_risk:g} ({self.capability.risk_level})"


@dataclass(frozen=True)
class PolicySet:
    """An immutable compiled policy set. Build it with `compile_policy_set`.

    - `policies`: every policy, enabled or not, sorted by name;
    - `capabilities`: registered capabilities by name;
    - `rule_count`: the rules of enabled policies, enforced or in shadow mode;
    - `shadow_rule_count`: those of them in shadow mode;
    - `digest`: `sha256:<hex>` of the canonical JSON of the policies and capabilities (same content,
      same digest, whatever the input order);
    - `warnings`: things that are legal but probably unintended (a rule that matches no capability);
    - `version`: the policy-set version the server recorded for this content (None outside a server).
    """

    policies: tuple[Policy, ...]
    capabilities: Mapping[str, Capability]
    rule_count: int
    digest: str
    warnings: tuple[PolicyProblem, ...] = ()
    shadow_rule_count: int = 0
    version: int | None = None
    _index: Mapping[str, CompiledCapability] = field(default_factory=dict, repr=False, compare=False)

    def compiled(self, capability: str) -> CompiledCapability | None:
        """The compiled capability and its candidate rules, or None when it is not registered."""
        return self._index.get(capability)

    def suggestions(self, name: str, limit: int = 3) -> list[str]:
        """The registered capability names nearest to `name` (for an unknown-capability message)."""
        names = sorted(self.capabilities)
        close = difflib.get_close_matches(name, names, n=limit, cutoff=0.6)
        if len(close) < limit:
            prefix = name.split(".", 1)[0] + "."
            close += [n for n in names if n.startswith(prefix) and n not in close][: limit - len(close)]
        return close

    @property
    def enabled_policies(self) -> tuple[Policy, ...]:
        return tuple(policy for policy in self.policies if policy.enabled)


def _check_glob(glob: str) -> str | None:
    """None when `glob` is a valid capability glob, else what is wrong with it."""
    if not _GLOB_CHARS.match(glob):
        return (
            f"capability glob {glob!r} may only contain letters, digits, '_', '.', ':', '-' and the "
            "wildcards '*', '?', '[...]'"
        )
    in_class = False
    content = ""
    for ch in glob:
        if ch == "[":
            if in_class:
                return f"capability glob {glob!r} nests '[' inside a character class"
            in_class, content = True, ""
        elif ch == "]":
            if not in_class:
                return f"capability glob {glob!r} has ']' without a matching '['"
            if content in ("", "!"):
                return f"capability glob {glob!r} has an empty character class"
            in_class = False
        elif in_class:
            content += ch
    if in_class:
        return f"capability glob {glob!r} has '[' without a closing ']'"
    return None


def _projection_spec(paths: Sequence[tuple[str, ...]]) -> dict[str, Any] | None:
    """Merge field paths into a nested spec; a path that is a prefix of another needs the whole subtree."""
    if not paths or any(not path for path in paths):
        return None
    spec: dict[str, Any] = {}
    for head in {path[0] for path in paths}:
        spec[head] = _projection_spec([path[1:] for path in paths if path[0] == head])
    return spec


def _reads(rules: Sequence[CompiledRule]) -> tuple[frozenset[str], Mapping[str, Any]]:
    """The scope variables `rules` reference, and per variable the fields they read (see `projection`)."""
    variables: frozenset[str] = frozenset().union(*(rule.condition.variables for rule in rules))
    projection = {
        name: _projection_spec([path for rule in rules for path in rule.condition.paths.get(name, ())])
        for name in variables
    }
    return variables, MappingProxyType(projection)


def _source(sources: Mapping[str, str] | None, *keys: str) -> str | None:
    if not sources:
        return None
    for key in keys:
        if key in sources:
            return sources[key]
    return None


def _json_problem(value: Any, what: str) -> str | None:
    try:
        normalise_json(value)
    except (TypeError, ValueError) as exc:
        return f"{what} must be JSON data: {exc}"
    return None


def compile_policy_set(
    policies: Sequence[Policy],
    capabilities: Sequence[Capability],
    *,
    sources: Mapping[str, str] | None = None,
) -> PolicySet:
    """Compile and index a policy set, or raise `PolicySetError` listing every problem.

    `sources` maps a policy name (or `capability:<name>` / a capability name) to where it came from,
    e.g. a file path; problems then name it.
    """
    problems: list[PolicyProblem] = []

    # Capabilities -------------------------------------------------------------------------
    compiled_schemas: dict[str, CompiledSchema] = {}
    cap_by_name: dict[str, Capability] = {}
    for capability in capabilities:
        src = _source(sources, f"capability:{capability.name}", capability.name)
        if capability.name in cap_by_name:
            problems.append(
                PolicyProblem(
                    message=f"capability '{capability.name}' is defined twice; keep one definition",
                    source=src,
                )
            )
            continue
        cap_by_name[capability.name] = capability
        json_problem = _json_problem(capability.parameter_schema, "parameter_schema")
        if json_problem:
            problems.append(PolicyProblem(message=f"capability '{capability.name}': {json_problem}", source=src))
            continue
        try:
            compiled_schemas[capability.name] = compile_schema(capability.parameter_schema)
        except SchemaCompileError as exc:
            problems.append(PolicyProblem(message=f"capability '{capability.name}': {exc}", source=src))

    # Policies -----------------------------------------------------------------------------
    ordered = sorted(policies, key=lambda p: p.name)
    seen_policies: set[str] = set()
    compiled_rules: list[CompiledRule] = []
    order = 0
    for policy in ordered:
        src = _source(sources, policy.name)
        if policy.name in seen_policies:
            problems.append(
                PolicyProblem(
                    message=f"two policies are named '{policy.name}'; policy names must be unique, rename one",
                    policy=policy.name,
                    source=src,
                )
            )
            continue
        seen_policies.add(policy.name)
        seen_ids: set[str] = set()
        for index, rule in enumerate(policy.rules):
            rule_id = rule.id if rule.id is not None else str(index)
            policy_id = f"{policy.name}/{rule_id}"
            messages: list[str] = []
            problem = messages.append

            if rule.id is not None and (not rule.id.strip() or "/" in rule.id or rule.id != rule.id.strip()):
                problem("a rule id must be non-empty, without '/' and without surrounding spaces")
            if rule_id in seen_ids:
                problem(
                    f"duplicate rule id '{rule_id}' in policy '{policy.name}' (explicit ids and the indexes of "
                    "rules without an id share one namespace); give the rule a unique id"
                )
            seen_ids.add(rule_id)
            glob_problem = _check_glob(rule.capability)
            if glob_problem:
                problem(glob_problem)
            if rule.outcome not in STRICTNESS:
                problem(f"outcome {rule.outcome!r} is not one of ALLOW, DENY, ESCALATE, REQUIRE_CONFIRMATION")
            if rule.review_timeout_seconds is not None and rule.outcome != "ESCALATE":
                problem(
                    "review_timeout_seconds only applies to ESCALATE rules; remove it or change the outcome to ESCALATE"
                )
            json_problem = _json_problem(rule.constraints, "constraints")
            if json_problem:
                problem(json_problem)
            condition: CompiledCondition | None = None
            try:
                condition = compile_condition(rule.condition)
            except ConditionCompileError as exc:
                problem(f"condition {rule.condition!r} does not compile: {exc}")
            problems.extend(
                PolicyProblem(message=message, policy=policy.name, rule=rule_id, source=src) for message in messages
            )
            if policy.enabled and not messages and condition is not None:
                compiled_rules.append(
                    CompiledRule(
                        policy_id=policy_id,
                        policy=policy.name,
                        rule=rule,
                        condition=condition,
                        strictness=STRICTNESS[rule.outcome],
                        order=order,
                        shadow=(rule.mode or policy.mode) == "shadow",
                    )
                )
                order += 1

    if problems:
        raise PolicySetError(problems)

    # Index --------------------------------------------------------------------------------
    exact: dict[str, list[CompiledRule]] = {}
    globs: dict[str, list[CompiledRule]] = {}
    for compiled in compiled_rules:
        pattern = compiled.rule.capability
        target = globs if _GLOB_META.intersection(pattern) else exact
        target.setdefault(pattern, []).append(compiled)
    glob_regexes = {pattern: re.compile(fnmatch.translate(pattern)) for pattern in globs}

    by_capability: dict[str, CompiledCapability] = {}
    used_patterns: set[str] = set()
    for name in sorted(cap_by_name):
        candidates = list(exact.get(name, ()))
        if candidates:
            used_patterns.add(name)
        for pattern, regex in glob_regexes.items():
            if regex.match(name):
                candidates.extend(globs[pattern])
                used_patterns.add(pattern)
        candidates.sort(key=lambda r: r.order)
        enforced = tuple(rule for rule in candidates if not rule.shadow)
        shadow = tuple(rule for rule in candidates if rule.shadow)
        variables, projection = _reads(enforced)
        shadow_variables, shadow_projection = _reads(shadow)
        capability = cap_by_name[name]
        by_capability[name] = CompiledCapability(
            capability=capability,
            schema=compiled_schemas[name],
            base_risk=BASE_RISK[capability.risk_level],
            rules=enforced,
            variables=variables,
            projection=projection,
            shadow_rules=shadow,
            shadow_variables=shadow_variables,
            shadow_projection=shadow_projection,
        )

    warnings = tuple(
        PolicyProblem(
            message=f"capability pattern '{compiled.rule.capability}' matches no registered capability; "
            "the rule never applies until one is registered",
            policy=compiled.policy,
            rule=compiled.policy_id.split("/", 1)[1],
            source=_source(sources, compiled.policy),
        )
        for compiled in compiled_rules
        if compiled.rule.capability not in used_patterns
    )

    sorted_caps = [cap_by_name[name] for name in sorted(cap_by_name)]
    digest_input = {
        "capabilities": [c.model_dump(mode="json") for c in sorted_caps],
        "policies": [p.model_dump(mode="json") for p in ordered],
    }
    digest = "sha256:" + hashlib.sha256(canonical_json(digest_input)).hexdigest()
    return PolicySet(
        policies=tuple(ordered),
        capabilities=MappingProxyType({c.name: c for c in sorted_caps}),
        rule_count=len(compiled_rules),
        shadow_rule_count=sum(1 for rule in compiled_rules if rule.shadow),
        digest=digest,
        warnings=warnings,
        _index=MappingProxyType(by_capability),
    )
