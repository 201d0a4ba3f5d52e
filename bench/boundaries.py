"""Trust boundaries of the engine (issue 13, findings 6 and 8): what the condition budget and the keyed
hashes cost, and what the budget buys. `python -m bench --only boundaries` (about a minute).

Each figure has its baseline in the same run:

- `engine_100_rules`: p50/p99 of `evaluate()` at 100 rules (the engine suite's set), with the conditions'
  cost models in place and with them removed (the 0.1 engine's path), interleaved in rounds;
- `keyed_hashes`: per decision, `params_hash` as HMAC-SHA256 against plain SHA-256 of the same canonical
  bytes, and the redaction of a sensitive field (HMAC against the old bare hash);
- `finding_6`: the finding's condition run by the `cel` library without a budget (1,000 recipients; 3,000
  took 7.4 s in the finding) against the whole decision with the budget (3,000 recipients);
- `calibration`: library time per estimated cost unit for condition shapes near the default budget,
  which is how the default was chosen (the slowest shape x the budget = the longest a condition can hold
  the event loop);
- `health_under_attack`: `/health` latency on a real server while costly proposals are sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import hmac
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from aegis_sdk._wire.canonical import canonical_json
from aegis_sdk.models import Capability, Policy, Proposal
from aegis_server.engine import (
    EngineConfig,
    PolicySet,
    compile_policy_set,
    evaluate,
    hash_value,
    keyed_digest,
    value_key_from_secret,
)
from aegis_server.engine._cel import compile_condition, new_context

from . import rules
from ._common import free_port, python_bin, server_process, summary_us

NOW = datetime(2025, 1, 6, 12, 0, tzinfo=timezone.utc)
FINDING = "action.parameters.to.exists(r, action.parameters.to.exists(s, r == s + 'x'))"


def _without_cost(policy_set: PolicySet) -> PolicySet:
    """The same set with every condition's cost model removed: the engine path before the budget."""
    index = {}
    for name, compiled in policy_set._index.items():
        stripped = tuple(
            dataclasses.replace(r, condition=dataclasses.replace(r.condition, cost=None)) for r in compiled.rules
        )
        index[name] = dataclasses.replace(compiled, rules=stripped)
    return dataclasses.replace(policy_set, _index=index)


def _engine_case(policy_docs: list[Any], capability_docs: list[Any], decisions: int) -> dict[str, Any]:
    policies = [Policy.model_validate(p) for p in policy_docs]
    capabilities = [Capability.model_validate(c) for c in capability_docs]
    budgeted = compile_policy_set(policies, capabilities)
    unbudgeted = _without_cost(budgeted)
    proposals = [Proposal.model_validate(p) for p in rules.proposals(len(capability_docs))]
    config = EngineConfig(value_key=value_key_from_secret(b"b" * 32))
    samples: dict[str, list[int]] = {"with_budget": [], "without_budget": []}
    clock = time.perf_counter_ns
    for k in range(2000):
        evaluate(proposals[k % len(proposals)], budgeted, now=NOW, config=config)
    gc.collect()
    rounds = 10
    for _ in range(rounds):  # interleaved, so a noisy neighbour hits both
        for label, policy_set in (("with_budget", budgeted), ("without_budget", unbudgeted)):
            for k in range(decisions // rounds):
                proposal = proposals[k % len(proposals)]
                start = clock()
                evaluate(proposal, policy_set, now=NOW, config=config)
                samples[label].append(clock() - start)
    with_budget, without = summary_us(samples["with_budget"]), summary_us(samples["without_budget"])
    return {
        "rules": budgeted.rule_count,
        "with_budget": with_budget,
        "without_budget": without,
        "p50_ratio": round(with_budget["p50_us"] / without["p50_us"], 3) if without["p50_us"] else None,
    }


def _engine(decisions: int) -> dict[str, Any]:
    policy_docs, capability_docs = rules.rule_set(100)
    plain = _engine_case(policy_docs, capability_docs, decisions)
    # One more rule per capability that iterates over the proposal's data, so the estimate runs each time.
    for cap in capability_docs:
        policy_docs[0]["rules"].append(
            {"capability": cap["name"], "condition": "action.parameters.exists(k, k == 'region')", "outcome": "ALLOW"}
        )
    iterating = _engine_case(policy_docs, capability_docs, decisions)
    return {"rule_set_100": plain, "rule_set_100_plus_an_iterating_rule": iterating}


def _per_call_ns(function: Any, n: int) -> float:
    clock = time.perf_counter_ns
    best = float("inf")
    for _ in range(5):
        start = clock()
        for _ in range(n):
            function()
        best = min(best, (clock() - start) / n)
    return round(best, 1)


def _keyed_hashes() -> dict[str, Any]:
    key = value_key_from_secret(b"s" * 32)
    parameters = {"query": "SELECT * FROM orders WHERE id = 42", "database": "production", "amount": 12.5}
    data = canonical_json(parameters)
    card = "4111111111111111"
    card_bytes = canonical_json(card)
    n = 50_000
    hmac_ns = _per_call_ns(lambda: keyed_digest(key, data), n)
    sha_ns = _per_call_ns(lambda: hashlib.sha256(data).hexdigest(), n)
    redact_ns = _per_call_ns(lambda: hash_value(card, key), n)
    bare_ns = _per_call_ns(lambda: "sha256:" + hashlib.sha256(canonical_json(card)).hexdigest(), n)
    # A decision computes params_hash once, and with an Idempotency-Key the request_hash once more.
    return {
        "params_hash_hmac_ns": hmac_ns,
        "params_hash_sha256_ns": sha_ns,
        "params_hash_ratio": round(hmac_ns / sha_ns, 2),
        "sensitive_value_hmac_ns": redact_ns,
        "sensitive_value_sha256_ns": bare_ns,
        "sensitive_value_ratio": round(redact_ns / bare_ns, 2),
        "added_per_decision_ns": round(hmac_ns - sha_ns, 1),
        "card_bytes": len(card_bytes),
        "check": hmac.compare_digest(keyed_digest(key, data), keyed_digest(key, data)),
    }


def _finding_6() -> dict[str, Any]:
    condition = compile_condition(FINDING)
    small = [f"r{i}@x.io" for i in range(1000)]
    context = new_context({"action": {"parameters": {"to": small}}})
    start = time.perf_counter()
    condition.program.execute(context)
    unbudgeted_1000 = time.perf_counter() - start
    capability = Capability.model_validate({"name": "mail.send", "risk_level": "low"})
    policy = Policy.model_validate(
        {"name": "mail", "rules": [{"capability": "mail.send", "condition": f"!({FINDING})", "outcome": "ALLOW"}]}
    )
    policy_set = compile_policy_set([policy], [capability])
    config = EngineConfig()
    proposal = Proposal.model_validate(
        {"actor": {"id": "a"}, "action": {"capability": "mail.send", "parameters": {"to": [*small] * 3}}}
    )
    times = []
    for _ in range(20):
        start = time.perf_counter_ns()
        evaluation = evaluate(proposal, policy_set, now=NOW, config=config)
        times.append(time.perf_counter_ns() - start)
    assert "evaluation_budget_exceeded" in evaluation.reason
    return {
        "library_without_budget_1000_recipients_s": round(unbudgeted_1000, 3),
        "library_without_budget_3000_recipients_s_extrapolated": round(unbudgeted_1000 * 9, 2),
        "decision_with_budget_3000_recipients_ms_p50": round(statistics.median(times) / 1e6, 3),
        "decision_with_budget_3000_recipients_ms_max": round(max(times) / 1e6, 3),
    }


_SHAPES: list[tuple[str, str, Any]] = [
    ("nested exists, string concat", FINDING, lambda n: {"to": [f"r{i:06d}@x.io" for i in range(n)]}),
    (
        "nested exists, numbers",
        "action.parameters.to.exists(r, action.parameters.to.exists(s, r == s + 1000000))",
        lambda n: {"to": list(range(n))},
    ),
    (
        "all + endsWith",
        "action.parameters.to.all(r, r.endsWith('.io'))",
        lambda n: {"to": [f"r{i}@x.io" for i in range(n)]},
    ),
    (
        "all + matches",
        "action.parameters.to.all(r, r.matches('^r[0-9]+@'))",
        lambda n: {"to": [f"r{i}@x.io" for i in range(n)]},
    ),
    ("map (quadratic)", "action.parameters.to.map(r, r).size() > 0", lambda n: {"to": list(range(n))}),
    ("filter (quadratic)", "action.parameters.to.filter(r, r > 0).size() > 0", lambda n: {"to": list(range(n))}),
    ("in over a list", "action.parameters.to.all(r, r in action.parameters.to)", lambda n: {"to": list(range(n))}),
    (
        "index a map in a loop over it",
        "action.parameters.m.exists(k, action.parameters.m[k] == -1)",
        lambda n: {"m": {f"k{i}": i for i in range(n)}},
    ),
    (
        "index a list in a loop over it",
        "action.parameters.l.exists(x, action.parameters.l[0] == x + 1)",
        lambda n: {"l": list(range(n))},
    ),
    (
        "select a map of lists in a loop",
        "action.parameters.l.exists(x, action.parameters.m.a == [x])",
        lambda n: {"l": list(range(n)), "m": {"a": [-1], "b": [list(range(10)) for _ in range(n)]}},
    ),
    (
        "nested maps",
        "action.parameters.to.exists(o, action.parameters.to.exists(p, o == p && o.a != p.a))",
        lambda n: {"to": [{"a": i, "t": ["x", "y"]} for i in range(n)]},
    ),
]


def _calibration(budget: int) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for label, source, make in _SHAPES:
        condition = compile_condition(source)
        cost = condition.cost
        assert cost is not None
        # The largest n whose estimate stays within the budget (doubling, then bisection).
        low, high = 1, 2
        while cost.estimate({"action": {"parameters": make(high)}}, 10**15) <= budget and high < 1_000_000:
            low, high = high, high * 2
        while high - low > 1:
            mid = (low + high) // 2
            if cost.estimate({"action": {"parameters": make(mid)}}, 10**15) <= budget:
                low = mid
            else:
                high = mid
        scope = {"action": {"parameters": make(low)}}
        estimated = cost.estimate(scope, 10**15)
        timings = []
        for _ in range(3):
            context = new_context(scope)
            start = time.perf_counter_ns()
            with contextlib.suppress(Exception):  # the timing is what matters here
                condition.program.execute(context)
            timings.append(time.perf_counter_ns() - start)
        best = min(timings)
        out.append(
            {
                "shape": label,
                "n_at_budget": low,
                "estimated_units": estimated,
                "library_ms": round(best / 1e6, 2),
                "ns_per_unit": round(best / max(1, estimated), 1),
            }
        )
    return {"budget": budget, "shapes": out, "worst_ms_at_budget": max(s["library_ms"] for s in out)}


def _health_under_attack(condition: str) -> dict[str, Any]:
    policy = (
        "capabilities:\n  - {name: mail.send, risk_level: low}\n"
        "policies:\n  - name: mail\n    rules:\n"
        f'      - {{capability: mail.send, outcome: ALLOW, condition: "{condition}"}}\n'
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "mail.yaml").write_text(policy)
        db = f"sqlite+aiosqlite:///{folder / 'aegis.db'}"
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        key_out = subprocess.run(
            [python_bin(), "-m", "aegis_server", "keys", "create", "--name", "bench", "--scopes", "admin", "--db", db],
            capture_output=True,
            text=True,
            check=True,
        )
        key = next(w for w in key_out.stdout.split() if w.startswith("aegis_sk_"))
        argv = [python_bin(), "-m", "aegis_server", "serve", "--db", db, "--policy", str(folder / "mail.yaml")]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        env = {"AEGIS_RATE_LIMIT_PER_MINUTE": "0"}
        with server_process(argv, f"{endpoint}/api/v1/ready", env=env, log=folder / "server.log"):
            body = {"actor": {"id": "a"}, "action": {"capability": "mail.send", "parameters": {}}}
            body["action"]["parameters"] = {"to": [f"r{i}@x.io" for i in range(3000)]}
            headers = {"Authorization": f"Bearer {key}"}
            done = threading.Event()
            proposal_ms: list[float] = []

            def attack() -> None:
                with httpx.Client(timeout=60) as client:
                    while not done.is_set():
                        start = time.perf_counter()
                        client.post(f"{endpoint}/api/v1/governance/propose", json=body, headers=headers)
                        proposal_ms.append((time.perf_counter() - start) * 1e3)

            attackers = [threading.Thread(target=attack) for _ in range(4)]
            for thread in attackers:
                thread.start()
            health_ms: list[float] = []
            with httpx.Client(timeout=30) as client:
                until = time.monotonic() + 10
                while time.monotonic() < until:
                    start = time.perf_counter()
                    client.get(f"{endpoint}/api/v1/health")
                    health_ms.append((time.perf_counter() - start) * 1e3)
                    time.sleep(0.01)
            done.set()
            for thread in attackers:
                thread.join()
    health_ms.sort()
    proposal_ms.sort()
    return {
        "attackers": 4,
        "costly_proposals": len(proposal_ms),
        "proposal_ms_p50": round(proposal_ms[len(proposal_ms) // 2], 1) if proposal_ms else None,
        "health_requests": len(health_ms),
        "health_ms_p50": round(health_ms[len(health_ms) // 2], 2),
        "health_ms_p99": round(health_ms[int(len(health_ms) * 0.99)], 2),
        "health_ms_max": round(health_ms[-1], 2),
    }


def run(quick: bool = False) -> dict[str, Any]:
    budget = EngineConfig().condition_cost_budget
    return {
        "engine_100_rules": _engine(5_000 if quick else 20_000),
        "keyed_hashes": _keyed_hashes(),
        "finding_6": _finding_6(),
        "calibration": _calibration(budget),
        # The same 3,000-recipient proposals under the finding's condition, and under `true` (the baseline:
        # what reading, validating and recording those bodies costs without any condition work).
        "health_under_attack": _health_under_attack(f"!({FINDING})"),
        "health_under_same_load_condition_true": _health_under_attack("true"),
    }


if __name__ == "__main__":
    import json
    import sys

    from ._common import RESULTS_DIR, dump_json

    results = run("--quick" in sys.argv)
    dump_json(RESULTS_DIR / "boundaries.json", results)  # `python -m bench.boundaries`; make bench writes latest.json
    print(json.dumps(results, indent=2))
