"""Crashes: SIGKILL the server under load, several times, on SQLite and on PostgreSQL, restarting it on
the same database each time. Afterwards:

- the audit chain verifies and holds every decision a client was answered, as answered;
- no half-written decision (each has its proposal and decision records, each record its decision);
- every logical proposal, retried after the crashes with its Idempotency-Key, is decided exactly once;
- pending escalations are still pending (and can be approved), unused tokens still work once, used
  tokens stay used.

Size: AEGIS_RELIABILITY_KILLS (default 3 kills per backend), AEGIS_RELIABILITY_DECISIONS_PER_ROUND
(default 60 decisions answered between two kills).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aegis_sdk import AegisClient, AegisError, ConfirmationUsedError, Decision

from ._support import ServerProcess, StoreSnapshot, cli, create_key, env_int, postgres_database, sqlite_url

KILLS = env_int("AEGIS_RELIABILITY_KILLS", 3)
PER_ROUND = env_int("AEGIS_RELIABILITY_DECISIONS_PER_ROUND", 60)
LOAD_THREADS = 6
ROUND_DEADLINE = 60.0  # a round waits at most this long for its decisions (a stuck server fails the test)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        with postgres_database() as url:
            yield url


@dataclass
class Call:
    body: dict[str, Any]
    key: str
    token: str | None = None
    decision: Decision | None = None
    error: AegisError | None = None


def _body(capability: str, marker: str, n: int) -> dict[str, Any]:
    return {
        "actor": {"id": f"agent-{n % 5}", "type": "ai-agent"},
        "action": {"capability": capability, "parameters": {"n": n} if capability == "rel.allow" else {}},
        "context": {"metadata": {"marker": marker}},
    }


class Load:
    """Threads that propose (ALLOW, and REQUIRE_CONFIRMATION followed by its confirmation) until stopped,
    whatever happens to the server: calls that fail after their retries are kept for later."""

    def __init__(self, endpoint: str, key: str) -> None:
        self.endpoint, self.key = endpoint, key
        self.calls: list[Call] = []
        self.answered = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(LOAD_THREADS)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _call(self, client: AegisClient, call: Call) -> None:
        try:
            call.decision = client.propose(**call.body, confirmation_token=call.token, idempotency_key=call.key)
        except AegisError as exc:
            call.error = exc
        with self._lock:
            self.calls.append(call)
            if call.decision is not None:
                self.answered += 1

    def _run(self, worker: int) -> None:
        with AegisClient(endpoint=self.endpoint, api_key=self.key, timeout=10, retries=2, retry_delay=0.05) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                marker = f"w{worker}-{n}"
                if n % 4:
                    self._call(client, Call(_body("rel.allow", marker, n), uuid.uuid4().hex))
                    continue
                first = Call(_body("rel.confirm", marker, n), uuid.uuid4().hex)
                self._call(client, first)
                if first.decision is not None and first.decision.confirmation_token:
                    second = _body("rel.confirm", marker + "-c", n)
                    self._call(client, Call(second, uuid.uuid4().hex, first.decision.confirmation_token))

    def wait_for(self, answered: int) -> None:
        deadline = time.monotonic() + ROUND_DEADLINE
        while self.answered < answered:
            assert time.monotonic() < deadline, f"only {self.answered} of {answered} decisions answered in time"
            time.sleep(0.01)


def test_sigkill_under_load_loses_nothing_and_doubles_nothing(db_url: str, tmp_path: Path) -> None:
    server = ServerProcess(db_url, tmp_path / "server.log").start()
    try:
        key = create_key(db_url, "crash-agent", ["governance:propose", "governance:read"])
        reviewer = create_key(db_url, "crash-reviewer", ["governance:review", "governance:read"])
        with AegisClient(endpoint=server.endpoint, api_key=key, retries=5, retry_delay=0.1) as client:
            # State that must survive the crashes.
            pending = [client.propose(**_body("rel.escalate", f"esc-{i}", i)) for i in range(4)]
            unused = [
                (_body("rel.confirm", f"unused-{i}", i), client.propose(**_body("rel.confirm", f"unused-{i}", i)))
                for i in range(4)
            ]
            used = []
            for i in range(4):
                body = _body("rel.confirm", f"used-{i}", i)
                token = client.propose(**body).confirmation_token
                assert token is not None
                assert client.propose(**body, confirmation_token=token).outcome == "ALLOW"
                used.append((body, token))

        with Load(server.endpoint, key) as load:
            for _ in range(KILLS):
                load.wait_for(load.answered + PER_ROUND)
                server.kill()
                server.start()
            load.wait_for(load.answered + PER_ROUND)
        calls = list(load.calls)
        assert server.starts == KILLS + 1

        # Every call the crashes broke is retried with its own Idempotency-Key: decided exactly once.
        with AegisClient(endpoint=server.endpoint, api_key=key, retries=5, retry_delay=0.1) as client:
            for call in calls:
                if call.decision is None:
                    call.decision = client.propose(**call.body, confirmation_token=call.token, idempotency_key=call.key)
        failed = sum(1 for call in calls if call.error is not None)

        snapshot = StoreSnapshot(db_url)
        snapshot.assert_consistent()
        stored_keys = {row["key"]: row["decision_id"] for row in snapshot.idempotency}
        recorded = snapshot.decisions_per_marker()
        for call in calls:
            assert call.decision is not None
            snapshot.assert_received(call.decision.decision_id, call.decision.audit_ref, call.decision.outcome)
            assert stored_keys[call.key] == call.decision.decision_id
            assert recorded[call.body["context"]["metadata"]["marker"]] == 1
            if call.token is not None:
                assert call.decision.outcome == "ALLOW"
        children = [row["parent_decision_id"] for row in snapshot.decisions if row["parent_decision_id"]]
        assert len(children) == len(set(children)), "a token produced two ALLOWs"
        assert failed > 0 or KILLS == 0, "no call was in flight at a kill: the kills did not hit the load"

        with (
            AegisClient(endpoint=server.endpoint, api_key=key, retries=2) as client,
            AegisClient(endpoint=server.endpoint, api_key=reviewer, retries=2) as review,
        ):
            # Pending escalations survived, still pending, and can still be approved and used.
            for decision in pending:
                assert client.decisions.get(decision.decision_id).review.status == "pending"  # type: ignore[union-attr]
                approved = review.decisions.review(decision.decision_id, approve=True)
                body = _body("rel.escalate", f"esc-{pending.index(decision)}", pending.index(decision))
                assert client.propose(**body, confirmation_token=approved.confirmation_token).outcome == "ALLOW"
            # Unused tokens survived: each works once.
            for body, decision in unused:
                assert client.propose(**body, confirmation_token=decision.confirmation_token).outcome == "ALLOW"
                with pytest.raises(ConfirmationUsedError):
                    client.propose(**body, confirmation_token=decision.confirmation_token)
            # Used tokens stay used: those used before the crashes and those used under load.
            replays = [(body, token) for body, token in used]
            replays += [(c.body, c.token) for c in calls if c.token is not None]
            for body, token in replays:
                with pytest.raises(ConfirmationUsedError):
                    client.propose(**body, confirmation_token=token)
    finally:
        server.stop()
    cli(db_url, "audit", "verify")  # exit 0: the chain is sound
    StoreSnapshot(db_url).assert_consistent()
