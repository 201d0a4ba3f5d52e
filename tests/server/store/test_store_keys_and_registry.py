"""API keys (hashed at rest), the server secret, and API-managed policies and capabilities."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa
from _store_support import FakeClock

from aegis_sdk.models import Capability, Policy, PolicyRule
from aegis_server.store import API_KEY_PREFIX, SCOPES, AuditFilters, Store, hash_api_key
from aegis_server.store.schema import metadata


async def _dump(store: Store) -> str:
    """Every row of every table, as text (what a database dump would contain)."""
    lines: list[str] = []
    async with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in (await conn.execute(sa.select(table))).all():
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)


async def test_keys_are_hashed_at_rest(store: Store, sqlite_url: str) -> None:
    key, record = await store.create_api_key("ci bot", ["governance:propose", "audit:read"])
    assert key.startswith(API_KEY_PREFIX) and len(key) == len(API_KEY_PREFIX) + 43
    assert record.key_id.startswith("key_") and record.scopes == ("governance:propose", "audit:read")
    dump = await _dump(store)
    secret_part = key[len(API_KEY_PREFIX) :]
    assert secret_part not in dump and key not in dump
    assert hashlib.sha256(key.encode()).hexdigest() in dump
    if store.dialect == "sqlite":  # the raw files too, write-ahead log included
        database = Path(sqlite_url.split("///", 1)[1])
        for path in database.parent.glob(database.name + "*"):
            assert secret_part.encode() not in path.read_bytes()


async def test_authenticate_and_revoke(store: Store, clock: FakeClock) -> None:
    key, record = await store.create_api_key("ops", ["admin"])
    clock.advance(1)
    other_key, other = await store.create_api_key("reader", ["governance:read"])
    assert await store.authenticate(key) == record
    assert await store.authenticate(key + "x") is None
    assert await store.authenticate("") is None
    assert await store.authenticate("aegis_sk_" + "A" * 10_000) is None
    assert record.has_scope("policies:manage") and not other.has_scope("governance:review")
    assert await store.count_api_keys() == 2

    assert await store.revoke_api_key(record.key_id) is True
    assert await store.revoke_api_key(record.key_id) is False
    assert await store.revoke_api_key("key_unknown") is False
    assert await store.authenticate(key) is None
    assert await store.authenticate(other_key) == other
    assert await store.count_api_keys() == 1
    listed = await store.list_api_keys()
    assert [k.key_id for k in listed] == [record.key_id, other.key_id]
    assert listed[0].revoked and not listed[1].revoked
    assert await store.get_api_key(other.key_id) == other
    events = [r.event_type for r in (await store.audit_log(AuditFilters(), 10, None))[0]]
    assert events == ["api_key_created", "api_key_created", "api_key_revoked"]
    assert hash_api_key(key) not in str(await store.audit_log(AuditFilters(), 10, None))


async def test_key_input_is_validated(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        await store.create_api_key("x", ["governance:everything"])
    with pytest.raises(ValueError, match="at least one scope"):
        await store.create_api_key("x", [])
    with pytest.raises(ValueError, match="name"):
        await store.create_api_key("  ", ["admin"])
    assert set(SCOPES) >= {"governance:propose", "governance:read", "governance:review", "audit:read"}


async def test_secret_is_created_once_and_shared(store_url: str) -> None:
    stores = [await Store.open(store_url) for _ in range(3)]
    try:
        secrets = await asyncio.gather(*(s.get_or_create_secret() for s in stores))
        assert len(secrets[0]) == 32 and secrets.count(secrets[0]) == 3
        assert await stores[0].get_or_create_secret() == secrets[0]
    finally:
        for s in stores:
            await s.close()
    reopened = await Store.open(store_url)
    try:
        assert await reopened.get_or_create_secret() == secrets[0]
    finally:
        await reopened.close()


async def test_policies_and_capabilities_are_stored_with_times(store: Store, clock: FakeClock) -> None:
    assert await store.policy_revision() == ""
    policy = Policy(name="db", rules=[PolicyRule(capability="database.*", outcome="ALLOW", constraints={"n": 1})])
    saved = await store.put_policy(policy)
    assert saved.policy == policy and saved.created_at == saved.updated_at == clock.now
    first_version = await store.policy_revision()
    assert first_version != ""

    clock.advance(30)
    changed = policy.model_copy(update={"description": "now described"})
    resaved = await store.put_policy(changed)
    assert resaved.policy == changed and resaved.created_at == saved.created_at and resaved.updated_at == clock.now
    assert await store.policy_revision() not in ("", first_version)
    assert await store.list_policies() == [changed]
    assert await store.get_policy("db") == changed and await store.get_policy("nope") is None
    assert [p.policy.name for p in await store.list_policy_records()] == ["db"]

    capability = Capability(name="database.query", risk_level="high", parameter_schema={"type": "object"})
    stored_capability = await store.put_capability(capability)
    assert stored_capability.capability == capability
    assert await store.list_capabilities() == [capability]
    assert await store.get_capability("database.query") == capability
    assert (await store.get_capability_record("database.query")) == stored_capability

    assert await store.delete_policy("db") is True and await store.delete_policy("db") is False
    assert await store.delete_capability("database.query") is True
    assert await store.list_policies() == [] and await store.list_capabilities() == []
    events = [r.event_type for r in (await store.audit_log(AuditFilters(), 20, None))[0]]
    assert events == ["policy_saved", "policy_saved", "capability_saved", "policy_deleted", "capability_deleted"]
    assert (await store.verify_chain()).valid
