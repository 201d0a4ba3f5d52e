"""Run by the multi-process store tests as `python _store_worker.py MODE URL ...` (a separate OS process).

- `append URL TAG N`: open the store (migrating, like a server starting), append N audit records
  concurrently, print "done".
- `consume URL PARENT CHILD`: record an ALLOW that consumes PARENT's token; print "won" or "lost".
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timezone

from aegis_sdk.models import Decision
from aegis_server.store import NewDecision, Store, TokenAlreadyUsed, format_timestamp


async def _append(url: str, tag: str, count: int) -> None:
    store = await Store.open(url, migrate=True)
    try:
        await asyncio.gather(*(store.append_audit("worker", payload={"tag": tag, "i": i}) for i in range(count)))
    finally:
        await store.close()
    print("done")


async def _consume(url: str, parent: str, child: str) -> None:
    store = await Store.open(url, migrate=False)
    now = datetime.now(timezone.utc)
    decision = Decision(
        decision_id=child,
        outcome="ALLOW",
        reason="confirmed",
        risk_score=0.1,
        constraints={},
        timestamp=format_timestamp(now),
        audit_ref="",
        parent_decision_id=parent,
    )
    try:
        await store.record_decision(
            NewDecision(
                decision=decision,
                actor_id="agent-1",
                capability="database.query",
                params_hash="ab" * 32,
                consumes_token_of=parent,
            )
        )
        print("won")
    except TokenAlreadyUsed:
        print("lost")
    finally:
        await store.close()


def main(argv: list[str]) -> None:
    mode, url, *rest = argv
    if mode == "append":
        asyncio.run(_append(url, rest[0], int(rest[1])))
    elif mode == "consume":
        asyncio.run(_consume(url, rest[0], rest[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}; use append or consume")


if __name__ == "__main__":
    main(sys.argv[1:])
