"""The policy the quickstart asks readers to write compiles with the example capabilities, and decides as
the page says (the YAML is not Python, so the snippet runner does not cover it)."""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from aegis_sdk import Proposal
from aegis_server.engine import compile_policy_set, evaluate
from aegis_server.policies.files import load_policy_paths

ROOT = Path(__file__).resolve().parents[2]


def test_the_quickstart_policy_compiles_and_decides(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    section = page.split("## 8. Write a policy", 1)[1]
    (source,) = re.findall(r"^```yaml\n(.*?)^```", section, flags=re.S | re.M)
    shutil.copy(ROOT / "examples" / "policies" / "capabilities.yaml", tmp_path / "capabilities.yaml")
    (tmp_path / "support.yaml").write_text(source, encoding="utf-8")
    documents = load_policy_paths([tmp_path])
    policy_set = compile_policy_set(documents.policies, documents.capabilities)

    def outcome(amount: float, now: datetime) -> str:
        proposal = Proposal.model_validate(
            {
                "actor": {"id": "support-bot"},
                "action": {
                    "capability": "payments.refund",
                    "parameters": {"order_id": "A-1", "amount": amount, "currency": "EUR"},
                },
            }
        )
        return evaluate(proposal, policy_set, now=now).outcome

    monday = datetime(2025, 1, 6, 12, tzinfo=timezone.utc)
    saturday = datetime(2025, 1, 11, 12, tzinfo=timezone.utc)
    assert outcome(40, monday) == "ALLOW"
    assert outcome(40, saturday) == "ESCALATE"
