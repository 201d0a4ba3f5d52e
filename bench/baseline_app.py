"""The baseline of the server benchmark: a bare FastAPI endpoint with the shape of `POST /propose`.

It parses the same body into the same pydantic `Proposal` and answers a fixed decision dict of the same
size (no ids, no clock: the issue's baseline), with no authentication, engine, store or middleware: the
ceiling of a Python server on these settings.
Run with the same server settings as `aegis-server serve` (uvicorn, one worker, uvloop, httptools).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from aegis_sdk.models import Proposal

app = FastAPI()


@app.post("/api/v1/governance/propose")
async def propose(proposal: Proposal) -> dict[str, Any]:
    return {
        "decision_id": "dec_019af3c2b1a04f6e9d2c7b15a3e8",
        "outcome": "ALLOW",
        "reason": "ALLOW by sql-safety/reads: Read-only queries are allowed, capped at 1000 rows; "
        "risk 0.3 = base 0.3 (medium)",
        "risk_score": 0.3,
        "constraints": {"max_rows": 1000},
        "timestamp": "2026-12-07T05:09:27.123456Z",
        "audit_ref": "aud_019af3c2b1a0c4d18e7f2a9b6c30",
        "policy_ids": ["sql-safety/reads"],
        "confirmation_token": None,
        "expires_at": None,
        "review": None,
        "parent_decision_id": None,
    }


@app.get("/api/v1/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
