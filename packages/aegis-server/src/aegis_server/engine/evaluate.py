"""Turning a proposal and a compiled policy set into an `Evaluation`. Pure: no I/O, no clock (pass `now`).

Semantics (docs/policies.md explains them with examples):

1. Unknown capability -> `UnknownCapabilityError` (with the nearest names); parameters failing the
   capability's schema -> `ParameterSchemaError`.
2. Every rule whose capability glob matches and whose condition is true *matches*. The strictest outcome
   among matching rules wins (DENY > ESCALATE > REQUIRE_CONFIRMATION > ALLOW); priority only picks which
   of the deciding rules explains, and which constraint wins on a key clash.
3. No matching rule -> DENY (default-deny), and the reason says so.
4. Fail-closed: if any candidate rule's condition cannot be evaluated (missing field, type error,
   non-boolean result), the decision is DENY naming the rule and the error — whatever the rule's own
   outcome, since the engine cannot know what the author meant. Every condition the library is to run
   is first estimated from the proposal's data (`_cost`); the estimates of one proposal's conditions add
   up, and a condition that would take the total over `EngineConfig.condition_cost_budget` is not
   evaluated: the decision is DENY with the reason `evaluation_budget_exceeded` naming the rule.
5. Conditions run as Python closures (`_fast_cel`) where those are sure of the `cel` library's answer,
   and on the library otherwise: the answer, errors included, is the library's either way.
6. Risk = base risk of the capability's level + the `risk` adjustments of the matching rules, clamped to
   0..1 and rounded to 4 places. An ALLOW whose risk is above `EngineConfig.escalate_threshold`
   becomes ESCALATE.
7. Rules in shadow mode never change 1-6. Each one that matched or failed gets a `ShadowOutcome`: the
   decision had it alone been enforced with the enforced rules. They share one condition budget of their
   own; each entry words its own error, and one over the budget does not stop the next from running.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aegis_sdk.models import Outcome, Proposal, ShadowOutcome

from ._cel import new_context
from ._cost import CONVERSION_COST, SCOPE_COPY_COST, scope_cost
from .config import EngineConfig
from .errors import UnknownCapabilityError
from .policy_set import CompiledCapability, CompiledRule, PolicySet

__all__ = ["Evaluation", "RuleMatches", "evaluate", "evaluate_traced"]

_DEFAULT_CONFIG = EngineConfig()
_MAX_ERROR_TEXT = 300
_LISTED_IDS = 3


@dataclass(frozen=True)
class Evaluation:
    """The engine's answer for one proposal (the API adds ids, timestamps, tokens and the audit)."""

    outcome: Outcome
    reason: str
    risk_score: float
    constraints: dict[str, Any]
    policy_ids: list[str]
    review_timeout_seconds: int | None
    audit_parameters: dict[str, Any]
    shadow: tuple[ShadowOutcome, ...] = ()
    """What each matching rule in shadow mode would have decided (see `ShadowOutcome`); never enforced."""


@dataclass(frozen=True)
class RuleMatches:
    """Which candidate rules (enforced and shadow) one proposal reached, by policy id in the canonical order:
    `matched` = the condition was true; `failed` = it could not be evaluated (an error, or over the budget)."""

    matched: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


_NO_MATCHES = RuleMatches()


def evaluate(
    proposal: Proposal,
    policy_set: PolicySet,
    *,
    now: datetime,
    config: EngineConfig = _DEFAULT_CONFIG,
) -> Evaluation:
    """Decide `proposal` against `policy_set` at time `now` (naive datetimes are taken as UTC).

    Raises `UnknownCapabilityError` or `ParameterSchemaError`; never raises for a failing condition.
    """
    return _evaluate(proposal, policy_set, now, config)[0]


def evaluate_traced(
    proposal: Proposal,
    policy_set: PolicySet,
    *,
    now: datetime,
    config: EngineConfig = _DEFAULT_CONFIG,
) -> tuple[Evaluation, RuleMatches]:
    """`evaluate`, plus which rules the proposal made match (what `policy test --coverage` counts)."""
    evaluation, enforced, shadow_results = _evaluate(proposal, policy_set, now, config)
    if enforced is None:
        return evaluation, _NO_MATCHES
    shadow = shadow_results or _Results()
    rules = sorted(
        [*enforced.matched, *shadow.matched]
        + [r for r, _ in (*enforced.failed, *shadow.failed)]
        + [r for r, _, _ in (*enforced.over_budget, *shadow.over_budget)],
        key=lambda rule: rule.order,
    )
    matched = {id(rule) for rule in (*enforced.matched, *shadow.matched)}
    return evaluation, RuleMatches(
        matched=tuple(rule.policy_id for rule in rules if id(rule) in matched),
        failed=tuple(rule.policy_id for rule in rules if id(rule) not in matched),
    )


def _evaluate(
    proposal: Proposal, policy_set: PolicySet, now: datetime, config: EngineConfig
) -> tuple[Evaluation, _Results | None, _Results | None]:
    """The evaluation, and the results of the enforced and of the shadow rules' conditions (None: none ran)."""
    name = proposal.action.capability
    compiled = policy_set.compiled(name)
    if compiled is None:
        raise UnknownCapabilityError(name, policy_set.suggestions(name))
    parameters = proposal.action.parameters
    compiled.schema.validate(name, parameters)
    audit_parameters = compiled.schema.redact(parameters, config.value_key)
    if not compiled.rules and not compiled.shadow_rules:
        return _no_rule_applies(compiled, audit_parameters), None, None

    scope = _scope(compiled, compiled.variables, proposal, now)
    enforced = _ConditionRun(compiled, scope, compiled.projection, parameters, config).conditions(compiled.rules)
    if compiled.rules:
        evaluation = _conclude(compiled, enforced, audit_parameters, config)
    else:
        evaluation = _no_rule_applies(compiled, audit_parameters)
    if not compiled.shadow_rules:
        return evaluation, enforced, None
    # Each shadow rule's entry stands alone: every failure is worded, and a rule over the budget leaves what is
    # left of it to the next ones (the shadow rules share one budget, apart from the enforced rules').
    # A run of their own: what they read is converted for them alone, so it never adds to the enforced rules' cost.
    shadow_scope = _scope(compiled, compiled.shadow_variables, proposal, now)
    shadow_run = _ConditionRun(compiled, shadow_scope, compiled.shadow_projection, parameters, config)
    shadow_results = shadow_run.conditions(compiled.shadow_rules, independent=True)
    shadow = _shadow_outcomes(compiled, enforced, shadow_results, audit_parameters, config)
    return (dataclasses.replace(evaluation, shadow=shadow) if shadow else evaluation), enforced, shadow_results


@dataclass
class _Results:
    """What evaluating some rules' conditions gave: the rules that matched, those whose condition failed (with
    the error's text), and those over the evaluation budget (with their estimate and what the rules before
    them had spent of it)."""

    matched: list[CompiledRule] = field(default_factory=list)
    failed: list[tuple[CompiledRule, str]] = field(default_factory=list)
    over_budget: list[tuple[CompiledRule, int, int]] = field(default_factory=list)

    def with_rule(self, rule: CompiledRule, other: _Results) -> _Results:
        """These results plus what `other` (the results of `rule` alone) says of `rule`."""
        return _Results(
            matched=self.matched + [r for r in other.matched if r is rule],
            failed=self.failed + [f for f in other.failed if f[0] is rule],
            over_budget=self.over_budget + [o for o in other.over_budget if o[0] is rule],
        )


class _ConditionRun:
    """Evaluates some rules' conditions for one proposal, over `scope` cut to `projection` (what those rules
    read): the library's context is built once, when a condition first needs it; each call of `conditions` has
    a budget of its own."""

    def __init__(
        self,
        compiled: CompiledCapability,
        scope: dict[str, Any],
        projection: Mapping[str, Any],
        parameters: Mapping[str, Any],
        config: EngineConfig,
    ) -> None:
        self._compiled = compiled
        self._scope = scope
        self._projection = projection
        self._parameters = parameters
        self._config = config
        self._context: Any = None  # the library's context, built only when a condition needs the library
        self._projected: dict[str, Any] | None = None
        self._scope_units = 0
        self._secrets: _Secrets | None = None  # the values to keep out of error texts, found on the first error

    def conditions(self, rules: Sequence[CompiledRule], *, independent: bool = False) -> _Results:
        """The results of `rules`' conditions under one budget. The enforced rules make one decision: only the
        first failure is worded, and once a rule is over the budget no further condition runs. With
        `independent` (the shadow rules, each with an entry of its own) every failure is worded, and a rule
        over the budget leaves the rest of the budget to the next rules."""
        scope, config = self._scope, self._config
        results = _Results()
        matched, failed, over_budget = results.matched, results.failed, results.over_budget
        spent = 0  # the estimated costs of the conditions evaluated so far: one budget for these rules
        for rule in rules:
            condition = rule.condition
            if condition.always_true:
                matched.append(rule)
                continue
            result: Any = None
            if condition.fast is not None:
                try:
                    result = condition.fast(scope)
                except Exception:  # Undecided (or anything unforeseen): the library decides, and words any error
                    result = None
            if result is not True and result is not False:  # outside the fast path, or undecided there
                if self._projected is None:  # what the library is given, measured before anything is converted
                    self._projected = _projected(self._projection, scope)
                    self._scope_units = scope_cost(self._projected)
                # Estimated before the library runs it: the copy of the variables every run makes, their
                # conversion (once), and the condition's own work over the proposal's data.
                remaining = config.condition_cost_budget - spent
                estimated = self._scope_units * (SCOPE_COPY_COST + (CONVERSION_COST if self._context is None else 0))
                cost = condition.cost
                try:
                    if cost is not None and estimated <= remaining:
                        estimated += cost.estimate(scope, remaining - estimated)
                except Exception:  # fail closed: a cost that cannot be estimated is not within the budget
                    estimated = remaining + 1
                if estimated > remaining:
                    over_budget.append((rule, estimated, spent))
                    if not independent:
                        spent = config.condition_cost_budget  # the decision is a DENY: no further condition runs
                    continue
                spent += estimated
                try:
                    if self._context is None:
                        self._context = new_context(self._projected)
                    result = condition.program.execute(self._context)
                except Exception as exc:  # fail closed on anything the evaluator raises
                    if failed and not independent:  # only the first failure's error is worded in the reason
                        failed.append((rule, ""))
                        continue
                    failed.append((rule, _error_text(exc, self._secrets_of_proposal())))
                    continue
            if result is True:
                matched.append(rule)
            elif result is not False:
                failed.append((rule, f"the condition returned a {type(result).__name__}, not a bool"))
        return results

    def _secrets_of_proposal(self) -> _Secrets:
        if self._secrets is None:
            schema = self._compiled.schema
            self._secrets = (
                _Secrets(schema.sensitive_values(self._parameters)) if schema.sensitive is not None else _NO_SECRETS
            )
        return self._secrets


def _no_rule_applies(compiled: CompiledCapability, audit_parameters: dict[str, Any]) -> Evaluation:
    name = compiled.capability.name
    return Evaluation(
        outcome="DENY",
        reason=(
            f"DENY by default: no enabled policy rule applies to capability '{name}' (default-deny); "
            "add a rule that allows it"
        ),
        risk_score=_clamp(compiled.base_risk),
        constraints={},
        policy_ids=[],
        review_timeout_seconds=None,
        audit_parameters=audit_parameters,
    )


def _shadow_outcomes(
    compiled: CompiledCapability,
    enforced: _Results,
    shadow: _Results,
    audit_parameters: dict[str, Any],
    config: EngineConfig,
) -> tuple[ShadowOutcome, ...]:
    """For every shadow rule that matched (or could not be evaluated): the decision had it been enforced with
    the enforced rules, in the shadow rules' canonical order."""
    involved = {id(rule) for rule in shadow.matched}
    involved.update(id(rule) for rule, _ in shadow.failed)
    involved.update(id(rule) for rule, _, _ in shadow.over_budget)
    outcomes: list[ShadowOutcome] = []
    for rule in compiled.shadow_rules:
        if id(rule) not in involved:
            continue
        would_be = _conclude(compiled, enforced.with_rule(rule, shadow), audit_parameters, config)
        outcomes.append(ShadowOutcome(policy_id=rule.policy_id, outcome=would_be.outcome, reason=would_be.reason))
    return tuple(outcomes)


def _conclude(
    compiled: CompiledCapability, results: _Results, audit_parameters: dict[str, Any], config: EngineConfig
) -> Evaluation:
    """The decision from the results of the candidate rules' conditions."""
    matched, failed, over_budget = results.matched, results.failed, results.over_budget
    risk, risk_text = _risk(compiled, matched)

    if over_budget:
        return _over_budget(over_budget, failed, matched, risk, risk_text, audit_parameters, config)
    if failed:
        return _fail_closed(failed, matched, risk, risk_text, audit_parameters)

    if not matched:
        count = len(compiled.rules)
        return Evaluation(
            outcome="DENY",
            reason=(
                f"DENY by default: none of the {count} rule{'s' if count != 1 else ''} for capability "
                f"'{compiled.capability.name}' matched (default-deny); {risk_text}"
            ),
            risk_score=risk,
            constraints={},
            policy_ids=[],
            review_timeout_seconds=None,
            audit_parameters=audit_parameters,
        )

    strictest = max(rule.strictness for rule in matched)
    deciding = sorted((r for r in matched if r.strictness == strictest), key=_precedence)
    others = sorted((r for r in matched if r.strictness != strictest), key=_strictest_first)
    explaining = deciding[0]
    outcome: Outcome = explaining.outcome

    constraints: dict[str, Any] = {}
    for rule in reversed(deciding):  # lowest precedence first, so the highest priority wins a clash
        constraints.update(rule.rule.constraints)
    if any(isinstance(value, (dict, list)) for value in constraints.values()):
        constraints = copy.deepcopy(constraints)

    parts = [f"{outcome} by {explaining.policy_id}: {explaining.explanation}"]
    if len(deciding) > 1:
        parts.append(f"also {outcome}: {_list_ids(deciding[1:])}")
    if others:
        parts.append(f"overrides {_list_outcomes(others)}")
    parts.append(risk_text)

    review_timeout: int | None = None
    if outcome == "ALLOW" and risk > config.escalate_threshold:
        outcome = "ESCALATE"
        parts.append(f"escalated: risk {risk:g} is above the escalate threshold {config.escalate_threshold:g}")
        review_timeout = config.default_review_timeout_seconds
    elif outcome == "ESCALATE":
        timeouts = [r.rule.review_timeout_seconds for r in deciding if r.rule.review_timeout_seconds is not None]
        review_timeout = min(timeouts) if timeouts else config.default_review_timeout_seconds

    return Evaluation(
        outcome=outcome,
        reason="; ".join(parts),
        risk_score=risk,
        constraints=constraints,
        policy_ids=[r.policy_id for r in deciding] + [r.policy_id for r in others],
        review_timeout_seconds=review_timeout,
        audit_parameters=audit_parameters,
    )


def _scope(compiled: CompiledCapability, names: frozenset[str], proposal: Proposal, now: datetime) -> dict[str, Any]:
    """The scope variables `names` (those some rules reference), as plain Python values."""
    variables: dict[str, Any] = {}
    for name in names:
        if name == "action":
            action = proposal.action
            value: Any = {"capability": action.capability, "parameters": action.parameters, "resource": action.resource}
        elif name == "actor":
            value = {"id": proposal.actor.id, "type": proposal.actor.type}
        elif name == "context":
            value = {"session_id": proposal.context.session_id, "metadata": proposal.context.metadata}
        elif name == "time":
            utc = now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)
            value = {"now": utc, "hour": utc.hour, "day_of_week": utc.weekday()}
        elif name == "risk":
            value = compiled.base_risk
        else:  # risk_level
            value = compiled.capability.risk_level
        variables[name] = value
    return variables


def _projected(projection: Mapping[str, Any], scope: Mapping[str, Any]) -> dict[str, Any]:
    """The scope cut to the fields the rules read: only those are converted to the library's CEL values."""
    return {name: _project(value, projection.get(name)) for name, value in scope.items()}


def _project(value: Any, spec: Mapping[str, Any] | None) -> Any:
    if spec is None or not isinstance(value, dict):
        return value
    return {key: _project(value[key], sub) for key, sub in spec.items() if key in value}


def _precedence(rule: CompiledRule) -> tuple[int, int]:
    return rule.precedence


def _strictest_first(rule: CompiledRule) -> tuple[int, int, int]:
    return (-rule.strictness, *rule.precedence)


def _list_ids(rules: Sequence[CompiledRule]) -> str:
    ids = [r.policy_id for r in rules[:_LISTED_IDS]]
    more = len(rules) - len(ids)
    return ", ".join(ids) + (f" and {more} more" if more else "")


def _list_outcomes(rules: Sequence[CompiledRule]) -> str:
    return ", ".join(f"{r.outcome} of {r.policy_id}" for r in rules[:_LISTED_IDS]) + (
        f" and {len(rules) - _LISTED_IDS} more" if len(rules) > _LISTED_IDS else ""
    )


def _clamp(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 4)


def _risk(compiled: CompiledCapability, matched: Sequence[CompiledRule]) -> tuple[float, str]:
    total = compiled.base_risk
    text = compiled.risk_text
    for rule in matched:
        adjustment = rule.rule.risk
        if adjustment:
            total += adjustment
            text += rule.risk_text
    score = _clamp(total)
    if score != round(total, 4):
        text += ", clamped to 0..1"
    return score, f"risk {score:g} {text}"


# A quoted literal in an error message: '...' or "..." (backslash escapes allowed), or one cut off by the end
# of the message (the library may quote only the start of a long value). The library's own
# "Function 'name' error" keeps its function name (a sensitive value equal to it is still scrubbed as a value).
_QUOTED = re.compile(r"""(Function '\w+')|b?'(?:[^'\\]|\\.)*(?:'|$)|b?"(?:[^"\\]|\\.)*(?:"|$)""", re.DOTALL)
_REDACTED = "[redacted]"
_MIN_PREFIX = 4  # a cut-off quote of a sensitive value is scrubbed down to its first 4 characters


class _Secrets:
    """The sensitive values of one proposal, as the strings an error message could show them as."""

    __slots__ = ("active", "forms", "prefixes")

    def __init__(self, values: Sequence[Any] | None) -> None:
        self.active = values is not None  # the capability has sensitive fields (even if none was sent)
        self.forms: list[str] = []
        self.prefixes: list[str] = []  # strings whose start could be quoted alone
        for value in values or ():
            self._add(value)
        self.forms.sort(key=len, reverse=True)  # the longest form first: "'1234'" before "1234"

    def __bool__(self) -> bool:
        return self.active

    def _add(self, value: Any) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                self._add(str(name))
                self._add(item)
            return
        if isinstance(value, list):
            for item in value:
                self._add(item)
            return
        if value is None or isinstance(value, bool):
            return  # `null`/`true`/`false` are words of every message, and say next to nothing
        text = str(value)
        if not text:
            return
        forms = {text, repr(value), json.dumps(value), json.dumps(value, ensure_ascii=False)}
        if isinstance(value, str):
            forms.add(text.encode("unicode_escape").decode("ascii"))
            self.prefixes.append(text)
        self.forms.extend(form for form in forms if form)

    def scrub(self, message: str) -> str:
        """`message` without any quoted literal and without any form (or cut-off start) of a sensitive value."""
        message = _QUOTED.sub(_keep_function_name, message)
        for form in self.forms:
            message = message.replace(form, _REDACTED)
        for text in self.prefixes:
            while True:
                length = _longest_prefix_in(text, message)
                if length < min(_MIN_PREFIX, len(text)):
                    break
                message = message.replace(text[:length], _REDACTED)
        return message


_NO_SECRETS = _Secrets(None)


def _keep_function_name(match: re.Match[str]) -> str:
    return match.group(1) or _REDACTED


def _longest_prefix_in(text: str, message: str) -> int:
    """The length of the longest start of `text` found in `message` (a start is found when a longer one is)."""
    low, high = 0, min(len(text), len(message))
    while low < high:
        middle = (low + high + 1) // 2
        if text[:middle] in message:
            low = middle
        else:
            high = middle - 1
    return low


def _error_text(exc: BaseException, secrets: _Secrets = _NO_SECRETS) -> str:
    """The error of a failed condition for the reason. When the capability has sensitive fields, every quoted
    literal and every form of a sensitive value is replaced by `[redacted]`: the reason is returned to the
    proposer and audited, and must not carry the values the audit stores only as keyed hashes."""
    message = str(exc)
    if secrets:
        # Cut first (a value cut off at the end is scrubbed by its start), so the scrub works on little text.
        message = secrets.scrub(message[: 2 * _MAX_ERROR_TEXT])
    if isinstance(exc, KeyError):
        message = f"no such key {message} (guard optional fields with has(...))"
    text = f"{type(exc).__name__}: {message}"
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."


def _fail_closed(
    failed: Sequence[tuple[CompiledRule, str]],
    matched: Sequence[CompiledRule],
    risk: float,
    risk_text: str,
    audit_parameters: dict[str, Any],
) -> Evaluation:
    first, error = failed[0]
    more = f" (and {len(failed) - 1} more failing condition{'s' if len(failed) > 2 else ''})" if len(failed) > 1 else ""
    reason = (
        f"DENY (fail-closed): the condition of rule {first.policy_id} could not be evaluated: {error}{more}; "
        f"fix the condition or the proposal; {risk_text}"
    )
    ids = [rule.policy_id for rule, _ in failed]
    return _denied_unevaluated(reason, ids, matched, risk, audit_parameters)


def _over_budget(
    over_budget: Sequence[tuple[CompiledRule, int, int]],
    failed: Sequence[tuple[CompiledRule, str]],
    matched: Sequence[CompiledRule],
    risk: float,
    risk_text: str,
    audit_parameters: dict[str, Any],
    config: EngineConfig,
) -> Evaluation:
    first, estimated, spent_before = over_budget[0]
    others = len(over_budget) - 1 + len(failed)
    more = f" (and {others} more failing condition{'s' if others > 1 else ''})" if others else ""
    budget = config.condition_cost_budget
    if estimated > budget:
        what = (
            f"the condition of rule {first.policy_id} exceeded its evaluation budget and was not evaluated: its "
            f"estimated cost for this proposal is {estimated:,} units"
        )
    else:  # each within the budget, but not all of them: the budget is the proposal's
        what = (
            f"the conditions evaluated for this proposal together exceeded the proposal's evaluation budget: rule "
            f"{first.policy_id} (estimated {estimated:,} units) was not evaluated, the rules before it had spent "
            f"{spent_before:,} units of it"
        )
    reason = (
        f"DENY (fail-closed, evaluation_budget_exceeded): {what}, the budget {budget:,} (condition_cost_budget, "
        f"per proposal){more}; send less data (shorter lists) or rewrite the conditions (no nested comprehensions "
        f"over the same list, fewer costly rules per capability); {risk_text}"
    )
    ids = [rule.policy_id for rule, _, _ in over_budget] + [rule.policy_id for rule, _ in failed]
    return _denied_unevaluated(reason, ids, matched, risk, audit_parameters)


def _denied_unevaluated(
    reason: str,
    unevaluated_ids: list[str],
    matched: Sequence[CompiledRule],
    risk: float,
    audit_parameters: dict[str, Any],
) -> Evaluation:
    """The fail-closed DENY when a condition could not be (or was not) evaluated: the rules that failed first,
    then the ones that matched, strictest first."""
    ids = unevaluated_ids + [rule.policy_id for rule in sorted(matched, key=_strictest_first)]
    return Evaluation(
        outcome="DENY",
        reason=reason,
        risk_score=risk,
        constraints={},
        policy_ids=ids,
        review_timeout_seconds=None,
        audit_parameters=audit_parameters,
    )
