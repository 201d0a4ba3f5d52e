"""Issue 13, finding 4: the tail of the audit could be cut and the chain recomputed unnoticed.

Each attack of the finding is made here as an attacker with write access to the database would make it
(SQL on the store's own engine), and each must now fail verification: deleting the last records or all
of them (the signed checkpoint says how far the chain went), rewriting a record and re-hashing its
successors with plain SHA-256 (the chain is keyed), rewriting the keyed part as version 1 (the
checkpoint carries where the keyed part starts), editing a decision row or dropping a decision's audit
record (decisions are checked against the audit). The server refuses to start on a cut chain and refuses
to append to a chain cut under it; a 0.1 chain keeps verifying and goes on keyed; checkpoints are written
while records are appended and at shutdown; a tampered checkpoint is found. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from aegis_sdk._wire.canonical import canonical_json
from aegis_sdk.models import Decision
from aegis_server.app import StartupError, create_app
from aegis_server.audit.anchor import AuditAnchor
from aegis_server.audit.checkpoints import Checkpoint, verify_signature
from aegis_server.audit.signing_keys import audit_key_source, load_signing_key, public_key_pem
from aegis_server.audit.verification import verify_audit
from aegis_server.cli import main as cli_main
from aegis_server.settings import Settings
from aegis_server.store import (
    AuditChainCut,
    AuditKeyError,
    AuditKeySource,
    NewDecision,
    Store,
    format_timestamp,
    link_hash,
    verify_database,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@dataclass
class Anchored:
    settings: Settings
    store: Store
    anchor: AuditAnchor

    @property
    def directory(self) -> Path:
        return self.anchor.directory.path

    async def verify(self, **kwargs: Any) -> Any:
        return await verify_audit(
            self.store, checkpoint=await self.anchor.latest(), public_key=self.anchor.public_key, **kwargs
        )

    async def sql(self, statement: str, **values: Any) -> None:
        async with self.store.engine.begin() as conn:
            await conn.execute(sa.text(statement), values)


def _settings(store_url: str, folder: Path, **overrides: Any) -> Settings:
    return Settings(db_url=store_url, policy_paths=(), audit_checkpoint_dir=folder / "anchor", **overrides)


@pytest.fixture
async def anchored(store_url: str, tmp_path: Path) -> AsyncIterator[Anchored]:
    settings = _settings(store_url, tmp_path)
    store = await Store.open(store_url, audit_key=audit_key_source(settings))
    anchor = AuditAnchor.from_settings(settings, store)
    assert anchor is not None
    await anchor.check_startup()  # as the server does: only a verified head is checkpointed
    try:
        yield Anchored(settings, store, anchor)
    finally:
        await store.close()


def _decision(number: int, outcome: str = "ALLOW") -> NewDecision:
    decision = Decision(
        decision_id=f"dec_{number:04d}",
        outcome=outcome,  # type: ignore[arg-type]
        reason="policy",
        risk_score=0.1,
        constraints={},
        timestamp=format_timestamp(T0),
        audit_ref="",
        policy_ids=["base/1"],
    )
    return NewDecision(
        decision=decision,
        actor_id="agent-1",
        capability="database.query",
        params_hash="ab" * 32,
        proposal_audit={"actor": {"id": "agent-1"}, "action": {"capability": "database.query"}},
    )


async def _fill(anchored: Anchored, decisions: int = 5) -> None:
    """`decisions` decisions (2 records each), a checkpoint of the head."""
    for number in range(1, decisions + 1):
        await anchored.store.record_decision(_decision(number))
    assert await anchored.anchor.checkpoint() is not None


def _codes(result: Any) -> set[str]:
    return {problem.code for problem in result.problems}


async def test_an_untouched_chain_verifies_against_its_checkpoint(anchored: Anchored) -> None:
    await _fill(anchored)
    result = await anchored.verify()
    assert result.valid, (result.first_broken, result.problems)
    assert (result.records_checked, result.chain_version, result.keyed_from) == (10, 2, 1)
    assert result.checkpoint is not None and result.checkpoint.sequence == 10 and result.checkpoint.signature_valid


async def test_deleting_the_last_records_is_a_tail_cut_naming_them(anchored: Anchored) -> None:
    await _fill(anchored)
    # The attacker also deletes the decision rows of the records, so the tables agree with each other.
    await anchored.sql("DELETE FROM audit_records WHERE sequence > 6")
    await anchored.sql("DELETE FROM decisions WHERE decision_id IN ('dec_0004', 'dec_0005')")
    assert (await anchored.store.verify_chain()).valid  # the chain alone cannot tell
    result = await anchored.verify()
    assert not result.valid
    assert _codes(result) == {"tail_cut"}
    assert "records #7..#10 are missing" in result.problems[0].message


async def test_deleting_every_record_is_a_tail_cut(anchored: Anchored) -> None:
    await _fill(anchored)
    await anchored.sql("DELETE FROM audit_records")
    await anchored.sql("DELETE FROM decisions")
    result = await anchored.verify()
    assert not result.valid and "tail_cut" in _codes(result)
    assert "every record is missing" in result.problems[0].message


async def _rewrite_with_v1_formula(anchored: Anchored, start: int) -> None:
    """Change record `start`'s payload and recompute it and every successor with plain SHA-256."""
    async with anchored.store.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text("SELECT * FROM audit_records WHERE sequence >= :s ORDER BY sequence"), {"s": start}
            )
        ).all()
    previous: str | None = None
    for row in rows:
        fields = dict(row._mapping)
        payload = fields["payload"]
        payload = json.loads(payload) if isinstance(payload, str) else payload
        if fields["sequence"] == start:
            payload = {**payload, "rewritten": True}
        fields["payload"] = payload
        if previous is not None:
            fields["previous_hash"] = previous
        previous = link_hash(fields)
        await anchored.sql(
            "UPDATE audit_records SET payload = :p, previous_hash = :ph, hash = :h WHERE sequence = :s",
            p=json.dumps(payload),
            ph=fields["previous_hash"],
            h=previous,
            s=fields["sequence"],
        )


async def test_a_rewritten_payload_with_rehashed_successors_fails(anchored: Anchored) -> None:
    await _fill(anchored)
    await _rewrite_with_v1_formula(anchored, 4)
    result = await anchored.verify()
    assert not result.valid
    assert result.first_broken is not None and result.first_broken.sequence == 4
    assert "keyed hash" in result.first_broken.reason
    assert "chain_recomputed" in _codes(result)


async def test_rewriting_the_keyed_part_as_version_1_is_a_downgrade(anchored: Anchored) -> None:
    await _fill(anchored)
    await _rewrite_with_v1_formula(anchored, 1)
    # ... and the attacker tells the database that no record is keyed: the chain alone now verifies.
    await anchored.sql("DELETE FROM server_settings WHERE name = 'audit_chain'")
    assert (await anchored.store.verify_chain()).valid
    result = await anchored.verify()
    assert not result.valid
    assert {"chain_version_downgraded", "chain_recomputed"} <= _codes(result)


async def test_an_edited_decision_row_disagrees_with_the_audit(anchored: Anchored) -> None:
    await _fill(anchored)
    await anchored.sql("UPDATE decisions SET outcome = 'DENY', actor_id = 'mallory' WHERE decision_id = 'dec_0002'")
    result = await anchored.verify()
    assert not result.valid and _codes(result) == {"decision_mismatch"}
    assert result.problems[0].decision_id == "dec_0002"
    assert "outcome, actor_id" in result.problems[0].message


@pytest.mark.parametrize(
    ("assignment", "column"),
    [
        ("api_key_id = NULL", "api_key_id"),
        ("constraints = '{\"max_amount\": 1000000}'", "constraints"),
        ("reason = 'approved by the board'", "reason"),
        ("risk_score = 0.0", "risk_score"),
        ("policy_ids = '[]'", "policy_ids"),
        ("review_status = 'approved', reviewer = 'mallory'", "review_status"),
    ],
)
async def test_every_column_fixed_at_decision_time_is_checked(anchored: Anchored, assignment: str, column: str) -> None:
    """An edited key id (which would let a stranger report the execution), inflated constraints (which a
    confirmed child inherits), a review that never happened: each disagrees with the audit."""
    for number in range(1, 4):
        record = _decision(number)
        await anchored.store.record_decision(dataclasses.replace(record, api_key_id="key_proposer"))
    assert await anchored.anchor.checkpoint() is not None
    await anchored.sql(f"UPDATE decisions SET {assignment} WHERE decision_id = 'dec_0002'")
    result = await anchored.verify()
    assert not result.valid and _codes(result) == {"decision_mismatch"}, result.problems
    assert column in result.problems[0].message


async def test_a_decision_without_its_audit_record_and_a_record_without_its_decision(anchored: Anchored) -> None:
    await _fill(anchored)
    await anchored.sql("DELETE FROM audit_records WHERE event_type = 'decision' AND decision_id = 'dec_0003'")
    await anchored.sql("DELETE FROM decisions WHERE decision_id = 'dec_0004'")
    result = await anchored.verify()
    assert not result.valid
    assert result.first_broken is not None  # the deleted record leaves a gap in the chain too
    assert {"decision_unaudited", "audit_without_decision"} <= _codes(result)
    assert {p.decision_id for p in result.problems if p.code.startswith(("decision_", "audit_"))} >= {
        "dec_0003",
        "dec_0004",
    }


async def test_an_edited_created_at_is_found(anchored: Anchored) -> None:
    await _fill(anchored)
    await anchored.sql("UPDATE audit_records SET created_at = :t WHERE sequence = 5", t=datetime(2020, 1, 1))
    result = await anchored.verify()
    assert result.first_broken is not None and result.first_broken.sequence == 5
    assert result.first_broken.reason.startswith("created_at mismatch")


async def test_a_tampered_checkpoint_signature_is_found(anchored: Anchored) -> None:
    await _fill(anchored)
    latest = anchored.directory / "latest.json"
    document = json.loads(latest.read_text())
    document["sequence"] = 2  # claims a shorter chain: an attacker would then cut records 3..10
    document["head_hash"] = "0" * 64
    for path in [latest, *anchored.directory.glob("checkpoints-*.jsonl")]:  # every copy of it
        path.write_text(json.dumps(document) + "\n")
    result = await anchored.verify()
    assert not result.valid and _codes(result) == {"checkpoint_signature_invalid"}
    assert result.checkpoint is not None and not result.checkpoint.signature_valid


async def test_the_appender_refuses_to_fork_a_chain_cut_under_it(
    anchored: Anchored, caplog: pytest.LogCaptureFixture
) -> None:
    await _fill(anchored)
    await anchored.sql("DELETE FROM audit_records WHERE sequence > 7")
    with caplog.at_level(logging.CRITICAL, logger="aegis_server.store"), pytest.raises(AuditChainCut) as caught:
        await anchored.store.append_audit("test", payload={})
    assert "records #8..#10 were deleted" in str(caught.value)
    with pytest.raises(AuditChainCut):
        await anchored.store.record_decision(_decision(99))
    assert any(record.levelno == logging.CRITICAL for record in caplog.records)
    assert await anchored.anchor.checkpoint() is None  # no checkpoint vouches for the shortened chain
    assert (await anchored.store.chain_head())[0] == 7


async def test_records_deleted_right_after_they_were_written_stop_the_appender(anchored: Anchored) -> None:
    # No checkpoint covers them yet: the store itself remembers the head it committed.
    await anchored.store.append_audit("test", payload={"i": 1})
    await anchored.store.record_decision(_decision(1))  # the group commit: records 2 and 3
    await anchored.sql("DELETE FROM audit_records WHERE sequence = 3")
    with pytest.raises(AuditChainCut, match=r"records #3\.\.#3 were deleted"):
        await anchored.store.append_audit("test", payload={"i": 2})


async def test_a_0_1_chain_still_verifies_and_continues_keyed(store_url: str, tmp_path: Path) -> None:
    settings = _settings(store_url, tmp_path)
    store = await Store.open(store_url, audit_key=audit_key_source(settings))
    try:
        # Three records as AEGIS 0.1 wrote them (plain SHA-256), before this server ever wrote.
        previous = "0" * 64
        async with store.engine.begin() as conn:
            for sequence in (1, 2, 3):
                fields: dict[str, Any] = {
                    "audit_ref": f"aud_v1_{sequence}",
                    "sequence": sequence,
                    "event_type": "test",
                    "decision_id": None,
                    "actor_id": "old",
                    "capability": None,
                    "outcome": None,
                    "session_id": None,
                    "timestamp": format_timestamp(T0),
                    "payload": {"i": sequence},
                    "previous_hash": previous,
                }
                fields["hash"] = previous = link_hash(fields)
                await conn.execute(
                    sa.text(
                        "INSERT INTO audit_records (sequence, audit_ref, event_type, actor_id, timestamp, created_at,"
                        " payload, previous_hash, hash) VALUES (:sequence, :audit_ref, :event_type, :actor_id,"
                        " :timestamp, :created_at, :payload, :previous_hash, :hash)"
                    ),
                    {**fields, "payload": json.dumps(fields["payload"]), "created_at": T0.replace(tzinfo=None)},
                )
        before = await store.verify_chain()
        assert before.valid and before.chain_version == 1 and before.keyed_from is None
        record = await store.append_audit("test", payload={"i": 4})
        linker = store.audit_linker()
        assert linker is not None and record.previous_hash == previous
        assert record.hash == linker.link(record.model_dump()) != link_hash(record.model_dump())
        after = await store.verify_chain()
        assert after.valid and (after.records_checked, after.chain_version, after.keyed_from) == (4, 2, 4)
        # Recomputing the version-1 part (no key needed) breaks the first keyed link.
        async with store.engine.begin() as conn:
            await conn.execute(sa.text("UPDATE audit_records SET hash = :h WHERE sequence = 3"), {"h": "e" * 64})
        broken = await store.verify_chain()
        assert broken.first_broken is not None and broken.first_broken.sequence == 3
    finally:
        await store.close()


async def test_without_the_audit_key_keyed_records_are_unverifiable(anchored: Anchored, tmp_path: Path) -> None:
    await _fill(anchored, decisions=1)
    result = await verify_database(anchored.settings.db_url, AuditKeySource(file=tmp_path / "elsewhere" / "none.key"))
    assert not result.valid and result.first_broken is not None and result.first_broken.sequence == 1
    assert result.first_broken.reason.startswith("unverifiable")
    wrong = await verify_database(anchored.settings.db_url, AuditKeySource(key=b"w" * 32))
    assert wrong.first_broken is not None and "keyed hash" in wrong.first_broken.reason


async def test_a_replica_with_another_audit_key_refuses_to_write(store_url: str, tmp_path: Path) -> None:
    first = await Store.open(store_url, audit_key=AuditKeySource(key=b"k" * 32))
    try:
        await first.append_audit("test", payload={})
    finally:
        await first.close()
    second = await Store.open(store_url, audit_key=AuditKeySource(key=b"x" * 32))
    try:
        with pytest.raises(AuditKeyError, match="same AEGIS_AUDIT_KEY"):
            await second.append_audit("test", payload={})
    finally:
        await second.close()


async def test_checkpoints_are_written_while_records_are_appended_not_when_idle(anchored: Anchored) -> None:
    ticks: asyncio.Queue[None] = asyncio.Queue()
    slept = asyncio.Event()

    async def fake_sleep(_: float) -> None:  # one loop turn per `ticks.put`: no real waiting
        slept.set()
        await ticks.get()

    anchor = AuditAnchor(anchored.store, anchored.directory, anchored.anchor.signing_key, sleep=fake_sleep)
    await anchor.check_startup()
    runner = asyncio.create_task(anchor.run())

    async def tick() -> None:
        slept.clear()
        await ticks.put(None)
        await asyncio.wait_for(slept.wait(), 5)  # the loop finished its turn and sleeps again

    try:
        await asyncio.wait_for(slept.wait(), 5)
        await anchored.store.append_audit("test", payload={"i": 1})
        await tick()
        assert anchor.written == 1 and (await anchor.latest()) is not None
        await tick()
        await tick()
        assert anchor.written == 1  # idle: nothing new to vouch for
        await anchored.store.record_decision(_decision(1))
        await tick()
        assert anchor.written == 2
        latest = await anchor.latest()
        assert latest is not None and latest.sequence == 3 and verify_signature(anchor.public_key, latest)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    day_file = next(anchored.directory.glob("checkpoints-*.jsonl"))
    assert [json.loads(line)["sequence"] for line in day_file.read_text().splitlines()] == [1, 3]


async def test_the_webhook_gets_each_checkpoint_and_retries_failures(anchored: Anchored) -> None:
    received: list[dict[str, Any]] = []
    attempts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            return httpx.Response(503)
        received.append(json.loads(request.content))
        return httpx.Response(204)

    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    anchor = AuditAnchor(
        anchored.store,
        anchored.directory,
        anchored.anchor.signing_key,
        webhook="http://127.0.0.1:9/checkpoints",
        sleep=no_sleep,
        transport=httpx.MockTransport(handler),
    )
    await anchor.check_startup()
    await anchored.store.append_audit("test", payload={})
    await anchor.checkpoint()
    await anchor.close()
    assert attempts == 2 and len(received) == 1
    checkpoint = Checkpoint.parse(received[0], "webhook")
    assert checkpoint.sequence == 1 and verify_signature(anchor.public_key, checkpoint)


def test_the_third_party_check_of_the_docs_needs_only_cryptography(anchored_sync: tuple[Settings, Path]) -> None:
    """The snippet of docs/security.md, on the files `aegis-server audit checkpoint` exports."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    settings, folder = anchored_sync
    public_key = load_pem_public_key((folder / "audit-public-key.pem").read_bytes())
    document = json.loads((folder / "checkpoint.json").read_text())
    signature = base64.b64decode(document.pop("signature"))
    message = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    public_key.verify(signature, message)  # type: ignore[union-attr]
    assert message == canonical_json(document)
    signing_key = load_signing_key(settings, create=False)
    assert (
        signing_key is not None
        and public_key_pem(signing_key.public_key()) == (folder / "audit-public-key.pem").read_text()
    )


# ---------------------------------------------------------------------------------------------
# the server and the CLI
# ---------------------------------------------------------------------------------------------


async def _serve_once(settings: Settings, work: Any = None) -> None:
    """Start the app (lifespan), run `work(client)`, stop it (writing the shutdown checkpoint)."""
    app = create_app(settings, run_background_tasks=False)
    async with app.router.lifespan_context(app):
        if work is not None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://aegis") as client:
                await work(client, app)


@pytest.fixture
def anchored_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, Path]]:
    """A SQLite server that ran once (records, shutdown checkpoint), and the CLI's export of it."""
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
    settings = _settings(db_url, tmp_path)
    monkeypatch.setenv("AEGIS_AUDIT_CHECKPOINT_DIR", str(settings.audit_checkpoint_dir))

    async def work(client: httpx.AsyncClient, app: Any) -> None:
        for number in range(1, 4):
            await app.state.store.record_decision(_decision(number))

    asyncio.run(_serve_once(settings, work))
    assert (
        cli_main(
            [
                "audit",
                "checkpoint",
                "--db",
                db_url,
                "--public-key",
                str(tmp_path / "audit-public-key.pem"),
                "--checkpoint",
                str(tmp_path / "checkpoint.json"),
            ]
        )
        == 0
    )
    yield settings, tmp_path


def test_the_server_checkpoints_at_shutdown_and_refuses_to_start_on_a_cut_chain(
    anchored_sync: tuple[Settings, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    settings, folder = anchored_sync
    latest = json.loads((folder / "anchor" / "latest.json").read_text())
    # record #1 is the files' policy-set version (policy_version_recorded), then two records per decision
    assert latest["sequence"] == 7 and latest["chain_version"] == 2 and latest["v2_from"] == 1
    db_url = settings.db_url
    assert cli_main(["audit", "verify", "--db", db_url]) == 0
    assert "checkpoint OK: record #7" in capsys.readouterr().out

    async def cut() -> None:
        store = await Store.open(db_url, migrate=False)
        try:
            async with store.engine.begin() as conn:
                await conn.execute(sa.text("DELETE FROM audit_records WHERE sequence > 5"))
                await conn.execute(sa.text("DELETE FROM decisions WHERE decision_id = 'dec_0003'"))
        finally:
            await store.close()

    asyncio.run(cut())
    with pytest.raises(StartupError, match=r"records #6\.\.#7 are missing"):
        asyncio.run(_serve_once(settings))
    # `aegis-server serve` says so in one line before it binds, and exits 1 (no traceback, nothing written).
    served = subprocess.run(
        [sys.executable, "-m", "aegis_server", "serve", "--db", db_url, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )
    assert served.returncode == 1, served.stderr
    assert "refusing to start: the audit chain does not match its latest signed checkpoint" in served.stderr
    assert "records #6..#7 are missing" in served.stderr
    assert "Traceback" not in served.stderr + served.stdout
    assert cli_main(["audit", "verify", "--db", db_url]) == 1
    assert "audit BROKEN (tail_cut): the tail of the audit chain was cut: records #6..#7" in capsys.readouterr().err
    # A third party with only the exported files finds the cut too.
    assert cli_main(["audit", "verify", "--db", db_url, "--checkpoint", str(folder / "checkpoint.json"),
                     "--public-key", str(folder / "audit-public-key.pem")]) == 1  # fmt: skip
    assert cli_main(["audit", "verify", "--db", db_url, "--no-checkpoint"]) == 0
    capsys.readouterr()

    assert cli_main(["audit", "acknowledge-cut", "--db", db_url, "--reason", "restored from the 12:00 backup"]) == 0
    assert "acknowledged" in capsys.readouterr().out
    asyncio.run(_serve_once(settings))  # starts again
    assert cli_main(["audit", "verify", "--db", db_url]) == 0
    assert "acknowledges a cut" in capsys.readouterr().out


def test_the_server_refuses_to_start_on_a_recomputed_chain_or_a_forged_checkpoint(
    anchored_sync: tuple[Settings, Path],
) -> None:
    settings, folder = anchored_sync
    files = [folder / "anchor" / "latest.json", *(folder / "anchor").glob("checkpoints-*.jsonl")]
    originals = [path.read_text() for path in files]
    document = json.loads(originals[0])
    document["head_hash"] = "1" * 64
    for path in files:
        path.write_text(json.dumps(document) + "\n")
    with pytest.raises(StartupError, match="signature"):
        asyncio.run(_serve_once(settings))
    for path, text in zip(files, originals, strict=True):
        path.write_text(text)

    async def recompute() -> None:
        store = await Store.open(settings.db_url, migrate=False)
        try:
            async with store.engine.begin() as conn:
                await conn.execute(sa.text("UPDATE audit_records SET hash = :h WHERE sequence = 7"), {"h": "f" * 64})
        finally:
            await store.close()

    asyncio.run(recompute())
    with pytest.raises(StartupError, match=r"record #7 has hash f+ in the database"):
        asyncio.run(_serve_once(settings))


def test_a_write_to_a_chain_cut_under_the_running_server_is_a_503(
    anchored_sync: tuple[Settings, Path], caplog: pytest.LogCaptureFixture
) -> None:
    settings, _ = anchored_sync

    async def work(client: httpx.AsyncClient, app: Any) -> None:
        store: Store = app.state.store
        key, _ = await store.create_api_key("admin", ["admin"])
        async with store.engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM audit_records WHERE sequence > 3"))
        response = await client.post(
            "/api/v1/governance/propose",
            headers={"Authorization": f"Bearer {key}"},
            json={"actor": {"id": "agent-1"}, "action": {"capability": "anything.at_all", "parameters": {}}},
        )
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "audit_chain_cut"
        verification = await client.get("/api/v1/audit/verify", headers={"Authorization": f"Bearer {key}"})
        assert verification.status_code == 200
        body = verification.json()
        assert body["valid"] is False and "tail_cut" in {p["code"] for p in body["problems"]}

    with caplog.at_level(logging.CRITICAL):
        asyncio.run(_serve_once(settings, work))  # its shutdown checkpoint is refused (the head went back)
    assert any("refusing" in record.getMessage() for record in caplog.records if record.levelno == logging.CRITICAL)


def test_the_running_server_checkpoints_within_its_interval(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
    settings = _settings(db_url, tmp_path, audit_checkpoint_interval_seconds=0.05)

    async def run() -> int:
        app = create_app(settings)  # background tasks on: the checkpoint writer runs
        async with app.router.lifespan_context(app):
            anchor: AuditAnchor = app.state.audit_anchor
            assert anchor.written == 1  # the empty chain, anchored at startup
            await app.state.store.record_decision(_decision(1))
            for _ in range(200):  # bounded: 200 x 25 ms
                if anchor.written > 1:
                    latest = await anchor.latest()
                    assert latest is not None and latest.sequence == 3  # #1: the files' policy-set version
                    return anchor.written
                await asyncio.sleep(0.025)
            raise AssertionError("no checkpoint of record #3 within 5 s")

    assert asyncio.run(run()) == 2  # startup, then one: the chain was idle after the append
    assert json.loads((tmp_path / "anchor" / "latest.json").read_text())["sequence"] == 3


async def test_replicas_sharing_the_keys_write_one_anchored_chain(store_url: str, tmp_path: Path) -> None:
    settings = _settings(
        store_url,
        tmp_path,
        audit_key="shared-audit-key-of-every-replica-0123456789",
        audit_signing_key="5a" * 32,  # an Ed25519 seed as 64 hex digits
    )
    replicas = [await Store.open(store_url, audit_key=audit_key_source(settings)) for _ in range(2)]
    try:
        anchors = [AuditAnchor.from_settings(settings, replica) for replica in replicas]
        assert anchors[0] is not None and anchors[1] is not None
        assert anchors[0].key_id == anchors[1].key_id
        for anchor in anchors:
            await anchor.check_startup()
        for number in range(1, 7):
            await replicas[number % 2].record_decision(_decision(number))
            assert await anchors[number % 2].checkpoint() is not None  # each reads the database's head
        result = await verify_audit(replicas[0], checkpoint=await anchors[1].latest(), public_key=anchors[0].public_key)
        assert result.valid, (result.first_broken, result.problems)
        assert result.checkpoint is not None and result.checkpoint.sequence == 12
        assert not (tmp_path / "anchor" / "audit-hmac.key").exists()  # the keys came from the settings
        assert not (tmp_path / "anchor" / "audit-signing.key").exists()
    finally:
        for replica in replicas:
            await replica.close()


def test_deleted_checkpoints_stop_the_server_and_the_cli_until_acknowledged(
    anchored_sync: tuple[Settings, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a red-team pass: with the checkpoint files gone, a cut or rewritten keyed chain looked whole
    (the server only warned, then signed a checkpoint over whatever head it found)."""
    settings, folder = anchored_sync
    db_url = settings.db_url
    for path in (folder / "anchor").glob("checkpoints-*.jsonl"):
        path.unlink()
    (folder / "anchor" / "latest.json").unlink()
    capsys.readouterr()

    with pytest.raises(StartupError, match="no signed checkpoint"):
        asyncio.run(_serve_once(settings))
    assert cli_main(["audit", "verify", "--db", db_url]) == 1
    assert "(unanchored)" in capsys.readouterr().err
    # The CLI's own writes are refused as the server's are, rather than appended to an unchecked chain.
    assert cli_main(["keys", "create", "--db", db_url, "--name", "late", "--scopes", "audit:read"]) == 1
    assert "refusing to write to the audit chain" in capsys.readouterr().err

    assert cli_main(["audit", "acknowledge-cut", "--db", db_url, "--reason", "checkpoints lost with the old host"]) == 0
    capsys.readouterr()
    asyncio.run(_serve_once(settings))  # starts again, anchored anew
    assert cli_main(["audit", "verify", "--db", db_url]) == 0
    assert cli_main(["keys", "create", "--db", db_url, "--name", "late", "--scopes", "audit:read"]) == 0
    assert cli_main(["audit", "verify", "--db", db_url]) == 0
