"""examples/langchain_agent.py runs offline and its run_agent() gives the demo every outcome."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from lc_support import ROOT, execution_payload

from aegis_sdk import AegisClient


def load_example() -> ModuleType:
    path = ROOT / "examples" / "langchain_agent.py"
    spec = importlib.util.spec_from_file_location("langchain_agent_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_run_agent_reports_each_tool_call(client: AegisClient) -> None:
    example = load_example()
    steps = example.run_agent(client, thread_id="lc-test")
    assert [(s.tool_call["name"], s.outcome) for s in steps] == [
        ("query", "ALLOW"),
        ("query", "DENY (denied)"),
        ("refund", "ALLOW (confirmed)"),
        ("send_email", "REQUIRE_CONFIRMATION (confirmation_declined)"),
        ("refund", "ESCALATE (review_pending)"),
    ]
    assert steps[0].result == "3 rows (at most 1000)"
    assert all(isinstance(s.tool_call["args"], dict) for s in steps)
    assert len(list(client.decisions.list(session_id="lc-test"))) == 6  # 5 proposals + the confirmed refund
    allowed = list(client.decisions.list(session_id="lc-test", outcome="ALLOW"))
    assert len(allowed) == 2
    for decision in allowed:
        assert execution_payload(client, decision.decision_id)["status"] == "SUCCESS"


def test_main_runs_offline() -> None:
    assert load_example().main() == 0
