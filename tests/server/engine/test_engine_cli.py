"""`aegis-server policy validate` and `policy test`, through their parser and handlers."""

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
policies:
  - name: refunds
    rules:
      - {id: small, capability: payments.refund, condition: "action.parameters.amount <= 100", outcome: ALLOW,
         constraints: {max_amount: 100}}
      - {id: big, capability: payments.refund, condition: "action.parameters.amount > 100", outcome: ESCALATE}
"""


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="aegis-server")
    add_policy_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    assert args.handler is args.func
    result: int = args.handler(args)
    return result


def test_validate_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("policy", "validate", str(EXAMPLES)) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 5 capabilities")
    assert "digest: sha256:" in out


def test_validate_defaults_to_examples_policies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(EXAMPLES.parents[1])
    assert _run("policy", "validate") == 0
    assert "examples/policies" in capsys.readouterr().out


def test_validate_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text("name: a\nrules:\n  - {capability: x, outcome: ALLOW, condition: 'a.b ==' }\n")
    (tmp_path / "b.yaml").write_text("name: [\n")
    assert _run("policy", "validate", str(tmp_path)) == 1
    out = capsys.readouterr().out
    assert out.startswith("INVALID: 2 problems")
    assert "a.yaml: policy 'a' rule '0': condition 'a.b ==' does not compile: CEL syntax error" in out
    assert "b.yaml:" in out


def test_validate_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    assert _run("policy", "validate", "--json", str(tmp_path)) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["valid"] is True and body["rules"] == 2
    (tmp_path / "q.yaml").write_text("name: q\nrules: 3\n")
    assert _run("policy", "validate", "--json", str(tmp_path)) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["valid"] is False and body["errors"][0]["policy"] == "q"


def test_the_example_cases_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("policy", "test", str(EXAMPLES / "cases.yaml"), "--policy", str(EXAMPLES)) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    # the examples show all four outcomes
    for outcome in ("ALLOW", "DENY", "ESCALATE", "REQUIRE_CONFIRMATION"):
        assert outcome in (EXAMPLES / "cases.yaml").read_text()


def test_mismatches_are_printed_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        """
cases:
  - name: small ok
    capability: payments.refund
    parameters: {amount: 5}
    expect: {outcome: ALLOW, constraints: {max_amount: 100}, policy_ids: [refunds/small]}
  - name: wrong outcome
    capability: payments.refund
    parameters: {amount: 500}
    expect: ALLOW
  - name: wrong details
    capability: payments.refund
    parameters: {amount: 5}
    expect: {outcome: ALLOW, constraints: {max_amount: 5}, policy_ids: [refunds/big], risk_score: 0.9,
             reason_contains: nope}
  - name: expected an error
    capability: payments.refund
    parameters: {amount: 5}
    expect: {error: unknown_capability}
  - name: unexpected error
    capability: payments.refnud
    expect: DENY
  - name: expected error happens
    capability: payments.refnud
    expect: {error: unknown_capability}
"""
    )
    assert _run("policy", "test", str(cases), "--policy", str(tmp_path)) == 1
    out = capsys.readouterr().out
    assert "PASS  small ok" in out
    assert "FAIL  wrong outcome\n        outcome: expected ALLOW, got ESCALATE" in out
    assert "constraints: expected {'max_amount': 5}, got {'max_amount': 100}" in out
    assert "policy_ids: expected ['refunds/big'], got ['refunds/small']" in out
    assert "risk_score: expected 0.9, got 0.3" in out
    assert "reason: expected it to contain 'nope'" in out
    assert "expected error unknown_capability, got ALLOW" in out
    assert "got error unknown_capability: unknown capability 'payments.refnud': did you mean 'payments.refund'?" in out
    assert "PASS  expected error happens" in out
    assert "PASS: 2/6   FAIL: 4/6" in out


def test_bad_cases_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    cases = tmp_path / "cases.yaml"
    cases.write_text("cases:\n  - name: x\n    capability: payments.refund\n    expect: {outcome: MAYBE}\n")
    assert _run("policy", "test", str(cases), "--policy", str(tmp_path / "p.yaml")) == 1
    err = capsys.readouterr().err
    assert "cannot run the tests" in err and "cases.0.expect.outcome" in err


def test_invalid_policies_stop_the_test_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text("name: p\nrules:\n  - {capability: '*', outcome: ALLOW, condition: 'nope =='}\n")
    cases = tmp_path / "cases.yaml"
    cases.write_text("cases:\n  - {name: x, capability: a, expect: DENY}\n")
    assert _run("policy", "test", str(cases), "--policy", str(tmp_path)) == 1
    assert "does not compile" in capsys.readouterr().err


def test_case_with_both_proposal_and_shorthand_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n  - name: both\n    capability: payments.refund\n"
        "    proposal: {actor: {id: a}, action: {capability: payments.refund}}\n    expect: DENY\n"
    )
    assert _run("policy", "test", str(cases), "--policy", str(tmp_path / "p.yaml")) == 1
    assert "not both" in capsys.readouterr().out
