"""Policy-set versions: every change of the active set (files loaded, an API policy or capability saved or
deleted, a rollback) is a numbered version holding the whole content, its digest, what caused it and who.
A version is written in the transaction of the change that made it (`insert_in`), so there is never a
stored change without its version, nor a version without its change; each one is chained into the audit
("policy_version_recorded" with its digest), so `audit verify` notices an edited version row.

Every write of the API-defined documents (`write_change`) is one transaction that first takes the
policy-write lock, then reads what is stored and plans the change from that (not from a replica's cache):
two replicas writing at once are serialised and each change is planned on top of the other's."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis_sdk._wire.canonical import canonical_hash, canonical_json
from aegis_sdk.models import AuditProblem, Capability, Policy
from aegis_server.store.database import Database, Room
from aegis_server.store.rows import format_timestamp
from aegis_server.store.schema import audit_records, policy_versions
from aegis_server.store.server_settings import ServerSettings

if TYPE_CHECKING:
    from aegis_server.store.documents import Capabilities, Policies

__all__ = [
    "CAUSES",
    "ApiDocumentsReplacement",
    "NewPolicyVersion",
    "PolicyChange",
    "PolicyVersion",
    "PolicyVersions",
    "StoredApiItems",
    "WrittenChange",
    "content_digest",
]

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

# Every policy write takes this transaction-scoped advisory lock on PostgreSQL as its first statement: two
# writers (replicas) never plan a change from the same stored state, never both take "the latest version + 1",
# and never lock document rows and the revision row in opposite orders. SQLite has one writer at a time anyway.
_VERSION_LOCK = 0x0AE615_0001
_RECORDED_EVENT = "policy_version_recorded"
_READ_ATTEMPTS = 20


def content_digest(content: Mapping[str, Any]) -> str:
    """The digest of a version's stored content, computed as the engine computes a compiled set's (the
    canonical JSON of its capabilities and policies, in the order the version holds them)."""
    digest_input = {
        "capabilities": list(content.get("capabilities", ())),
        "policies": list(content.get("policies", ())),
    }
    return "sha256:" + hashlib.sha256(canonical_json(digest_input)).hexdigest()


def row_hash(sources: Mapping[str, Any], summary: str, created_at: datetime) -> str:
    """The hash of what a version row holds beside its digest: where each item came from (which decides what a
    rollback restores), its summary and its time, so that an edit of any of them is found by `audit verify`."""
    return canonical_hash({"sources": dict(sources), "summary": summary, "created_at": format_timestamp(created_at)})


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


@dataclasses.dataclass(frozen=True)
class StoredApiItems:
    """The API-defined documents as stored, read consistently with the policy revision they are at."""

    revision: str
    policies: Mapping[str, Policy]
    capabilities: Mapping[str, Capability]


@dataclasses.dataclass(frozen=True)
class PolicyChange:
    """What one policy write stores: the documents to upsert and delete, the version the result is, and the
    audit records of the change (each gets the version's number as `policy_version`)."""

    replacement: ApiDocumentsReplacement
    version: NewPolicyVersion
    audit: Sequence[tuple[str, Mapping[str, Any]]] = ()


@dataclasses.dataclass(frozen=True)
class WrittenChange:
    """A committed policy write: the version it recorded and the policy revision it left behind."""

    version: int
    revision: str


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


async def _write_documents(
    conn: AsyncConnection,
    policies: Policies,
    capabilities: Capabilities,
    replacement: ApiDocumentsReplacement,
    now: datetime,
) -> None:
    """Upsert and delete the documents of `replacement` (the caller bumps the revision once, afterwards)."""
    for policy in replacement.put_policies:
        await policies.put_in(conn, policy, now, bump=False)
    for name in replacement.delete_policies:
        await policies.delete_in(conn, name, now, bump=False)
    for capability in replacement.put_capabilities:
        await capabilities.put_in(conn, capability, now, bump=False)
    for name in replacement.delete_capabilities:
        await capabilities.delete_in(conn, name, now, bump=False)


class PolicyVersions(Room):
    """The versions of the policy set of one database."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self._settings = ServerSettings(database)

    async def lock_policy_writes(self, conn: AsyncConnection) -> None:
        """Take the policy-write lock (PostgreSQL; held until the transaction ends). Call it first."""
        if self._db.postgres:
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _VERSION_LOCK})

    async def insert_in(self, conn: AsyncConnection, new: NewPolicyVersion, now: datetime) -> int:
        """Record `new` in the caller's write transaction, with its "policy_version_recorded" audit record, and
        return its number. When the latest version holds the same set from the same sources (nothing
        changed, e.g. a replica loading the files another replica loaded), no row is written and the latest
        number is returned; a rollback is always recorded."""
        await self.lock_policy_writes(conn)
        latest = (
            await conn.execute(
                sa.select(policy_versions.c.version, policy_versions.c.digest, policy_versions.c.content)
                .order_by(policy_versions.c.version.desc())
                .limit(1)
            )
        ).first()
        if (
            latest is not None
            and latest.digest == new.digest
            and dict((latest.content or {}).get("sources") or {}) == dict(new.sources)
            and new.cause != "rollback"
        ):
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
        await self._db.audit(conn, now).append(
            _RECORDED_EVENT,
            payload={
                "version": number,
                "digest": new.digest,
                "cause": new.cause,
                "created_by": new.created_by,
                "rollback_of": new.rollback_of,
                "row_sha256": row_hash(new.sources, new.summary, now),
            },
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

    async def read_api_items(self, *, policies: Policies, capabilities: Capabilities) -> StoredApiItems:
        """The stored API-defined documents and the revision they are at, consistently: the revision is read
        before and after the documents, and the read is repeated when a change committed in between."""
        for _ in range(_READ_ATTEMPTS):
            async with self._db.read() as conn:
                before = await self._settings.policy_revision_in(conn)
                stored_policies = await policies.documents_in(conn)
                stored_capabilities = await capabilities.documents_in(conn)
                after = await self._settings.policy_revision_in(conn)
            if before == after:
                return StoredApiItems(before, stored_policies, stored_capabilities)
        raise RuntimeError(f"the stored policies kept changing during {_READ_ATTEMPTS} reads in a row")

    async def write_change(
        self,
        *,
        policies: Policies,
        capabilities: Capabilities,
        plan: Callable[[StoredApiItems], PolicyChange | None],
    ) -> WrittenChange | None:
        """One policy write: take the policy-write lock, read the stored documents and the revision, ask
        `plan` what to change on top of them (None: nothing; an exception aborts, nothing written), then
        write the documents, record the version (and its audit record), append the change's audit records
        and bump the revision, all in one transaction. Returns the version and the new revision."""
        now = self._db.now()
        async with self._db.write() as conn:
            await self.lock_policy_writes(conn)
            stored = StoredApiItems(
                await self._settings.policy_revision_in(conn),
                await policies.documents_in(conn),
                await capabilities.documents_in(conn),
            )
            change = plan(stored)
            if change is None:
                return None
            # Row locks in the order a single document write takes them (the documents, then the revision
            # row), and all of them before the audit chain's lock.
            await _write_documents(conn, policies, capabilities, change.replacement, now)
            revision = await self._settings.bump_policy_revision(conn, now)
            number = await self.insert_in(conn, change.version, now)
            for event_type, payload in change.audit:
                await self._db.audit(conn, now).append(event_type, payload={**payload, "policy_version": number})
        return WrittenChange(version=number, revision=revision)

    async def verify_recorded(self, *, max_problems: int = 20) -> list[AuditProblem]:
        """Check every version against its content and the audit: the digest recomputed from the stored
        content must equal the row's, and the row's number, digest, cause, author, rollback, sources, summary
        and time must be those of its "policy_version_recorded" record, which every version has."""
        problems: list[AuditProblem] = []
        async with self._db.read() as conn:
            records = (
                await conn.execute(
                    sa.select(audit_records.c.sequence, sa.cast(audit_records.c.payload, sa.Text).label("text")).where(
                        audit_records.c.event_type == _RECORDED_EVENT
                    )
                )
            ).all()
            rows = (await conn.execute(sa.select(policy_versions).order_by(policy_versions.c.version))).all()
        audited: dict[int, tuple[int, dict[str, Any]]] = {}
        for record in records:
            payload = json.loads(record.text) if record.text else {}
            if isinstance(payload, dict) and isinstance(payload.get("version"), int):
                audited[payload["version"]] = (int(record.sequence), payload)
        for row in rows:
            if len(problems) >= max_problems:
                break
            found = audited.pop(int(row.version), None)
            content = row.content if isinstance(row.content, dict) else json.loads(row.content)
            if content_digest(content) != row.digest:
                problems.append(
                    AuditProblem(
                        code="policy_version_mismatch",
                        message=f"policy-set version {row.version}'s content does not hash to its digest {row.digest} "
                        "(the version row was edited)",
                    )
                )
                continue
            if found is None:  # versions and their records were released together: every version has one
                problems.append(
                    AuditProblem(
                        code="policy_version_unaudited",
                        message=f"policy-set version {row.version} has no policy_version_recorded audit record "
                        "(the version row was written outside the server)",
                    )
                )
                continue
            sequence, payload = found
            fields = {
                "digest": row.digest,
                "cause": row.cause,
                "created_by": row.created_by,
                "rollback_of": row.rollback_of,
            }
            fields["row_sha256"] = row_hash(content.get("sources") or {}, row.summary, row.created_at)
            different = [
                "sources, summary or time" if name == "row_sha256" else name
                for name, value in fields.items()
                if payload.get(name) != value
            ]
            if different:
                problems.append(
                    AuditProblem(
                        code="policy_version_mismatch",
                        message=f"policy-set version {row.version} differs from its audit record #{sequence} in "
                        f"{', '.join(different)} (the version row was edited)",
                        sequence=sequence,
                    )
                )
        for number, (sequence, _) in sorted(audited.items())[: max(0, max_problems - len(problems))]:
            problems.append(
                AuditProblem(
                    code="policy_version_missing",
                    message=f"policy-set version {number} has an audit record (#{sequence}) but no row (it was "
                    "deleted)",
                    sequence=sequence,
                )
            )
        return problems

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
            await self.lock_policy_writes(conn)
            await _write_documents(conn, policies, capabilities, replacement, now)
            await self._settings.bump_policy_revision(conn, now)
            number = await self.insert_in(conn, version, now)
            await self._db.audit(conn, now).append(
                "policy_rollback", payload={**audit_payload, "policy_version": number}
            )
        return number
