"""The baseline of the server benchmark: a bare FastAPI endpoint with the shape of `POST /propose`.

It parses the same body into the same pydantic `Proposal` and answers a decision of the same size, with
no authentication, engine, store or middleware: the ceiling of a Python server on these settings.
Run with the same server settings as `aegis-server serve` (uvicorn, one worker, uvloop, httptools).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI

from aegis_sdk.models import Proposal

app = FastAPI()


@app.post("/api/v1/governance/propose")
async def propose(proposal: Proposal) -> dict[str, Any]:
    return {
        "decision_id": "dec_" + uuid.uuid4().hex,
        "outcome": "ALLOW",
        "reason": "ALLOW by sql-safety/reads: Read-only queries are allowed, capped at 1000 rows; "
        "risk 0.3 = base 0.3 (medium)",
        "risk_score": 0.3,
        "constraints": {"max_rows": 1000},
        "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "audit_ref": "aud_" + uuid.uuid4().hex,
        "policy_ids": ["sql-safety/reads"],
        "confirmation_token": None,
        "expires_at": None,
        "review": None,
        "parent_decision_id": None,
    }


@app.get("/api/v1/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
