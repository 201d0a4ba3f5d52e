"""Execution reports sent in the background (`decisions.report_execution_later`) against the real platform: the
batch endpoint, its per-report answers and checks, and a platform that goes down and comes back."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aegis_sdk import AegisClient

from .conftest import POLICIES, Backend

ACTOR = {"id": "support-bot", "type": "ai-agent"}
QUERY = {"capability": "database.query", "parameters": {"query": "SELECT 1", "database": "production"}}


def execution_events(client: AegisClient, decision_id: str) -> list[str]:
    return [r.event_type for r in client.audit.trail(decision_id).records if r.event_type.startswith("execution")]


def test_reports_are_delivered_after_the_call_returned_once_each(backend: Backend) -> None:
    client = backend.client()
    ids = [client.propose(ACTOR, QUERY).decision_id for _ in range(7)]
    for decision_id in ids:
        client.decisions.report_execution_later(decision_id, status="SUCCESS", duration_ms=1.5)
    client.decisions.report_execution_later(ids[0], status="SUCCESS")  # again: a duplicate, not a second record
    assert client.flush_reports()
    stats = client.report_stats
    assert (stats.queued, stats.sent, stats.failed, stats.pending) == (8, 8, 0, 0)
    for decision_id in ids:
        assert execution_events(client, decision_id) == ["execution"]


@pytest.mark.not_on_fake("any key may report an execution on the fake (docs/testing.md)")
def test_a_key_reporting_another_keys_decision_is_refused_per_report(backend: Backend) -> None:
    owner = backend.client()
    other_key = backend.create_key("other-reporter", ["governance:propose"])
    other = backend.client(api_key=other_key)
    theirs = owner.propose(ACTOR, QUERY).decision_id
    mine = other.propose(ACTOR, QUERY).decision_id
    answer = (
        backend.raw(other_key)
        .post(
            "/api/v1/governance/executions/batch",
            json={
                "reports": [{"decision_id": theirs, "status": "SUCCESS"}, {"decision_id": mine, "status": "SUCCESS"}]
            },
        )
        .json()
    )
    first, second = answer["results"]
    assert first["status"] == "error" and first["error"]["code"] == "not_proposer"
    assert second["status"] == "recorded" and second["execution"]["audit_ref"].startswith("aud_")
    assert execution_events(owner, theirs) == ["execution_rejected"]
    assert execution_events(owner, mine) == ["execution"]
    # through the reporter: counted as failed, the owner's own report still records
    other.decisions.report_execution_later(theirs, status="FAILED", error={"code": "X"})
    assert other.flush_reports() and other.report_stats.failed == 1
    owner.decisions.report_execution_later(theirs, status="SUCCESS")
    assert owner.flush_reports() and owner.report_stats.sent == 1
    assert execution_events(owner, theirs) == ["execution_rejected", "execution_rejected", "execution"]


def _serve(db_url: str, port: int, folder: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "aegis_server", "serve", "--db", db_url, "--policy", str(POLICIES)]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, "aegis-server exited early"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/ready", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "aegis-server not ready in 120 s"
        time.sleep(0.05)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_a_platform_down_then_up_gets_the_report_once(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
    cli = [sys.executable, "-m", "aegis_server"]
    subprocess.run([*cli, "db", "upgrade", "--db", db_url], check=True, capture_output=True)
    key = subprocess.run(
        [*cli, "keys", "create", "--name", "bot", "--scopes", "admin", "--actors", "*", "--db", db_url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = _serve(db_url, port, tmp_path)
    client = AegisClient(endpoint=f"http://127.0.0.1:{port}", api_key=key, retries=0, retry_delay=0.05)
    try:
        decision_id = client.propose(ACTOR, QUERY).decision_id
        _stop(process)  # the platform goes down after the decision
        client.decisions.report_execution_later(decision_id, status="SUCCESS")
        deadline = time.monotonic() + 30
        while client.report_stats.retried < 2:  # it keeps the report and tries again
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.report_stats.pending == 1 and client.report_stats.failed == 0
        process = _serve(db_url, port, tmp_path)  # and comes back
        assert client.flush_reports(timeout=60)
        stats = client.report_stats
        assert (stats.sent, stats.failed, stats.pending) == (1, 0, 0)
        assert execution_events(client, decision_id) == ["execution"]
    finally:
        client.close()
        _stop(process)


@pytest.mark.not_on_fake("the fake does not refuse a batch as a whole for one item's depth")
def test_one_report_the_platform_cannot_take_fails_alone(backend: Backend) -> None:
    client = backend.client()
    good = [client.propose(ACTOR, QUERY).decision_id for _ in range(5)]
    poison = client.propose(ACTOR, QUERY).decision_id
    nested: dict[str, object] = {}
    deep = nested
    for _ in range(40):  # deeper than a batch body may be: the platform refuses the whole batch (422)
        deep["x"] = {}
        deep = deep["x"]  # type: ignore[assignment]
    client._reporter.hurry += 1  # one batch: no lingering between the reports
    try:
        for decision_id in good[:3]:
            client.decisions.report_execution_later(decision_id, status="SUCCESS")
        client.decisions.report_execution_later(poison, status="SUCCESS", result=nested)
        for decision_id in good[3:]:
            client.decisions.report_execution_later(decision_id, status="SUCCESS")
        assert client.flush_reports()
    finally:
        client._reporter.hurry -= 1
    stats = client.report_stats
    assert (stats.sent, stats.failed, stats.pending) == (5, 1, 0)
    for decision_id in good:
        assert execution_events(client, decision_id) == ["execution"]
    assert execution_events(client, poison) == []


@pytest.mark.not_on_fake("any key may report an execution on the fake (docs/testing.md)")
def test_another_keys_batch_naming_one_decision_many_times_is_one_refusal(backend: Backend) -> None:
    owner = backend.client()
    other_key = backend.create_key("repeating-reporter", ["governance:propose"])
    theirs = owner.propose(ACTOR, QUERY).decision_id
    answer = (
        backend.raw(other_key)
        .post(
            "/api/v1/governance/executions/batch",
            json={"reports": [{"decision_id": theirs, "status": "SUCCESS"}] * 50},
        )
        .json()
    )
    assert {result["error"]["code"] for result in answer["results"]} == {"not_proposer"}
    assert execution_events(owner, theirs) == ["execution_rejected"]  # one record, not fifty
