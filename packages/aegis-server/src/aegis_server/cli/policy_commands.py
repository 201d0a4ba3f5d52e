"""`aegis-server policy validate` and `aegis-server policy test`.

- `policy validate [PATH...]` compiles the files and folders (default `examples/policies`) exactly as the
  server would: exit 0 with a summary, or exit 1 listing every problem with its file, policy and rule.
- `policy test CASES.yaml [--policy PATH]...` runs a table of proposals against the policies and compares
  outcome (and optionally policy ids, constraints, risk, review timeout, a reason fragment or an expected
  error); it prints each mismatch and exits 1 if any case fails, like `opa test`.

The handlers are plain functions (`run_validate(args)`, `run_test(args)`) returning the exit code; the
sub-commands set both `handler` and `func` to them on the parsed namespace.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aegis_sdk.models import Outcome, PolicyProblem, PolicyValidation, Proposal
from aegis_server.cli.policy_replay import add_replay_command
from aegis_server.engine import (
    EngineConfig,
    Evaluation,
    ParameterSchemaError,
    PolicySet,
    PolicySetError,
    UnknownCapabilityError,
    evaluate,
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
    test.add_argument("-v", "--verbose", action="store_true", help="also print the reason of passing cases")
    test.set_defaults(handler=run_test, func=run_test)
    add_replay_command(commands)


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
                    "warnings": [w.model_dump(mode="json") for w in policy_set.warnings],
                },
                indent=2,
            )
        )
        return 0
    enabled = len(policy_set.enabled_policies)
    print(
        f"OK: {len(policy_set.capabilities)} capabilities, {len(policy_set.policies)} policies "
        f"({enabled} enabled), {policy_set.rule_count} active rules in {', '.join(map(str, paths))}"
    )
    print(f"digest: {policy_set.digest}")
    for warning in policy_set.warnings:
        print(f"warning: {format_problem(warning)}")
    return 0


# ---------------------------------------------------------------------------------------------
# test
# ---------------------------------------------------------------------------------------------


class _Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Outcome | None = None
    error: ExpectedError | None = None
    policy_ids: list[str] | None = None
    constraints: dict[str, Any] | None = None
    risk_score: float | None = Field(default=None, ge=0.0, le=1.0)
    review_timeout_seconds: int | None = None
    reason_contains: str | None = None

    @model_validator(mode="after")
    def _one_expectation(self) -> _Expect:
        if (self.outcome is None) == (self.error is None):
            raise ValueError("expect exactly one of `outcome` (ALLOW, DENY, ESCALATE, REQUIRE_CONFIRMATION) or `error`")
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
    return problems


def _run_case(case: _Case, policy_set: PolicySet, now: datetime, config: EngineConfig) -> tuple[list[str], str]:
    """Return (mismatches, what happened)."""
    try:
        proposal = case.build_proposal()
    except (ValueError, ValidationError) as exc:
        return [f"the case's proposal is invalid: {exc}"], "invalid case"
    try:
        evaluation = evaluate(proposal, policy_set, now=case.now or now, config=config)
    except UnknownCapabilityError as exc:
        got = "error unknown_capability"
        if case.expect.error == "unknown_capability":
            return [], f"{got}: {exc}"
        return [f"expected {case.expect.outcome or case.expect.error}, got {got}: {exc}"], got
    except ParameterSchemaError as exc:
        got = "error invalid_parameters"
        if case.expect.error == "invalid_parameters":
            return [], f"{got}: {exc}"
        return [f"expected {case.expect.outcome or case.expect.error}, got {got}: {exc}"], got
    if case.expect.error is not None:
        return [f"expected error {case.expect.error}, got {evaluation.outcome}"], evaluation.reason
    return _mismatches(case, evaluation), evaluation.reason


def run_test(args: argparse.Namespace) -> int:
    """Run the cases file against the policies; print PASS/FAIL per case; exit 1 on any failure."""
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
    failed = 0
    for case in cases_file.cases:
        mismatches, detail = _run_case(case, policy_set, now, config)
        if mismatches:
            failed += 1
            print(f"FAIL  {case.name}")
            for mismatch in mismatches:
                print(f"        {mismatch}")
            print(f"        reason: {detail}")
        else:
            print(f"PASS  {case.name}")
            if getattr(args, "verbose", False):
                print(f"        {detail}")
    total = len(cases_file.cases)
    print("-" * 60)
    print(f"PASS: {total - failed}/{total}" + (f"   FAIL: {failed}/{total}" if failed else ""))
    return 1 if failed else 0
