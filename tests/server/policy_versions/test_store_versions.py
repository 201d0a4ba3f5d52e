"""The store writes a version in the transaction of the change that makes it (SQLite and PostgreSQL): a
document write and its version commit together or not at all, and so does a rollback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis_sdk.models import Capability, Policy
from aegis_server.store import AuditFilters, Store
from aegis_server.store.policy_versions import ApiDocumentsReplacement, NewPolicyVersion, PolicyVersions

POLICY = Policy.model_validate(
    {"name": "email", "rules": [{"id": "send", "capability": "email.*", "outcome": "ALLOW"}]}
)


def _version(digest: str, cause: str = "policy_saved", **fields: Any) -> NewPolicyVersion:
    return NewPolicyVersion(
        digest=digest,
        policies=(POLICY,),
        capabilities=(Capability(name="email.send"),),
        sources={"email": "api", "capability:email.send": "api"},
        cause=cause,
        summary="test",
        **fields,
    )


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()


async def _audit(store: Store, event_type: str) -> list[dict[str, Any]]:
    records, _ = await store.audit_log(AuditFilters(event_type=event_type), limit=50, cursor=None)
    return [record.payload for record in records]


async def test_a_save_records_its_version_and_audits_it(store: Store) -> None:
    stored, number = await store.policies.put_versioned(POLICY, _version("sha256:a"))
    assert stored.policy == POLICY and number == 1
    revision = await store.policy_revision()
    deleted, second = await store.policies.delete_versioned("email", _version("sha256:b", "policy_deleted"))
    assert deleted and second == 2 and await store.policy_revision() != revision
    assert [p.get("policy_version") for p in await _audit(store, "policy_saved")] == [1]
    assert [p.get("policy_version") for p in await _audit(store, "policy_deleted")] == [2]
    missing, none = await store.policies.delete_versioned("email", _version("sha256:c", "policy_deleted"))
    assert (missing, none) == (False, None)
    assert [v.version for v in await store.policy_versions.history(limit=10)] == [2, 1]
    assert await store.policy_versions.number_of("sha256:a") == 1
    assert await store.policy_versions.number_of("sha256:zzz") is None


async def test_no_document_change_without_its_version(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(self: PolicyVersions, conn: AsyncConnection, new: NewPolicyVersion, now: datetime) -> int:
        raise RuntimeError("the version could not be written")

    monkeypatch.setattr(PolicyVersions, "insert_in", fail)
    with pytest.raises(RuntimeError):
        await store.policies.put_versioned(POLICY, _version("sha256:a"))
    assert await store.list_policies() == []
    assert await _audit(store, "policy_saved") == []


async def test_a_rollback_commits_whole_or_not_at_all(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    await store.policies.put_versioned(POLICY, _version("sha256:a"))
    replacement = ApiDocumentsReplacement(delete_policies=["email"], put_capabilities=[Capability(name="x.y")])
    original = PolicyVersions.insert_in

    async def fail(self: PolicyVersions, conn: AsyncConnection, new: NewPolicyVersion, now: datetime) -> int:
        raise RuntimeError("the version could not be written")

    monkeypatch.setattr(PolicyVersions, "insert_in", fail)
    with pytest.raises(RuntimeError):
        await store.policy_versions.rollback_documents(
            policies=store.policies,
            capabilities=store.capabilities,
            replacement=replacement,
            version=_version("sha256:a", "rollback", rollback_of=1),
            audit_payload={"to_version": 1},
        )
    assert [p.name for p in await store.list_policies()] == ["email"]
    assert await store.list_capabilities() == []

    monkeypatch.setattr(PolicyVersions, "insert_in", original)
    number = await store.policy_versions.rollback_documents(
        policies=store.policies,
        capabilities=store.capabilities,
        replacement=replacement,
        version=_version("sha256:a", "rollback", rollback_of=1),  # the same digest: a rollback is still recorded
        audit_payload={"to_version": 1},
    )
    assert number == 2
    assert await store.list_policies() == [] and [c.name for c in await store.list_capabilities()] == ["x.y"]
    assert await _audit(store, "policy_rollback") == [{"to_version": 1, "policy_version": 2}]
    rolled = await store.policy_versions.get(2)
    assert rolled is not None and (rolled.cause, rolled.rollback_of) == ("rollback", 1)
