"""API-managed policies and capabilities: documents by name, each change bumping the policy revision,
recording the policy-set version it makes (when given one) and audited ("<kind>_saved" with the document's
hash, "<kind>_deleted", each with the version) in one transaction. `DocumentTable` is the one
implementation; `Policies` and `Capabilities` are its two tables."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aegis_sdk._wire.canonical import canonical_hash
from aegis_sdk.models import Capability, Policy
from aegis_server.store.database import Database, Room
from aegis_server.store.policy_versions import NewPolicyVersion, PolicyVersions
from aegis_server.store.records import StoredCapability, StoredPolicy
from aegis_server.store.schema import capabilities, policies
from aegis_server.store.server_settings import ServerSettings

__all__ = ["Capabilities", "DocumentTable", "Policies"]

_Model = TypeVar("_Model", Policy, Capability)
_Stored = TypeVar("_Stored", StoredPolicy, StoredCapability)


class DocumentTable(Room, Generic[_Model, _Stored]):
    """The documents of one kind (`kind`: "policy", "capability") in `table`: validated as `model`, returned
    as `stored` (whose attribute `kind` is the document)."""

    def __init__(
        self,
        database: Database,
        settings: ServerSettings,
        *,
        table: sa.Table,
        kind: str,
        model: type[_Model],
        stored: Callable[[_Model, datetime, datetime], _Stored],
    ) -> None:
        super().__init__(database)
        self._settings = settings
        self._versions = PolicyVersions(database)
        self.table = table
        self.kind = kind
        self._model_type: type[_Model] = model
        self._make_stored: Callable[[_Model, datetime, datetime], _Stored] = stored

    def _stored(self, row: Any) -> _Stored:
        return self._make_stored(self._model_type.model_validate(row.document), row.created_at, row.updated_at)

    def _model(self, stored: _Stored) -> _Model:
        document: _Model = getattr(stored, self.kind)
        return document

    async def list_documents(self) -> list[_Model]:
        """Every document of this kind, by name."""
        return [self._model(stored) for stored in await self.list_records()]

    async def get_document(self, name: str) -> _Model | None:
        stored = await self.get_record(name)
        return self._model(stored) if stored is not None else None

    async def list_records(self) -> list[_Stored]:
        """Every document of this kind with its created/updated times, by name."""
        async with self._db.read() as conn:
            rows = (await conn.execute(sa.select(self.table).order_by(self.table.c.name))).all()
        return [self._stored(row) for row in rows]

    async def get_record(self, name: str) -> _Stored | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(self.table).where(self.table.c.name == name))).first()
        return self._stored(row) if row is not None else None

    async def documents_in(self, conn: AsyncConnection) -> dict[str, _Model]:
        """Every document of this kind by name, read in the caller's transaction."""
        rows = (await conn.execute(sa.select(self.table.c.name, self.table.c.document))).all()
        return {row.name: self._model_type.model_validate(row.document) for row in rows}

    async def put(self, document: _Model, *, version: NewPolicyVersion | None = None) -> _Stored:
        """Create or replace the document of its name, bump the policy revision, record `version` (the
        policy set this makes, when given) and audit it as "<kind>_saved" (with the document's hash and the
        version's number), all in one transaction."""
        stored, _ = await self.put_versioned(document, version)
        return stored

    async def put_versioned(self, document: _Model, version: NewPolicyVersion | None) -> tuple[_Stored, int | None]:
        """`put`, returning the stored document and the number of the version recorded (None without one)."""
        now = self._db.now()
        async with self._db.write() as conn:
            await self._versions.lock_policy_writes(conn)
            content = await self.put_in(conn, document, now)
            number = await self._version_in(conn, version, now)
            payload: dict[str, Any] = {"name": document.name, "sha256": canonical_hash(content)}
            if number is not None:
                payload["policy_version"] = number
            await self._db.audit(conn, now).append(f"{self.kind}_saved", payload=payload)
            row = (await conn.execute(sa.select(self.table).where(self.table.c.name == document.name))).one()
        return self._stored(row), number

    async def delete(self, name: str, *, version: NewPolicyVersion | None = None) -> bool:
        """Delete a stored document, recording `version` when given (audited as "<kind>_deleted" with the
        version's number); False when there is none of that name (and nothing is written)."""
        deleted, _ = await self.delete_versioned(name, version)
        return deleted

    async def delete_versioned(self, name: str, version: NewPolicyVersion | None) -> tuple[bool, int | None]:
        """`delete`, returning whether a document was deleted and the number of the version recorded."""
        now = self._db.now()
        async with self._db.write() as conn:
            await self._versions.lock_policy_writes(conn)
            if not await self.delete_in(conn, name, now):
                return False, None
            number = await self._version_in(conn, version, now)
            payload: dict[str, Any] = {"name": name}
            if number is not None:
                payload["policy_version"] = number
            await self._db.audit(conn, now).append(f"{self.kind}_deleted", payload=payload)
        return True, number

    async def _version_in(self, conn: AsyncConnection, version: NewPolicyVersion | None, now: datetime) -> int | None:
        return await self._versions.insert_in(conn, version, now) if version is not None else None

    async def put_in(
        self, conn: AsyncConnection, document: _Model, now: datetime, *, bump: bool = True
    ) -> dict[str, Any]:
        """Upsert `document` and bump the policy revision (unless not `bump`: the caller does, once, after its
        last document) in the caller's write transaction (not audited: the caller audits the change);
        returns the stored JSON content."""
        content: dict[str, Any] = document.model_dump(mode="json")
        await conn.execute(
            self._db.upsert(self.table)
            .values(name=document.name, document=content, created_at=now, updated_at=now)
            .on_conflict_do_update(index_elements=["name"], set_={"document": content, "updated_at": now})
        )
        if bump:
            await self._settings.bump_policy_revision(conn, now)
        return content

    async def delete_in(self, conn: AsyncConnection, name: str, now: datetime, *, bump: bool = True) -> bool:
        """Delete the document `name` and bump the policy revision (unless not `bump`) in the caller's write
        transaction (not audited); False, with nothing changed, when there is none of that name."""
        result = await conn.execute(sa.delete(self.table).where(self.table.c.name == name))
        if result.rowcount != 1:
            return False
        if bump:
            await self._settings.bump_policy_revision(conn, now)
        return True


class Policies(DocumentTable[Policy, StoredPolicy]):
    """The API-managed policies (audited as "policy_saved" / "policy_deleted")."""

    def __init__(self, database: Database, settings: ServerSettings) -> None:
        super().__init__(database, settings, table=policies, kind="policy", model=Policy, stored=StoredPolicy)


class Capabilities(DocumentTable[Capability, StoredCapability]):
    """The API-registered capabilities (audited as "capability_saved" / "capability_deleted")."""

    def __init__(self, database: Database, settings: ServerSettings) -> None:
        super().__init__(
            database, settings, table=capabilities, kind="capability", model=Capability, stored=StoredCapability
        )
