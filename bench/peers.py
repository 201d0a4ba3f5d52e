"""Peers measured in the same run, where they install from the package registry (`uv sync --group bench`).

- Agent Governance Toolkit (`agent-governance-toolkit-core`, import `agent_os`): its in-process
  `PolicyEvaluator` on rule sets of the same sizes and mix (regex `matches`, numeric `gt`/`lte`,
  membership `in`, equality on the tool name). Its rules hold one condition each and are not indexed by
  tool, so the equivalent of an AEGIS rule "capability X and condition C" is the rule on C (the tool
  test would be a second rule); every rule is evaluated for every decision.
- Galileo Agent Control (`agent-control-server` 8.15): its in-process `ControlEngine.process()`
  (`bench/peer_galileo.py`), run in a separate Python >= 3.12 environment — the package requires 3.12+
  while this workspace locks one 3.11 environment — named by AEGIS_BENCH_GALILEO_PYTHON (default
  `.bench-venvs/galileo/bin/python`; make it with `make bench-galileo-env`). Skipped when absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

from ._common import ROOT, summary_us

GALILEO_PYTHON_DEFAULT = ROOT / ".bench-venvs" / "galileo" / "bin" / "python"


def galileo_agent_control(quick: bool) -> dict[str, Any]:
    """`bench/peer_galileo.py` under the Python >= 3.12 interpreter that has agent-control-server."""
    python = Path(os.environ.get("AEGIS_BENCH_GALILEO_PYTHON", str(GALILEO_PYTHON_DEFAULT)))
    if not python.exists():
        return {
            "skipped": f"no Python >= 3.12 environment with agent-control-server at {python} (it cannot join "
            "this workspace's 3.11 lock); create it with `make bench-galileo-env` or set AEGIS_BENCH_GALILEO_PYTHON"
        }
    argv = [str(python), str(ROOT / "bench" / "peer_galileo.py"), *(["--quick"] if quick else [])]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        return {"error": f"bench/peer_galileo.py failed: {out.stderr.strip()[-400:]}"}
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _agt_rules(n: int) -> list[Any]:
    from agent_os.policies import PolicyAction, PolicyCondition, PolicyOperator, PolicyRule

    templates = [
        ("query", PolicyOperator.MATCHES, r"(?i)\b(drop|delete|truncate)\b", PolicyAction.DENY),
        ("query", PolicyOperator.MATCHES, r"(?i)\b(insert|update|merge|alter|create|grant)\b", PolicyAction.AUDIT),
        ("amount", PolicyOperator.GT, 1000, PolicyAction.AUDIT),
        ("region", PolicyOperator.IN, ["eu-west-1", "eu-central-1"], PolicyAction.ALLOW),
        ("actor", PolicyOperator.IN, ["intern-bot", "untrusted-agent", "sandbox-7"], PolicyAction.DENY),
        ("tool_name", PolicyOperator.EQ, "g0.c1", PolicyAction.ALLOW),
        ("query", PolicyOperator.MATCHES, r"(?i)^\s*(select|with|explain|show)\b", PolicyAction.ALLOW),
        ("amount", PolicyOperator.LTE, 100, PolicyAction.ALLOW),
    ]
    rules = []
    for i in range(n):
        field, op, value, action = templates[i % len(templates)]
        if field == "tool_name":
            value = f"g{i // 80}.c{i // 8}"
        rules.append(
            PolicyRule(name=f"r{i}", condition=PolicyCondition(field=field, operator=op, value=value), action=action)
        )
    return rules


def agent_governance_toolkit(sizes: list[int], decisions: int) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from agent_os.policies import PolicyDocument, PolicyEvaluator
    except ImportError as exc:
        return {"skipped": f"agent-governance-toolkit-core is not installed ({exc}); run `uv sync --group bench`"}
    contexts = [
        {"tool_name": "g0.c3", "query": "SELECT id, email FROM users WHERE id = 42", "actor": "support-bot"},
        {"tool_name": "g0.c5", "query": "DELETE FROM sessions WHERE expired", "amount": 20, "actor": "ops-agent"},
        {"tool_name": "g1.c9", "query": "UPDATE orders SET status = 'shipped'", "amount": 700, "actor": "b"},
        {"tool_name": "g0.c2", "query": "SHOW TABLES", "region": "eu-west-1", "amount": 50.5, "actor": "intern-bot"},
    ]
    cases = []
    for n in sizes:
        start = time.perf_counter()
        evaluator = PolicyEvaluator(policies=[PolicyDocument(name="bench", rules=_agt_rules(n))])
        load_s = time.perf_counter() - start
        count = decisions if n <= 1000 else max(500, decisions // 20)
        for k in range(min(200, count)):
            evaluator.evaluate(contexts[k % 4])
        samples = []
        clock = time.perf_counter_ns
        for k in range(count):
            ctx = contexts[k % 4]
            t0 = clock()
            evaluator.evaluate(ctx)
            samples.append(clock() - t0)
        stats = summary_us(samples)
        cases.append({"rules": n, "load_s": round(load_s, 3), **stats})
    return {
        "package": "agent-governance-toolkit-core",
        "evaluator": "agent_os.policies.PolicyEvaluator",
        "cases": cases,
    }


def run(quick: bool = False) -> dict[str, Any]:
    decisions = 2000 if quick else 10000
    return {
        "agent_governance_toolkit": agent_governance_toolkit([1, 100, 1_000, 10_000], decisions),
        "agent_control_server": galileo_agent_control(quick),
    }
