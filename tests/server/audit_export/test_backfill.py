"""`aegis-server audit export` (backfill): a time window is one contiguous range of sequences even when the
records' times are not in sequence order (replicas' clocks, the wait for the chain lock), so a receiver never
sees a gap; a closed pipe ends it quietly; an out-of-range sequence is a usage error."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from aegis_server.audit.signing_keys import audit_key_source
from aegis_server.cli import main
from aegis_server.settings import Settings
from aegis_server.store import Store
from aegis_server.store.schema import audit_records

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


async def _chain(url: str, count: int) -> None:
    """`count` records whose times go T0, T0+1m, ... except record 4, written a minute before record 3."""
    settings = Settings(db_url=url, audit_key="k" * 32)
    store = await Store.open(url, migrate=True, audit_key=audit_key_source(settings))
    try:
        for index in range(count):
            await store.append_audit("export_test", payload={"n": index})
        async with store.database.write() as conn:
            for sequence in range(1, count + 1):
                at = T0 + timedelta(minutes=sequence - (2 if sequence == 4 else 0))
                await conn.execute(
                    sa.update(audit_records).where(audit_records.c.sequence == sequence).values(created_at=at)
                )
    finally:
        await store.close()


@pytest.fixture
def chain(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
    asyncio.run(_chain(url, 8))
    return url


def _sequences(text: str) -> list[int]:
    return [json.loads(line)["sequence"] for line in text.splitlines()]


def test_a_window_is_one_range_without_gaps(chain: str, capsys: pytest.CaptureFixture[str]) -> None:
    since = (T0 + timedelta(minutes=3)).isoformat()  # record 3's time; record 4 is older than that
    until = (T0 + timedelta(minutes=7)).isoformat()  # before record 7
    assert main(["audit", "export", "--db", chain, "--since", since, "--until", until]) == 0
    assert _sequences(capsys.readouterr().out) == [3, 4, 5, 6]


def test_after_sequence_within_a_window(chain: str, capsys: pytest.CaptureFixture[str]) -> None:
    since = (T0 + timedelta(minutes=3)).isoformat()
    assert main(["audit", "export", "--db", chain, "--since", since, "--after-sequence", "5"]) == 0
    assert _sequences(capsys.readouterr().out) == [6, 7, 8]


def test_an_empty_window_writes_nothing(chain: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "export", "--db", chain, "--since", (T0 + timedelta(days=1)).isoformat()]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "exported 0 audit record(s)" in captured.err


def test_a_sequence_out_of_range_is_a_usage_error(chain: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "export", "--db", chain, "--after-sequence", "99999999999999999999999"]) == 2
    assert "--after-sequence" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_export_quietly(tmp_path: Path) -> None:
    chain = f"sqlite+aiosqlite:///{tmp_path / 'long.db'}"
    asyncio.run(_chain(chain, 600))  # more than a pipe's buffer holds
    command = [sys.executable, "-m", "aegis_server", "audit", "export", "--db", chain]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.read(10)
        process.stdout.close()  # `| head -c 10`
        error = process.stderr.read().decode()
        assert process.wait(timeout=60) == 0, error
    assert "Traceback" not in error and "BrokenPipe" not in error
