"""Faults between the SDK and the server: thousands of proposals from sync and async clients, with
retries on, through a proxy that refuses, delays, resets mid-request and mid-response, stalls and
answers 503 with Retry-After. Then, from the proxy's journal and the store itself:

- zero duplicated decisions or audit records (one per logical proposal: Idempotency-Key works);
- every decision a client received is in the audit log, as received;
- every failure is the AegisError subclass the last fault calls for;
- no request is retried after a decision was delivered, and never more than `retries` times.

Size: AEGIS_RELIABILITY_PROPOSALS (default 2400 proposals, plus their confirmations: about 3,900 requests).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aegis_sdk import (
    AegisClient,
    AegisError,
    APIConnectionError,
    APITimeoutError,
    AsyncAegisClient,
    Decision,
    ExecutionReportError,
    ReviewError,
    ServerError,
)

from ._support import ServerProcess, StoreSnapshot, create_key, env_int, sqlite_url
from .faultproxy import FaultProxy

TOTAL = env_int("AEGIS_RELIABILITY_PROPOSALS", 2400)
SYNC_CLIENTS = 6
ASYNC_CLIENTS = 6
TIMEOUT = 2.0  # the clients' per-attempt timeout; the proxy stalls longer than this
WEIGHTS = {
    "pass": 55,
    "delay": 8,
    "refuse": 4,
    "reset_request": 8,
    "reset_response": 8,
    "stall_response": 0.6,
    "unavailable": 8,
    "unavailable_after": 8,
}


@dataclass
class Outcome:
    """One logical operation as the client lived it."""

    kind: str  # "allow", "deny", "escalate", "confirm" (the REQUIRE_CONFIRMATION proposal), "confirmed"
    key: str  # the Idempotency-Key of every attempt
    marker: str  # context.metadata.marker, unique per logical proposal
    retries: int
    decision: Decision | None = None
    error: BaseException | None = None
    parent: str | None = None  # for "confirmed": the decision whose token was presented


CAPABILITY = {"allow": "rel.allow", "deny": "rel.deny", "escalate": "rel.escalate", "confirm": "rel.confirm"}


def _kind(index: int) -> str:
    return {7: "deny", 8: "escalate", 9: "confirm"}.get(index % 10, "allow")


def _proposal(kind: str, marker: str, n: int) -> dict[str, Any]:
    parameters = {"n": n, "secret": f"s-{marker}"} if kind == "allow" else {}
    return {
        "actor": {"id": f"agent-{n % 7}", "type": "ai-agent"},
        "action": {"capability": CAPABILITY[kind], "parameters": parameters},
        "context": {"session_id": f"session-{n % 13}", "metadata": {"marker": marker}},
    }


def _sync_worker(client: AegisClient, indexes: range, retries: int, out: list[Outcome], lock: threading.Lock) -> None:
    for index in indexes:
        kind = _kind(index)
        marker, key = f"m{index}", uuid.uuid4().hex
        outcome = Outcome(kind, key, marker, retries)
        body = _proposal(kind, marker, index)
        try:
            outcome.decision = client.propose(**body, idempotency_key=key)
        except AegisError as exc:
            outcome.error = exc
        with lock:
            out.append(outcome)
        if kind == "confirm" and outcome.decision is not None and outcome.decision.confirmation_token:
            confirmed = Outcome(
                "confirmed", uuid.uuid4().hex, f"c{index}", retries, parent=outcome.decision.decision_id
            )
            body["context"]["metadata"]["marker"] = confirmed.marker
            try:
                confirmed.decision = client.propose(
                    **body, confirmation_token=outcome.decision.confirmation_token, idempotency_key=confirmed.key
                )
            except AegisError as exc:
                confirmed.error = exc
            with lock:
                out.append(confirmed)


async def _async_worker(client: AsyncAegisClient, indexes: range, retries: int, out: list[Outcome]) -> None:
    for index in indexes:
        kind = _kind(index)
        marker, key = f"m{index}", uuid.uuid4().hex
        outcome = Outcome(kind, key, marker, retries)
        body = _proposal(kind, marker, index)
        try:
            outcome.decision = await client.propose(**body, idempotency_key=key)
        except AegisError as exc:
            outcome.error = exc
        out.append(outcome)
        if kind == "confirm" and outcome.decision is not None and outcome.decision.confirmation_token:
            confirmed = Outcome(
                "confirmed", uuid.uuid4().hex, f"c{index}", retries, parent=outcome.decision.decision_id
            )
            body["context"]["metadata"]["marker"] = confirmed.marker
            try:
                confirmed.decision = await client.propose(
                    **body, confirmation_token=outcome.decision.confirmation_token, idempotency_key=confirmed.key
                )
            except AegisError as exc:
                confirmed.error = exc
            out.append(confirmed)


def _expected_errors(fault: str) -> tuple[type[AegisError], ...]:
    if fault in ("reset_request", "reset_response", "refuse"):
        return (APIConnectionError,)
    if fault == "stall_response":
        return (APITimeoutError,)
    if fault in ("unavailable", "unavailable_after"):
        return (ServerError,)
    return (APITimeoutError,)  # "pass"/"delay" can only fail by the server being slower than the timeout


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    db = sqlite_url(tmp_path)
    with ServerProcess(db, tmp_path / "server.log") as process:
        yield process, create_key(db, "faults", ["governance:propose", "governance:read"])


async def test_proposals_through_faults_are_decided_once_audited_and_never_retried_after_delivery(
    served: tuple[ServerProcess, str],
) -> None:
    server, key = served
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    per_client = max(1, TOTAL // (SYNC_CLIENTS + ASYNC_CLIENTS))
    ranges = [range(i * per_client, (i + 1) * per_client) for i in range(SYNC_CLIENTS + ASYNC_CLIENTS)]
    # Half of the clients retry 3 times, the other half once, so some calls run out of retries.
    retries_of = [3 if i % 2 == 0 else 1 for i in range(len(ranges))]

    with FaultProxy(server.port, WEIGHTS, seed=20240601, stall_seconds=TIMEOUT + 0.5, retry_after="0") as proxy:
        sync_clients = [
            AegisClient(endpoint=proxy.endpoint, api_key=key, timeout=TIMEOUT, retries=retries_of[i], retry_delay=0.01)
            for i in range(SYNC_CLIENTS)
        ]
        async_clients = [
            AsyncAegisClient(
                endpoint=proxy.endpoint, api_key=key, timeout=TIMEOUT, retries=retries_of[i], retry_delay=0.01
            )
            for i in range(SYNC_CLIENTS, SYNC_CLIENTS + ASYNC_CLIENTS)
        ]
        try:
            await asyncio.gather(
                *(
                    asyncio.to_thread(_sync_worker, client, ranges[i], retries_of[i], outcomes, lock)
                    for i, client in enumerate(sync_clients)
                ),
                *(
                    _async_worker(client, ranges[SYNC_CLIENTS + i], retries_of[SYNC_CLIENTS + i], outcomes)
                    for i, client in enumerate(async_clients)
                ),
            )
        finally:
            for client in sync_clients:
                client.close()
            for aclient in async_clients:
                await aclient.aclose()
    journal = proxy.by_key()
    counts = proxy.counts()
    snapshot = StoreSnapshot(server.db_url)

    # The run exercised every fault, and some calls ran out of retries.
    assert all(counts[name] > 0 for name in WEIGHTS), counts
    assert len(outcomes) >= TOTAL
    failed = [o for o in outcomes if o.error is not None]
    assert failed, "no call exhausted its retries: the faults were too gentle to test the error mapping"

    # The store is whole: the chain verifies, no decision without both of its audit records.
    snapshot.assert_consistent()

    # One logical proposal, at most one recorded proposal; exactly one when the client got its decision.
    recorded = snapshot.decisions_per_marker()
    assert max(recorded.values()) == 1, [m for m, n in recorded.items() if n > 1]
    stored_keys = {row["key"]: row["decision_id"] for row in snapshot.idempotency}
    assert len(stored_keys) == len(snapshot.decisions), "a decision was recorded without its Idempotency-Key"

    for outcome in outcomes:
        attempts = journal.get(outcome.key, [])
        assert len(attempts) <= outcome.retries + 1, (outcome.key, [a.fault for a in attempts])
        delivered = [i for i, a in enumerate(attempts) if a.delivered]
        if outcome.decision is not None:
            decision = outcome.decision
            snapshot.assert_received(decision.decision_id, decision.audit_ref, decision.outcome)
            assert recorded.get(outcome.marker) == 1
            assert stored_keys[outcome.key] == decision.decision_id
            # Delivered once, by the last attempt: nothing was sent after the client had its decision.
            assert delivered == [len(attempts) - 1], (outcome.key, [(a.fault, a.delivered) for a in attempts])
            if outcome.kind == "confirmed":
                assert decision.outcome == "ALLOW"
                assert decision.parent_decision_id == outcome.parent
                assert snapshot.by_id[outcome.parent]["token_used_by"] == decision.decision_id
        else:
            error = outcome.error
            assert isinstance(error, AegisError), repr(error)
            assert not delivered, (outcome.key, [(a.fault, a.delivered) for a in attempts])
            expected = set(_expected_errors(attempts[-1].fault)) if attempts else set()
            if len(attempts) < outcome.retries + 1:  # an attempt refused before the proxy read its request
                expected.add(APIConnectionError)
            assert isinstance(error, tuple(expected)), (repr(error), [a.fault for a in attempts])
            if isinstance(error, APIConnectionError) and APITimeoutError not in expected:
                assert not isinstance(error, APITimeoutError), repr(error)
            if isinstance(error, ServerError):
                assert error.status_code == 503
            # A call that failed either never reached a decision or left exactly the one it made.
            assert recorded.get(outcome.marker, 0) <= 1

    # A token produced at most one ALLOW, whatever the faults did to the confirmation.
    children: dict[str, int] = {}
    for row in snapshot.decisions:
        if row["parent_decision_id"] is not None:
            children[row["parent_decision_id"]] = children.get(row["parent_decision_id"], 0) + 1
    assert all(n == 1 for n in children.values()), children


@pytest.mark.parametrize("fault", ["reset_response", "unavailable_after"])
def test_a_review_or_execution_report_whose_answer_was_lost_is_not_reported_as_a_failure(
    served: tuple[ServerProcess, str], fault: str
) -> None:
    """Reviews and execution reports are not idempotent: when the first attempt was applied but its answer
    lost, the retry meets 409 (not_pending / already_reported). The client must return what was applied,
    not a failure — and a real conflict (another reviewer, another report) must still be an error."""
    server, _ = served
    admin = create_key(server.db_url, f"admin-{fault}", ["admin"])
    agent = create_key(server.db_url, f"agent-{fault}", ["governance:propose"])  # the key that proposed may not review
    other = create_key(server.db_url, f"other-{fault}", ["governance:review"])
    with (
        AegisClient(endpoint=server.endpoint, api_key=agent, retries=0) as proposer,
        AegisClient(endpoint=server.endpoint, api_key=admin, retries=0) as direct,
    ):
        approve_me = proposer.propose(actor={"id": "a"}, action={"capability": "rel.escalate"})
        deny_me = proposer.propose(actor={"id": "a"}, action={"capability": "rel.escalate"})
        report_me = direct.propose(actor={"id": "a"}, action={"capability": "rel.allow"})  # reported by admin
        conflicted = proposer.propose(actor={"id": "a"}, action={"capability": "rel.escalate"})
    # Per call: the first attempt meets the fault, the retry passes.
    script = [fault, "pass"] * 3
    with (
        FaultProxy(server.port, {"pass": 1}, script=script) as proxy,
        AegisClient(endpoint=proxy.endpoint, api_key=admin, retries=2, retry_delay=0.01) as client,
    ):
        approved = client.decisions.review(approve_me.decision_id, approve=True)
        assert approved.review is not None and approved.review.status == "approved"
        assert approved.confirmation_token  # the answer the lost attempt carried
        denied = client.decisions.review(deny_me.decision_id, approve=False)
        assert denied.outcome == "DENY" and denied.review is not None and denied.review.status == "denied"
        record = client.decisions.report_execution(report_me.decision_id, status="SUCCESS")
        assert record.status == "SUCCESS" and record.decision_id == report_me.decision_id
    assert [a.fault for a in proxy.attempts if a.path.endswith(("/review", "/execution"))] == [fault, "pass"] * 3
    # Real conflicts are still errors: another reviewer's decision, a second report with another status.
    with AegisClient(endpoint=server.endpoint, api_key=other, retries=0) as second:
        second.decisions.review(conflicted.decision_id, approve=False)
    with (
        FaultProxy(server.port, {"pass": 1}, script=[fault, "pass"] * 2) as proxy,
        AegisClient(endpoint=proxy.endpoint, api_key=admin, retries=2, retry_delay=0.01) as client,
    ):
        with pytest.raises(ReviewError):
            client.decisions.review(conflicted.decision_id, approve=True)
        with pytest.raises(ExecutionReportError):
            client.decisions.report_execution(report_me.decision_id, status="FAILED")
