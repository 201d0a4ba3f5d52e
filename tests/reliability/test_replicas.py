"""Two server processes on one PostgreSQL database under concurrent load: one valid audit chain, each
token usable once across both, and one Idempotency-Key decided once across both.

Size: AEGIS_RELIABILITY_REPLICA_ROUNDS (default 40 races of each kind, plus background proposals).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from aegis_sdk import AegisClient, AegisError, ConfirmationUsedError, Decision

from ._support import ServerProcess, StoreSnapshot, create_key, env_int, postgres_database

pytestmark = pytest.mark.postgres

ROUNDS = env_int("AEGIS_RELIABILITY_REPLICA_ROUNDS", 40)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[str, list[ServerProcess], str]]:
    with postgres_database() as url:
        first = ServerProcess(url, tmp_path / "a.log").start()
        try:
            second = ServerProcess(url, tmp_path / "b.log").start()
            try:
                yield url, [first, second], create_key(url, "replicas", ["governance:propose", "governance:read"])
            finally:
                second.stop()
        finally:
            first.stop()


def _body(capability: str, n: int) -> dict[str, Any]:
    return {
        "actor": {"id": f"agent-{n % 3}", "type": "ai-agent"},
        "action": {"capability": capability, "parameters": {"n": n} if capability == "rel.allow" else {}},
        "context": {"metadata": {"marker": f"{capability}-{n}-{uuid.uuid4().hex[:8]}"}},
    }


def _race(calls: list[Callable[[], Decision]]) -> list[Decision | AegisError]:
    """Run the calls at the same moment (a barrier), one thread each; returns answers or errors."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Decision]) -> Decision | AegisError:
        barrier.wait(timeout=30)
        try:
            return call()
        except AegisError as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_two_replicas_keep_one_chain_single_use_tokens_and_idempotency(
    replicas: tuple[str, list[ServerProcess], str],
) -> None:
    url, servers, key = replicas
    clients = [AegisClient(endpoint=s.endpoint, api_key=key, retries=3, retry_delay=0.05) for s in servers]
    answered: list[Decision] = []
    stop = threading.Event()

    def background(client: AegisClient) -> None:  # steady proposals on both replicas meanwhile
        n = 0
        while not stop.is_set():
            n += 1
            answered.append(client.propose(**_body("rel.allow", n)))

    workers = [threading.Thread(target=background, args=(c,), daemon=True) for c in clients for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        for n in range(ROUNDS):
            # One Idempotency-Key, the same body, sent to both replicas at once: one decision.
            body, idem = _body("rel.allow", n), uuid.uuid4().hex
            same = _race([partial(c.propose, **body, idempotency_key=idem) for c in clients])
            assert all(isinstance(d, Decision) for d in same), same
            assert len({d.decision_id for d in same if isinstance(d, Decision)}) == 1
            answered.extend(d for d in same if isinstance(d, Decision))

            # One token presented to both replicas at once: one ALLOW, the other refused as used.
            body = _body("rel.confirm", n)
            token = clients[n % 2].propose(**body).confirmation_token
            results = _race([partial(c.propose, **body, confirmation_token=token) for c in clients])
            allowed = [r for r in results if isinstance(r, Decision)]
            assert len(allowed) == 1 and allowed[0].outcome == "ALLOW", results
            assert all(isinstance(r, ConfirmationUsedError) for r in results if not isinstance(r, Decision)), results
            answered.extend(allowed)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        for client in clients:
            client.close()

    snapshot = StoreSnapshot(url)
    snapshot.assert_consistent()
    for decision in answered:
        snapshot.assert_received(decision.decision_id, decision.audit_ref, decision.outcome)
    children = [row["parent_decision_id"] for row in snapshot.decisions if row["parent_decision_id"]]
    assert len(children) == len(set(children)) == ROUNDS
    assert len(snapshot.records("confirmation_rejected")) == ROUNDS  # each losing presentation is audited
