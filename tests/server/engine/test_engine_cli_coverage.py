"""`aegis-server policy test --coverage / --fail-under` and the cases' shadow expectations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from aegis_server.cli.policy_commands import add_policy_commands

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "policies"

POLICY = """
capabilities:
  - {name: payments.refund, risk_level: medium}
  - {name: payments.charge, risk_level: medium}
policies:
  - name: refunds
    rules:
      - {id: small, capability: payments.refund, condition: "action.parameters.amount <= 100", outcome: ALLOW}
      - {id: big, capability: payments.refund, condition: "action.parameters.amount > 100", outcome: ESCALATE}
      - {id: odd, capability: payments.refund, condition: "action.parameters.note == 'x'", outcome: DENY}
      - {id: strict, capability: payments.refund, condition: "action.parameters.amount > 50", outcome: DENY,
         mode: shadow, reason: refunds over 50 would be denied}
  - name: charges
    mode: shadow
    rules:
      - {id: all, capability: payments.charge, outcome: ALLOW}
  - name: retired
    enabled: false
    rules:
      - {capability: payments.refund, outcome: DENY}
"""

CASES = """
cases:
  - name: small
    capability: payments.refund
    parameters: {amount: 5, note: ok}
    expect: ALLOW
  - name: another small
    capability: payments.refund
    parameters: {amount: 7, note: ok}
    expect: ALLOW
  - name: mid
    capability: payments.refund
    parameters: {amount: 70, note: ok}
    expect: {outcome: ALLOW, shadow: [{policy_id: refunds/strict, outcome: DENY, reason_contains: over 50}]}
"""


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="aegis-server")
    add_policy_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    result: int = args.handler(args)
    return result


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(POLICY)
    cases = tmp_path / "cases.yaml"
    cases.write_text(CASES)
    return tmp_path / "policies", cases


def test_coverage_lists_every_rule_and_names_the_unreached(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policies, cases = files
    assert _run("policy", "test", str(cases), "--policy", str(policies), "--coverage") == 0
    out = capsys.readouterr().out
    assert "PASS: 3/3" in out
    table = out[out.index("Coverage of 5 rules") :]
    # every rule of the enabled policies, with its mode and times matched; the disabled policy is not counted
    assert "charges/all     shadow   0" in table
    assert "refunds/small   enforce  3" in table
    assert "refunds/big     enforce  0" in table
    assert "refunds/odd     enforce  0" in table
    assert "refunds/strict  shadow   1" in table
    assert "retired" not in table
    unreached = table[table.index("NOT REACHED by any case (3)") :]
    assert "  - charges/all (shadow)\n  - refunds/big (enforce)\n  - refunds/odd (enforce)\n" in unreached
    assert out.rstrip().endswith("2 of 5 rules reached (40.0%)")


def test_without_coverage_nothing_about_rules_is_printed(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policies, cases = files
    assert _run("policy", "test", str(cases), "--policy", str(policies)) == 0
    assert "rules reached" not in capsys.readouterr().out


def test_a_condition_that_cannot_be_evaluated_does_not_reach_its_rule(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policies, cases = files
    cases.write_text(
        "cases:\n  - name: no note\n    capability: payments.refund\n    parameters: {amount: 5}\n"
        "    expect: {outcome: DENY, reason_contains: refunds/odd}\n"
    )
    assert _run("policy", "test", str(cases), "--policy", str(policies), "--coverage") == 0
    out = capsys.readouterr().out
    assert "refunds/odd     enforce  0  (condition could not be evaluated in 1 case)" in out
    assert "  - refunds/odd (enforce)  (condition could not be evaluated in 1 case)" in out
    assert "refunds/small   enforce  1" in out  # it matched: the fail-closed DENY does not hide that


def test_cases_that_error_reach_no_rule(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    policies, cases = files
    cases.write_text("cases:\n  - {name: typo, capability: payments.refnud, expect: {error: unknown_capability}}\n")
    assert _run("policy", "test", str(cases), "--policy", str(policies), "--coverage") == 0
    assert "0 of 5 rules reached (0.0%)" in capsys.readouterr().out


def test_fail_under_sets_the_exit_code(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    policies, cases = files
    assert _run("policy", "test", str(cases), "--policy", str(policies), "--fail-under", "40") == 0
    out = capsys.readouterr().out
    assert "2 of 5 rules reached" in out  # --fail-under implies --coverage
    assert _run("policy", "test", str(cases), "--policy", str(policies), "--fail-under", "41") == 1
    assert "FAIL: coverage 40.0% is under --fail-under 41%" in capsys.readouterr().out


def test_failing_cases_still_exit_1_with_full_coverage(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policies, cases = files
    cases.write_text(
        "cases:\n  - {name: wrong, capability: payments.refund, parameters: {amount: 5, note: ok}, expect: DENY}\n"
    )
    assert _run("policy", "test", str(cases), "--policy", str(policies), "--fail-under", "0") == 1
    assert "FAIL  wrong" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["101", "-1", "eighty", "nan"])
def test_a_bad_fail_under_is_a_usage_error(
    files: tuple[Path, Path], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    policies, cases = files
    with pytest.raises(SystemExit) as exit_info:
        _run("policy", "test", str(cases), "--policy", str(policies), "--fail-under", value)
    assert exit_info.value.code == 2
    assert "is not a percentage: give a number from 0 to 100" in capsys.readouterr().err


def test_the_example_cases_leave_the_rule_docs_policies_md_names_unreached(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _run("policy", "test", str(EXAMPLES / "cases.yaml"), "--policy", str(EXAMPLES), "--coverage") == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert "NOT REACHED by any case (1): add a case that makes each of them match\n  - email-outbound/mass-mail" in out
    assert out.rstrip().endswith("14 of 15 rules reached (93.3%)")


def test_validate_counts_the_shadow_rules(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    policies, _ = files
    assert _run("policy", "validate", str(policies)) == 0
    assert "5 active rules (2 in shadow mode) in" in capsys.readouterr().out
    assert _run("policy", "validate", "--json", str(policies)) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["rules"], body["shadow_rules"]) == (5, 2)
    assert _run("policy", "validate", str(EXAMPLES)) == 0
    assert "in shadow mode" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Shadow expectations
# ---------------------------------------------------------------------------------------------


def test_shadow_mismatches_are_reported(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    policies, cases = files
    cases.write_text(
        """
cases:
  - name: wrong shadow outcome
    capability: payments.refund
    parameters: {amount: 70, note: ok}
    expect: {outcome: ALLOW, shadow: [{policy_id: refunds/strict, outcome: ESCALATE}]}
  - name: missing entry
    capability: payments.refund
    parameters: {amount: 7, note: ok}
    expect: {outcome: ALLOW, shadow: [{policy_id: refunds/strict, outcome: DENY}]}
  - name: unexpected entry
    capability: payments.refund
    parameters: {amount: 70, note: ok}
    expect: {outcome: ALLOW, shadow: []}
  - name: wrong reason
    capability: payments.refund
    parameters: {amount: 70, note: ok}
    expect: {outcome: ALLOW, shadow: [{policy_id: refunds/strict, outcome: DENY, reason_contains: nope}]}
  - name: shadow not compared when absent
    capability: payments.refund
    parameters: {amount: 70, note: ok}
    expect: ALLOW
  - name: only shadow rules is default-deny, with the entry
    capability: payments.charge
    expect: {outcome: DENY, shadow: [{policy_id: charges/all, outcome: ALLOW}]}
"""
    )
    assert _run("policy", "test", str(cases), "--policy", str(policies)) == 1
    out = capsys.readouterr().out
    assert "FAIL  wrong shadow outcome\n        shadow: refunds/strict: expected ESCALATE, got DENY (DENY by" in out
    assert "FAIL  missing entry\n        shadow: expected an entry refunds/strict DENY, got none for that rule" in out
    assert "FAIL  unexpected entry\n        shadow: unexpected entry refunds/strict DENY (DENY by" in out
    assert "list it under `shadow`" in out
    assert "FAIL  wrong reason\n        shadow: refunds/strict: expected its reason to contain 'nope'" in out
    assert "PASS  shadow not compared when absent" in out
    assert "PASS  only shadow rules is default-deny, with the entry" in out
    assert "PASS: 2/6   FAIL: 4/6" in out


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ("{error: unknown_capability, shadow: []}", "`shadow` goes with an expected `outcome`"),
        (
            "{outcome: ALLOW, shadow: [{policy_id: a/b, outcome: DENY}, {policy_id: a/b, outcome: ALLOW}]}",
            "lists a policy_id twice",
        ),
        ("{outcome: ALLOW, shadow: [{policy_id: a/b}]}", "cases.0.expect.shadow.0.outcome: Field required"),
        ("{outcome: ALLOW, shadow: [{policy_id: a/b, outcome: DENY, why: x}]}", "cases.0.expect.shadow.0.why"),
    ],
)
def test_bad_shadow_expectations_are_clear_errors(
    files: tuple[Path, Path], expect: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    policies, cases = files
    cases.write_text(f"cases:\n  - name: x\n    capability: payments.refund\n    expect: {expect}\n")
    assert _run("policy", "test", str(cases), "--policy", str(policies)) == 1
    err = capsys.readouterr().err
    assert "cannot run the tests" in err and message in err


def test_verbose_and_failures_print_the_shadow_entries(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policies, cases = files
    assert _run("policy", "test", str(cases), "--policy", str(policies), "-v") == 0
    out = capsys.readouterr().out
    assert "PASS  mid\n        reason: ALLOW by refunds/small" in out
    assert (
        "        shadow: refunds/strict would be DENY: DENY by refunds/strict: refunds over 50 would be denied" in out
    )
    cases.write_text(
        "cases:\n  - {name: f, capability: payments.refund, parameters: {amount: 70, note: ok}, expect: DENY}\n"
    )
    assert _run("policy", "test", str(cases), "--policy", str(policies)) == 1
    assert "        shadow: refunds/strict would be DENY" in capsys.readouterr().out
