"""`aegis-server policy validate` and `aegis-server policy test`.

- `policy validate [PATH...]` compiles the files and folders (default `examples/policies`) exactly as the
  server would: exit 0 with a summary, or exit 1 listing every problem with its file, policy and rule.
- `policy test CASES.yaml [--policy PATH]... [--coverage] [--fail-under PERCENT]` runs a table of proposals
  against the policies and compares outcome (and optionally policy ids, constraints, risk, review timeout, a
  reason fragment, the shadow entries or an expected error); it prints each mismatch and exits 1 if any case
  fails, like `opa test`. `--coverage` then lists every rule with how many cases made it match and names the
  rules no case reached; unreached rules change the exit code only under `--fail-under` (exit 1 when the
  share of rules reached is below PERCENT).

The handlers are plain functions (`run_validate(args)`, `run_test(args)`) returning the exit code; the
sub-commands set both `handler` and `func` to them on the parsed namespace.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aegis_sdk.models import Outcome, PolicyProblem, PolicyValidation, Proposal, ShadowOutcome
from aegis_server.cli.policy_coverage import Coverage
from aegis_server.cli.policy_replay import add_replay_command
from aegis_server.cli.policy_versions import add_policy_version_commands
from aegis_server.engine import (
    EngineConfig,
    Evaluation,
    ParameterSchemaError,
    PolicySet,
    PolicySetError,
    RuleMatches,
    UnknownCapabilityError,
    evaluate_traced,
    format_problem,
)
from aegis_server.policies.files import load_policy_set, read_yaml_file

__all__ = ["DEFAULT_POLICY_PATH", "add_policy_commands", "run_test", "run_validate"]

DEFAULT_POLICY_PATH = Path("examples/policies")
_DEFAULT_NOW = datetime(2025, 1, 6, 12, 0, tzinfo=timezone.utc)  # a Monday, noon UTC: tests stay reproducible
_DEFAULT_ACTOR = {"id": "policy-test", "type": "ai-agent"}

ExpectedError = Literal["unknown_capability", "invalid_parameters"]


def add_policy_commands(subparsers: Any) -> None:
    """Register `policy validate` and `policy test` on the main parser's sub-parsers."""
    policy = subparsers.add_parser(
        "policy",
        help="validate policy files and run policy test cases",
        description="Validate policy files and run policy test cases.",
    )
    commands = policy.add_subparsers(dest="policy_command", metavar="COMMAND")
    commands.required = True

    validate = commands.add_parser(
        "validate",
        help="compile policy files and folders; exit 1 listing every problem",
        description="Compile capabilities and policies exactly as the server would load them.",
    )
    validate.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help=f"YAML/JSON files or folders (default: {DEFAULT_POLICY_PATH})",
    )
    validate.add_argument("--json", action="store_true", help="print the result as JSON (PolicyValidation)")
    validate.set_defaults(handler=run_validate, func=run_validate)

    test = commands.add_parser(
        "test",
        help="run a table of proposals and expected outcomes against the policies",
        description="Run test cases (proposals and expected decisions) against policy files.",
    )
    test.add_argument("cases", type=Path, metavar="CASES.yaml", help="the test-case file")
    test.add_argument(
        "--policy",
        dest="policy_paths",
        action="append",
        type=Path,
        metavar="PATH",
        help=f"policy file or folder; repeat for several (default: {DEFAULT_POLICY_PATH})",
    )
    test.add_argument(
        "-v", "--verbose", action="store_true", help="also print the reason (and shadow entries) of passing cases"
    )
    test.add_argument(
        "--coverage",
        action="store_true",
        help="list every rule with how many cases made it match, and the rules no case reached",
    )
    test.add_argument(
        "--fail-under",
        type=_percent,
        metavar="PERCENT",
        help="exit 1 when fewer than PERCENT %% of the rules were reached (implies --coverage)",
    )
    test.set_defaults(handler=run_test, func=run_test)
    add_policy_version_commands(commands)
    add_replay_command(commands)


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage: give a number from 0 to 100, e.g. 80")
    return value


# ---------------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------------


def run_validate(args: argparse.Namespace) -> int:
    """Compile the given paths; print a summary (exit 0) or every problem (exit 1)."""
    paths: list[Path] = list(args.paths or [DEFAULT_POLICY_PATH])
    as_json = bool(getattr(args, "json", False))
    try:
        policy_set = load_policy_set(paths)
    except PolicySetError as exc:
        if as_json:
            print(PolicyValidation(valid=False, errors=exc.problems).model_dump_json(indent=2))
        else:
            count = len(exc.problems)
            print(f"INVALID: {count} problem{'s' if count != 1 else ''} in {', '.join(map(str, paths))}")
            for problem in exc.problems:
                print(f"  - {format_problem(problem)}")
            print("The set was not loaded: fix every problem above and run `aegis-server policy validate` again.")
        return 1
    if as_json:
        print(
            json.dumps(
                {
                    **PolicyValidation(valid=True).model_dump(mode="json"),
                    "digest": policy_set.digest,
                    "capabilities": len(policy_set.capabilities),
                    "policies": len(policy_set.policies),
                    "rules": policy_set.rule_count,
                    "shadow_rules": policy_set.shadow_rule_count,
                    "warnings": [w.model_dump(mode="json") for w in policy_set.warnings],
                },
                indent=2,
            )
        )
        return 0
    enabled = len(policy_set.enabled_policies)
    shadow = f" ({policy_set.shadow_rule_count} in shadow mode)" if policy_set.shadow_rule_count else ""
    print(
        f"OK: {len(policy_set.capabilities)} capabilities, {len(policy_set.policies)} policies "
        f"({enabled} enabled), {policy_set.rule_count} active rules{shadow} in {', '.join(map(str, paths))}"
    )
    print(f"digest: {policy_set.digest}")
    for warning in policy_set.warnings:
        print(f"warning: {format_problem(warning)}")
    return 0


# ---------------------------------------------------------------------------------------------
# test
# ---------------------------------------------------------------------------------------------


class _ExpectShadow(BaseModel):
    """One shadow entry a case expects: the rule's policy id, its would-be outcome, optionally a reason fragment."""

    model_config = ConfigDict(extra="forbid")

    policy_id: str = Field(min_length=1)
    outcome: Outcome
    reason_contains: str | None = None


class _Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Outcome | None = None
    error: ExpectedError | None = None
    policy_ids: list[str] | None = None
    constraints: dict[str, Any] | None = None
    risk_score: float | None = Field(default=None, ge=0.0, le=1.0)
    review_timeout_seconds: int | None = None
    reason_contains: str | None = None
    shadow: list[_ExpectShadow] | None = None
    """Every shadow entry the decision carries (none more; `[]` = none); not compared when absent."""

    @model_validator(mode="after")
    def _one_expectation(self) -> _Expect:
        if (self.outcome is None) == (self.error is None):
            raise ValueError("expect exactly one of `outcome` (ALLOW, DENY, ESCALATE, REQUIRE_CONFIRMATION) or `error`")
        if self.shadow is not None:
            ids = [entry.policy_id for entry in self.shadow]
            if self.error is not None:
                raise ValueError("`shadow` goes with an expected `outcome`: a proposal that errors has no decision")
            if len(set(ids)) != len(ids):
                raise ValueError("`shadow` lists a policy_id twice: a rule has at most one shadow entry")
        return self


class _Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    proposal: dict[str, Any] | None = None
    actor: str | dict[str, Any] | None = None
    capability: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    resource: str | None = None
    context: dict[str, Any] | None = None
    now: datetime | None = None
    expect: _Expect

    @field_validator("expect", mode="before")
    @classmethod
    def _outcome_shorthand(cls, value: Any) -> Any:
        return {"outcome": value} if isinstance(value, str) else value

    def build_proposal(self) -> Proposal:
        if self.proposal is not None:
            if self.capability is not None or self.parameters or self.actor is not None or self.context is not None:
                raise ValueError("give either `proposal` or the shorthand keys (actor, capability, ...), not both")
            return Proposal.model_validate(self.proposal)
        if self.capability is None:
            raise ValueError("a case needs `capability` (shorthand) or a full `proposal`")
        actor = {"id": self.actor, "type": "ai-agent"} if isinstance(self.actor, str) else self.actor
        action: dict[str, Any] = {"capability": self.capability, "parameters": self.parameters}
        if self.resource is not None:
            action["resource"] = self.resource
        return Proposal.model_validate(
            {"actor": actor or _DEFAULT_ACTOR, "action": action, "context": self.context or {}}
        )


class _CasesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    escalate_threshold: float = EngineConfig.escalate_threshold
    default_review_timeout_seconds: int = EngineConfig.default_review_timeout_seconds


class _CasesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    now: datetime | None = None
    config: _CasesConfig = Field(default_factory=_CasesConfig)
    cases: list[_Case] = Field(min_length=1)


def _load_cases(path: Path) -> _CasesFile:
    documents = [document for document in read_yaml_file(path) if document is not None]
    if len(documents) != 1 or not isinstance(documents[0], Mapping):
        raise PolicySetError(
            [PolicyProblem(message="a cases file holds one mapping with a `cases:` list", source=str(path))]
        )
    try:
        return _CasesFile.model_validate(documents[0])
    except ValidationError as exc:
        problems = [
            PolicyProblem(message=f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}", source=str(path))
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise PolicySetError(problems) from None


def _mismatches(case: _Case, evaluation: Evaluation) -> list[str]:
    expect = case.expect
    problems: list[str] = []
    if expect.outcome is not None and evaluation.outcome != expect.outcome:
        problems.append(f"outcome: expected {expect.outcome}, got {evaluation.outcome}")
    if expect.policy_ids is not None and sorted(expect.policy_ids) != sorted(evaluation.policy_ids):
        problems.append(f"policy_ids: expected {sorted(expect.policy_ids)}, got {sorted(evaluation.policy_ids)}")
    if expect.constraints is not None and expect.constraints != evaluation.constraints:
        problems.append(f"constraints: expected {expect.constraints}, got {evaluation.constraints}")
    if expect.risk_score is not None and abs(expect.risk_score - evaluation.risk_score) > 1e-9:
        problems.append(f"risk_score: expected {expect.risk_score:g}, got {evaluation.risk_score:g}")
    if expect.review_timeout_seconds is not None and expect.review_timeout_seconds != evaluation.review_timeout_seconds:
        problems.append(
            f"review_timeout_seconds: expected {expect.review_timeout_seconds}, got {evaluation.review_timeout_seconds}"
        )
    if expect.reason_contains is not None and expect.reason_contains not in evaluation.reason:
        problems.append(f"reason: expected it to contain {expect.reason_contains!r}")
    if expect.shadow is not None:
        problems.extend(_shadow_mismatches(expect.shadow, evaluation))
    return problems


def _shadow_mismatches(expected: list[_ExpectShadow], evaluation: Evaluation) -> list[str]:
    actual = {entry.policy_id: entry for entry in evaluation.shadow}
    problems: list[str] = []
    for want in expected:
        got = actual.pop(want.policy_id, None)
        if got is None:
            problems.append(f"shadow: expected an entry {want.policy_id} {want.outcome}, got none for that rule")
            continue
        if got.outcome != want.outcome:
            problems.append(f"shadow: {want.policy_id}: expected {want.outcome}, got {got.outcome} ({got.reason})")
        if want.reason_contains is not None and want.reason_contains not in got.reason:
            problems.append(
                f"shadow: {want.policy_id}: expected its reason to contain {want.reason_contains!r}, got {got.reason!r}"
            )
    problems.extend(
        f"shadow: unexpected entry {entry.policy_id} {entry.outcome} ({entry.reason}); list it under `shadow`"
        for entry in actual.values()
    )
    return problems


_NONE_REACHED = RuleMatches()


@dataclass(frozen=True)
class _CaseResult:
    mismatches: list[str]
    detail: str  # the reason, or what happened instead of a decision
    matches: RuleMatches = _NONE_REACHED  # the rules the case's proposal reached
    shadow: tuple[ShadowOutcome, ...] = ()

    def print_details(self) -> None:
        print(f"        reason: {self.detail}")
        for entry in self.shadow:
            print(f"        shadow: {entry.policy_id} would be {entry.outcome}: {entry.reason}")


def _run_case(case: _Case, policy_set: PolicySet, now: datetime, config: EngineConfig) -> _CaseResult:
    try:
        proposal = case.build_proposal()
    except (ValueError, ValidationError) as exc:
        return _CaseResult([f"the case's proposal is invalid: {exc}"], "invalid case")
    try:
        evaluation, matches = evaluate_traced(proposal, policy_set, now=case.now or now, config=config)
    except UnknownCapabilityError as exc:
        got = "error unknown_capability"
        if case.expect.error == "unknown_capability":
            return _CaseResult([], f"{got}: {exc}")
        return _CaseResult([f"expected {case.expect.outcome or case.expect.error}, got {got}: {exc}"], got)
    except ParameterSchemaError as exc:
        got = "error invalid_parameters"
        if case.expect.error == "invalid_parameters":
            return _CaseResult([], f"{got}: {exc}")
        return _CaseResult([f"expected {case.expect.outcome or case.expect.error}, got {got}: {exc}"], got)
    if case.expect.error is not None:
        mismatch = f"expected error {case.expect.error}, got {evaluation.outcome}"
        return _CaseResult([mismatch], evaluation.reason, matches, evaluation.shadow)
    return _CaseResult(_mismatches(case, evaluation), evaluation.reason, matches, evaluation.shadow)


def run_test(args: argparse.Namespace) -> int:
    """Run the cases file against the policies; print PASS/FAIL per case (and the coverage when asked); exit 1
    on any failure, or when the coverage is under `--fail-under`."""
    paths: list[Path] = list(args.policy_paths or [DEFAULT_POLICY_PATH])
    try:
        policy_set = load_policy_set(paths)
        cases_file = _load_cases(args.cases)
        config = EngineConfig(
            escalate_threshold=cases_file.config.escalate_threshold,
            default_review_timeout_seconds=cases_file.config.default_review_timeout_seconds,
        )
    except PolicySetError as exc:
        print(f"ERROR: cannot run the tests ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {format_problem(problem)}", file=sys.stderr)
        return 1
    except ValueError as exc:  # EngineConfig rejected the file's config
        print(f"ERROR: {args.cases}: config: {exc}", file=sys.stderr)
        return 1

    now = cases_file.now or _DEFAULT_NOW
    fail_under: float | None = getattr(args, "fail_under", None)
    coverage = Coverage(policy_set) if getattr(args, "coverage", False) or fail_under is not None else None
    failed = 0
    for case in cases_file.cases:
        result = _run_case(case, policy_set, now, config)
        if coverage is not None:
            coverage.record(result.matches)
        if result.mismatches:
            failed += 1
            print(f"FAIL  {case.name}")
            for mismatch in result.mismatches:
                print(f"        {mismatch}")
            result.print_details()
        else:
            print(f"PASS  {case.name}")
            if getattr(args, "verbose", False):
                result.print_details()
    total = len(cases_file.cases)
    print("-" * 60)
    print(f"PASS: {total - failed}/{total}" + (f"   FAIL: {failed}/{total}" if failed else ""))
    if coverage is None:
        return 1 if failed else 0
    print("-" * 60)
    for line in coverage.report():
        print(line)
    if fail_under is not None and coverage.percent < fail_under:
        print(f"FAIL: coverage {coverage.percent:.1f}% is under --fail-under {fail_under:g}%")
        return 1
    return 1 if failed else 0
