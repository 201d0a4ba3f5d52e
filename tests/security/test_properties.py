"""Properties (hypothesis) of what a forger would attack:

- token binding: a token issued for some parameters verifies for other parameters exactly when the two
  are the same JSON value up to key order and Unicode normalisation — never for a different value, and a
  token never moves to another actor, capability or decision;
- the audit chain: any single-byte change to any stored field of any record (in the database file, as an
  attacker with write access would make it) is found by verify, at that record or the one after it.

The existing suites already cover canonical JSON itself (tests/server/store/test_store_canonical_json.py)
and the policy loader and CEL conditions (tests/server/engine/test_engine_properties.py).
Size: AEGIS_PROPERTY_EXAMPLES (default 60 per property).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aegis_sdk._wire.canonical import canonical_hash, normalise_json
from aegis_sdk.models import Decision
from aegis_server.store import AuditKeySource, Store, default_audit_dir
from aegis_server.store.chain import CHAINED_FIELDS
from aegis_server.store.records import NewDecision
from aegis_server.tokens import TokenSigner
from reliability._support import env_int

EXAMPLES = env_int("AEGIS_PROPERTY_EXAMPLES", 60)
SIGNER = TokenSigner(b"k" * 32)
EXPIRY = datetime(2030, 1, 1, tzinfo=timezone.utc)

# Keys and strings with characters that have several Unicode spellings (é, Å, ﬁ, Hangul), so the
# normalisation path is exercised, not only ASCII.
_text = st.text(
    alphabet=st.sampled_from(list("ae\u00e9\u0301\u00c5\u212b\u030a\ufb01\uac00\u1100\u1161 1")), max_size=6
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | _text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=8,
)
_params = st.dictionaries(_text, _json, max_size=4)


def _respell(value: Any, form: str) -> Any:
    """The same JSON value written another way: another Unicode normalisation form, keys reordered."""
    if isinstance(value, str):
        return unicodedata.normalize(form, value)
    if isinstance(value, list):
        return [_respell(item, form) for item in value]
    if isinstance(value, dict):
        respelled = {unicodedata.normalize(form, k): _respell(v, form) for k, v in value.items()}
        return dict(reversed(list(respelled.items())))
    return value


def _token(params: Any, *, actor: str = "agent", capability: str = "cap.x", decision_id: str = "dec_1") -> str:
    return SIGNER.issue(
        decision_id=decision_id,
        actor_id=actor,
        capability=capability,
        params_hash=canonical_hash(params),
        expires_at=EXPIRY,
    )


def _verifies(token: str, params: Any, *, actor: str = "agent", capability: str = "cap.x") -> bool:
    claims = TokenSigner.parse(token)
    assert claims is not None
    return SIGNER.verify(claims, actor_id=actor, capability=capability, params_hash=canonical_hash(params))


def _distinct_keys_after_nfc(value: Any) -> bool:
    try:
        normalise_json(value)
    except ValueError:
        return False
    return True


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(params=_params, form=st.sampled_from(["NFC", "NFD", "NFKC", "NFKD"]))
def test_a_token_follows_the_value_not_its_spelling(params: dict[str, Any], form: str) -> None:
    assume(_distinct_keys_after_nfc(params))
    respelled = _respell(params, form)
    assume(_distinct_keys_after_nfc(respelled))
    token = _token(params)
    same = normalise_json(respelled) == normalise_json(params)
    assert _verifies(token, respelled) == same
    if form in ("NFC", "NFD"):  # canonical equivalents are the same value: the token must still match
        assert same and _verifies(token, respelled)


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(first=_params, second=_params)
def test_a_token_never_matches_different_parameters(first: dict[str, Any], second: dict[str, Any]) -> None:
    assume(_distinct_keys_after_nfc(first) and _distinct_keys_after_nfc(second))
    assert _verifies(_token(first), second) == (normalise_json(first) == normalise_json(second))


@settings(max_examples=EXAMPLES, deadline=None)
@given(params=_params, actor=_text, capability=_text)
def test_a_token_never_moves_to_another_actor_or_capability(
    params: dict[str, Any], actor: str, capability: str
) -> None:
    assume(_distinct_keys_after_nfc(params))
    token = _token(params)
    assert _verifies(token, params, actor=actor, capability="cap.x") == (actor == "agent")
    assert _verifies(token, params, actor="agent", capability=capability) == (capability == "cap.x")
    # Another decision's id in the clear part breaks the MAC too.
    prefix, _, expiry, mac = token.split(".")
    claims = TokenSigner.parse(f"{prefix}.dec_2.{expiry}.{mac}")
    assert claims is not None
    assert not SIGNER.verify(claims, actor_id="agent", capability="cap.x", params_hash=canonical_hash(params))


# ---------------------------------------------------------------------------------------------
# The audit chain: single-byte changes in the database file
# ---------------------------------------------------------------------------------------------


async def _build_chain(path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{path}")
    try:
        await store.create_api_key("admin", ["admin"])
        now = datetime(2030, 1, 1, tzinfo=timezone.utc)
        for n in range(5):
            decision = Decision(
                decision_id=f"dec_{n:032d}",
                outcome="ALLOW" if n % 2 else "DENY",
                reason=f"rule {n} — caf\u00e9",
                risk_score=0.1 * n,
                constraints={"max_rows": n},
                timestamp=(now + timedelta(seconds=n)).isoformat().replace("+00:00", "Z"),
                audit_ref="",
                policy_ids=[f"p/{n}"],
            )
            await store.record_decision(
                NewDecision(
                    decision=decision,
                    actor_id=f"agent-{n}",
                    actor_type="ai-agent",
                    capability="cap.x",
                    session_id=f"s{n}",
                    params_hash=canonical_hash({"n": n}),
                    proposal_audit={"action": {"parameters": {"n": n, "note": "\u00c5ngstr\u00f6m"}}},
                    created_at=now,
                )
            )
        assert (await store.verify_chain()).valid
    finally:
        await store.close()


@pytest.fixture(scope="module")
def chain_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chain") / "aegis.db"
    asyncio.run(_build_chain(path))
    with sqlite3.connect(path) as conn:  # one self-contained file to copy
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _rows(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM audit_records ORDER BY sequence")]


async def _verify(path: Path, original: Path) -> Any:
    # The copy is checked with the audit key of the original (the key file lives beside the database file,
    # outside it: a copy of the file alone cannot verify its keyed records).
    key_dir = default_audit_dir(f"sqlite+aiosqlite:///{original}")
    assert key_dir is not None
    key = AuditKeySource(file=key_dir / "audit-hmac.key")
    store = await Store.open(f"sqlite+aiosqlite:///{path}", migrate=False, audit_key=key)
    try:
        return await store.verify_chain()
    finally:
        await store.close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_change_is_found_by_verify(chain_db: Path, tmp_path: Path, data: st.DataObject) -> None:
    rows = _rows(chain_db)
    index = data.draw(st.integers(0, len(rows) - 1), label="record")
    row = rows[index]
    columns = [c for c in (*CHAINED_FIELDS, "hash") if row.get(c) is not None]
    column = data.draw(st.sampled_from(columns), label="column")
    original = str(row[column]).encode("utf-8")
    position = data.draw(st.integers(0, len(original) - 1), label="byte")
    byte = data.draw(st.integers(0x20, 0x7E).filter(lambda b: b != original[position]), label="new byte")
    changed = original[:position] + bytes([byte]) + original[position + 1 :]

    copy = tmp_path / f"copy-{index}-{column}-{position}-{byte}.db"
    shutil.copyfile(chain_db, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        # Text stays text; a byte that broke a multi-byte character is stored as the raw bytes.
        value: Any = changed.decode("utf-8") if _utf8(changed) else changed
        if column == "sequence":
            assume(changed.isdigit() and int(changed) not in {r["sequence"] for r in rows})
            value = int(changed)
        conn.execute(f"UPDATE audit_records SET {column} = ? WHERE sequence = ?", (value, row["sequence"]))
    result = asyncio.run(_verify(copy, chain_db))
    copy.unlink()
    assert not result.valid, (column, original, changed)
    broken = result.first_broken.sequence  # type: ignore[union-attr]
    expected = int(changed) if column == "sequence" else row["sequence"]
    assert broken in (expected, row["sequence"], row["sequence"] + 1), (column, broken, row["sequence"])


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
