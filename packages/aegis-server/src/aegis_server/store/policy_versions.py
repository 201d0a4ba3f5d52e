"""Policy-set versions: every change of the active set (files loaded, an API policy or capability saved or
deleted, a rollback) is a numbered version holding the whole content, its digest, what caused it and who.
A version is written in the transaction of the change that made it (`insert_in`), so there is never a
stored change without its version, nor a version without its change."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis_sdk.models import Capability, Policy
from aegis_server.store.database import Database, Room
from aegis_server.store.schema import policy_versions
from aegis_server.store.server_settings import ServerSettings

if TYPE_CHECKING:
    from aegis_server.store.documents import Capabilities, Policies

__all__ = ["CAUSES", "ApiDocumentsReplacement", "NewPolicyVersion", "PolicyVersion", "PolicyVersions"]

CAUSES: tuple[str, ...] = (
    "files_loaded",  # a server started (or reloaded) with policy files whose set differs from the latest version
    "policy_saved",
    "policy_deleted",
    "capability_saved",
    "capability_deleted",
    "rollback",
    # a replica reloading after another's change compiled a set no version holds (its policy files differ)
    "replica_loaded",
)
"""What can make a new version."""

# Two writers (replicas) must not both take "the latest version + 1": on PostgreSQL the number is taken under
# this transaction-scoped advisory lock; SQLite has one writer at a time anyway.
_VERSION_LOCK = 0x0AE615_0001


@dataclasses.dataclass(frozen=True)
class NewPolicyVersion:
    """A version to record: the whole set, as compiled (`digest`), and why. `sources` maps a policy name, and
    `capability:<name>`, to "api" or the file that defines it."""

    digest: str
    policies: tuple[Policy, ...]
    capabilities: tuple[Capability, ...]
    sources: Mapping[str, str]
    cause: str
    summary: str
    created_by: str | None = None
    rollback_of: int | None = None

    def content(self) -> dict[str, Any]:
        return {
            "policies": [policy.model_dump(mode="json") for policy in self.policies],
            "capabilities": [capability.model_dump(mode="json") for capability in self.capabilities],
            "sources": dict(self.sources),
        }


@dataclasses.dataclass(frozen=True)
class PolicyVersion:
    """A recorded version. `policies` and `capabilities` are the whole set, sorted by name."""

    version: int
    digest: str
    policies: tuple[Policy, ...]
    capabilities: tuple[Capability, ...]
    sources: Mapping[str, str]
    cause: str
    summary: str
    created_at: datetime
    created_by: str | None = None
    rollback_of: int | None = None

    def source_of(self, name: str, *, capability: bool = False) -> str:
        """Where the policy (or capability) `name` came from in this version: "api" or a file."""
        return self.sources.get(f"capability:{name}" if capability else name, "api")


@dataclasses.dataclass(frozen=True)
class ApiDocumentsReplacement:
    """What a rollback writes: the API-defined documents to upsert and the names of those to delete."""

    put_policies: Sequence[Policy] = ()
    delete_policies: Sequence[str] = ()
    put_capabilities: Sequence[Capability] = ()
    delete_capabilities: Sequence[str] = ()


def _version_from_row(row: Any) -> PolicyVersion:
    content = row.content
    return PolicyVersion(
        version=row.version,
        digest=row.digest,
        policies=tuple(Policy.model_validate(item) for item in content.get("policies", ())),
        capabilities=tuple(Capability.model_validate(item) for item in content.get("capabilities", ())),
        sources=dict(content.get("sources") or {}),
        cause=row.cause,
        summary=row.summary,
        created_at=row.created_at,
        created_by=row.created_by,
        rollback_of=row.rollback_of,
    )


class PolicyVersions(Room):
    """The versions of the policy set of one database."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self._settings = ServerSettings(database)

    async def insert_in(self, conn: AsyncConnection, new: NewPolicyVersion, now: datetime) -> int:
        """Record `new` in the caller's write transaction and return its number. When the latest version has
        the same digest (nothing changed, e.g. a replica loading the files another replica loaded), no row is
        written and the latest number is returned; a rollback is always recorded."""
        if self._db.postgres:
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _VERSION_LOCK})
        latest = (
            await conn.execute(
                sa.select(policy_versions.c.version, policy_versions.c.digest)
                .order_by(policy_versions.c.version.desc())
                .limit(1)
            )
        ).first()
        if latest is not None and latest.digest == new.digest and new.cause != "rollback":
            return int(latest.version)
        number = 1 if latest is None else int(latest.version) + 1
        await conn.execute(
            sa.insert(policy_versions).values(
                version=number,
                digest=new.digest,
                content=new.content(),
                cause=new.cause,
                summary=new.summary,
                rollback_of=new.rollback_of,
                created_at=now,
                created_by=new.created_by,
            )
        )
        return number

    async def record(self, new: NewPolicyVersion) -> int:
        """`insert_in` in a transaction of its own."""
        now = self._db.now()
        async with self._db.write() as conn:
            return await self.insert_in(conn, new, now)

    async def latest(self) -> PolicyVersion | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(sa.select(policy_versions).order_by(policy_versions.c.version.desc()).limit(1))
            ).first()
        return _version_from_row(row) if row is not None else None

    async def get(self, version: int) -> PolicyVersion | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(policy_versions).where(policy_versions.c.version == version))).first()
        return _version_from_row(row) if row is not None else None

    async def history(self, *, limit: int, before: int | None = None) -> list[PolicyVersion]:
        """The newest `limit` versions (below `before` when given), newest first."""
        query = sa.select(policy_versions).order_by(policy_versions.c.version.desc()).limit(limit)
        if before is not None:
            query = query.where(policy_versions.c.version < before)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_version_from_row(row) for row in rows]

    async def number_of(self, digest: str) -> int | None:
        """The newest version whose set has `digest` (None when no version has it)."""
        async with self._db.read() as conn:
            number = await conn.scalar(
                sa.select(sa.func.max(policy_versions.c.version)).where(policy_versions.c.digest == digest)
            )
        return int(number) if number is not None else None

    async def rollback_documents(
        self,
        *,
        policies: Policies,
        capabilities: Capabilities,
        replacement: ApiDocumentsReplacement,
        version: NewPolicyVersion,
        audit_payload: Mapping[str, Any],
    ) -> int:
        """Write a rollback in one transaction: upsert and delete the API-defined documents of
        `replacement`, bump the policy revision (other replicas reload), record `version` (always a new one)
        and audit it as "policy_rollback" (`audit_payload` plus the new version's number as
        `policy_version`). Returns the new version's number."""
        now = self._db.now()
        async with self._db.write() as conn:
            for policy in replacement.put_policies:
                await policies.put_in(conn, policy, now)
            for name in replacement.delete_policies:
                await policies.delete_in(conn, name, now)
            for capability in replacement.put_capabilities:
                await capabilities.put_in(conn, capability, now)
            for name in replacement.delete_capabilities:
                await capabilities.delete_in(conn, name, now)
            await self._settings.bump_policy_revision(conn, now)
            number = await self.insert_in(conn, version, now)
            await self._db.audit(conn, now).append(
                "policy_rollback", payload={**audit_payload, "policy_version": number}
            )
        return number
