"""The live export through the app: the file sink gets the whole chain in order, exactly as the audit API
shows it; the HTTP sink survives a receiver's 500 without loss; `audit export` writes the same lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aegis_server.cli import main
from aegis_server.inprocess import InProcessServer

from .support import POLICIES, Receiver, assert_chain, proposal


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    try:
        yield running
    finally:
        running.close()


def _server(tmp_path: Path, **overrides: Any) -> InProcessServer:
    overrides.setdefault("audit_export_poll_interval_seconds", 0.05)
    return InProcessServer(
        [POLICIES], db_url=f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}", secret="s" * 32, **overrides
    )


async def _drive(client: httpx.AsyncClient, count: int) -> None:
    for index in range(count):
        body = proposal() if index % 2 else proposal("database.drop")
        response = await client.post("/api/v1/governance/propose", json=body)
        assert response.status_code == 200, response.text


async def _api_log(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/audit/log", params=params)).json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


async def test_file_sink_holds_the_chain_as_the_api_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "export" / "audit.jsonl"
    async with _server(tmp_path, audit_export_file=path, audit_export_batch=7) as server:
        client = server.async_http_client()
        await _drive(client, 30)
        api_records = await _api_log(client)
        metrics = (await client.get("/metrics")).text
    lines = path.read_bytes().splitlines()
    records = [json.loads(line) for line in lines]
    assert records == api_records  # the shutdown flushed everything committed, nothing more
    assert_chain(records)
    assert all(list(json.loads(line)) == sorted(json.loads(line)) for line in lines)  # sorted keys
    assert 'aegis_audit_export_records_total{sink="file"}' in metrics

    backfill = tmp_path / "backfill.jsonl"
    db = server.app.state.settings.db_url
    assert await asyncio.to_thread(main, ["audit", "export", "--db", db, "--output", str(backfill)]) == 0
    assert backfill.read_bytes() == path.read_bytes()
    assert f"exported {len(records)} audit record(s) (#1..#{len(records)})" in capsys.readouterr().err
    tail = tmp_path / "tail.jsonl"
    arguments = ["audit", "export", "--db", db, "--after-sequence", "10", "--since", "1h", "--output", str(tail)]
    assert await asyncio.to_thread(main, arguments) == 0
    assert tail.read_bytes().splitlines() == lines[10:]


async def test_http_sink_retries_a_refused_batch_and_loses_nothing(tmp_path: Path, receiver: Receiver) -> None:
    receiver.answer = lambda n: (500, {"Retry-After": "0"}) if n == 0 else (200, {})
    async with _server(
        tmp_path, audit_export_url=receiver.url, audit_export_authorization="Bearer sink-token", audit_export_batch=5
    ) as server:
        client = server.async_http_client()
        await _drive(client, 12)
        head = len(await _api_log(client))
        for _ in range(400):  # the refusal and its retry (the exporter runs beside the requests, maybe behind)
            if len(receiver.requests) >= 2:
                break
            await asyncio.sleep(0.025)
        metrics = (await client.get("/metrics")).text
    taken = receiver.taken()
    assert [record["sequence"] for record in taken] == list(range(1, head + 1))  # no loss, no duplicate taken
    assert_chain(taken)
    assert receiver.requests[0][0] == 500
    assert receiver.requests[1][2] == receiver.requests[0][2]  # the refused batch, sent again
    for _, headers, body in receiver.requests:
        sequences = [json.loads(line)["sequence"] for line in body.splitlines()]
        assert headers["content-type"] == "application/x-ndjson"
        assert headers["authorization"] == "Bearer sink-token"
        assert int(headers["x-aegis-audit-first-sequence"]) == sequences[0]
        assert int(headers["x-aegis-audit-last-sequence"]) == sequences[-1]
        assert len(sequences) <= 5
    assert 'aegis_audit_export_failures_total{sink="http"} 1.0' in metrics
    assert 'aegis_audit_export_lag_records{sink="http"}' in metrics


async def test_logs_never_name_the_url_path_the_authorization_or_contents(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answer = lambda n: (503, {}) if n < 2 else (200, {})
    with caplog.at_level("DEBUG"):
        server = _server(tmp_path, audit_export_url=receiver.url, audit_export_authorization="Bearer sink-token")
        async with server:
            await _drive(server.async_http_client(), 2)
    ours = [record for record in caplog.records if record.name.startswith("aegis_server")]  # `serve` quiets httpx
    assert any("HTTP 503" in record.getMessage() for record in ours)
    for record in ours:
        text = record.getMessage()
        assert "secret-path" not in text and "sink-token" not in text and "select 1" not in text


@pytest.mark.parametrize(
    "arguments",
    [["--since", "yesterday"], ["--since", "2026-01-01T00:00:00"], ["--after-sequence", "-1"],
     ["--since", "1h", "--until", "2h"], ["--format", "csv"]],
)  # fmt: skip
def test_bad_export_arguments_exit_2(tmp_path: Path, arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with contextlib.suppress(SystemExit):
        code = main(["audit", "export", "--db", f"sqlite+aiosqlite:///{tmp_path / 'none.db'}", *arguments])
    assert code == 2
    assert capsys.readouterr().err.strip()
