"""The cost of the keyed audit chain (issue 13, finding 4), each with its baseline of the same run.

- `link`: one record's link, version 1 (plain SHA-256, AEGIS 0.1) against version 2 (HMAC-SHA256 under the
  audit key, a prepared `hmac` state copied per record), on the records a decision writes;
- `per_decision`: what the store's batch writer spends linking one decision's two records
  (`chained_rows`: canonical JSON and the link) with either formula;
- `checkpoint`: signing a checkpoint (Ed25519) and writing it durably (append + fsync, `latest.json`
  replaced + fsync), which the server does at most once a second, off the request path.

Run alone: `python -m bench.audit_chain` (prints JSON; `--quick` for fewer rounds). Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aegis_server.audit.checkpoints import CheckpointDirectory, sign_checkpoint
from aegis_server.audit.signing_keys import new_signing_key_pem, parse_private_key
from aegis_server.store.audit_append import chained_rows
from aegis_server.store.chain import ChainLinker, link_hash

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def _entries() -> list[dict[str, Any]]:
    """The "proposal" and "decision" records of one typical decision."""
    common = {"decision_id": "dec_" + secrets.token_hex(16), "actor_id": "support-bot-7", "capability": "crm.refund"}
    return [
        {
            "event_type": "proposal",
            "payload": {
                "actor": {"id": "support-bot-7", "type": "ai-agent"},
                "action": {"capability": "crm.refund", "parameters": {"order_id": "A-1234", "amount": 42.5}},
                "context": {"session_id": "s-1", "reason": "customer asked"},
            },
            **common,
        },
        {
            "event_type": "decision",
            "outcome": "ALLOW",
            "payload": {
                "outcome": "ALLOW",
                "reason": "refunds under 100 are allowed",
                "risk_score": 0.2,
                "constraints": {},
                "policy_ids": ["refunds/1"],
                "actor_type": "ai-agent",
                "params_hash": "ab" * 32,
                "parent_decision_id": None,
                "expires_at": None,
                "review_deadline": None,
                "confirmation_token_issued": False,
                "idempotency_key": True,
            },
            **common,
        },
    ]


class _Version1:
    link = staticmethod(link_hash)


def _best_ns_per_op(work: Any, rounds: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter_ns()
        for _ in range(rounds):
            work()
        best = min(best, (time.perf_counter_ns() - started) / rounds)
    return best


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 2_000 if quick else 20_000
    linker = ChainLinker(secrets.token_bytes(32))
    rows, _ = chained_rows((0, "0" * 64), _entries(), NOW, linker)
    record = rows[1]
    v1_link = _best_ns_per_op(lambda: link_hash(record), rounds)
    v2_link = _best_ns_per_op(lambda: linker.link(record), rounds)
    entries = _entries()
    v1_decision = _best_ns_per_op(lambda: chained_rows((7, "0" * 64), entries, NOW, _Version1), rounds)  # type: ignore[arg-type]
    v2_decision = _best_ns_per_op(lambda: chained_rows((7, "0" * 64), entries, NOW, linker), rounds)
    key = parse_private_key(new_signing_key_pem(), "bench")
    body = {"format": "aegis-audit-checkpoint/1", "chain_version": 2, "v2_from": 1, "sequence": 123456}
    body |= {"head_hash": "cd" * 32, "time": "2026-12-06T12:00:00.000000Z", "writer": "bench:1", "key_id": "0" * 16}
    sign = _best_ns_per_op(lambda: sign_checkpoint(key, body), rounds // 10)
    with tempfile.TemporaryDirectory() as folder:
        directory = CheckpointDirectory(Path(folder))
        checkpoint = sign_checkpoint(key, body)
        write = _best_ns_per_op(lambda: directory.write(checkpoint), 20 if quick else 100, repeat=3)
    return {
        "link_us": {"v1_sha256": round(v1_link / 1000, 3), "v2_hmac": round(v2_link / 1000, 3)},
        "link_ratio_v2_over_v1": round(v2_link / v1_link, 2),
        "per_decision_us": {"v1_sha256": round(v1_decision / 1000, 2), "v2_hmac": round(v2_decision / 1000, 2)},
        "per_decision_ratio_v2_over_v1": round(v2_decision / v1_decision, 2),
        "per_decision_extra_us": round((v2_decision - v1_decision) / 1000, 2),
        "checkpoint_sign_us": round(sign / 1000, 1),
        "checkpoint_write_ms": round(write / 1e6, 2),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_chain", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
