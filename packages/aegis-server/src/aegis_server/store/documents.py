"""API-managed policies and capabilities: documents by name, each change bumping the policy version and
audited ("<kind>_saved" with the document's hash, "<kind>_deleted") in one transaction."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from aegis_sdk.models import Capability, Policy
from aegis_server.canonical import canonical_hash
from aegis_server.store.database import Database
from aegis_server.store.records import StoredCapability, StoredPolicy
from aegis_server.store.schema import capabilities, policies
from aegis_server.store.server_settings import ServerSettings

__all__ = ["Documents"]


def _policy(row: Any) -> StoredPolicy:
    return StoredPolicy(Policy.model_validate(row.document), row.created_at, row.updated_at)


def _capability(row: Any) -> StoredCapability:
    return StoredCapability(Capability.model_validate(row.document), row.created_at, row.updated_at)


class Documents:
    """The API-managed policies and capabilities of one database."""

    def __init__(self, database: Database, settings: ServerSettings) -> None:
        self._db = database
        self._settings = settings

    async def list_policies(self) -> list[Policy]:
        """Every API-managed policy, by name."""
        return [stored.policy for stored in await self.list_policy_records()]

    async def get_policy(self, name: str) -> Policy | None:
        stored = await self.get_policy_record(name)
        return stored.policy if stored is not None else None

    async def list_policy_records(self) -> list[StoredPolicy]:
        """Every API-managed policy with its created/updated times, by name."""
        return [_policy(row) for row in await self._rows(policies)]

    async def get_policy_record(self, name: str) -> StoredPolicy | None:
        row = await self._row(policies, name)
        return _policy(row) if row is not None else None

    async def put_policy(self, policy: Policy) -> StoredPolicy:
        """Create or replace the policy named `policy.name` (audited as "policy_saved")."""
        return _policy(await self._put(policies, "policy", policy.name, policy.model_dump(mode="json")))

    async def delete_policy(self, name: str) -> bool:
        """Delete a stored policy (audited); False when there is none of that name."""
        return await self._delete(policies, "policy", name)

    async def list_capabilities(self) -> list[Capability]:
        """Every API-registered capability, by name."""
        return [stored.capability for stored in await self.list_capability_records()]

    async def get_capability(self, name: str) -> Capability | None:
        stored = await self.get_capability_record(name)
        return stored.capability if stored is not None else None

    async def list_capability_records(self) -> list[StoredCapability]:
        """Every API-registered capability with its created/updated times, by name."""
        return [_capability(row) for row in await self._rows(capabilities)]

    async def get_capability_record(self, name: str) -> StoredCapability | None:
        row = await self._row(capabilities, name)
        return _capability(row) if row is not None else None

    async def put_capability(self, capability: Capability) -> StoredCapability:
        """Create or replace the capability named `capability.name` (audited as "capability_saved")."""
        return _capability(
            await self._put(capabilities, "capability", capability.name, capability.model_dump(mode="json"))
        )

    async def delete_capability(self, name: str) -> bool:
        """Delete a stored capability (audited); False when there is none of that name."""
        return await self._delete(capabilities, "capability", name)

    async def _rows(self, table: sa.Table) -> list[Any]:
        async with self._db.read() as conn:
            return list((await conn.execute(sa.select(table).order_by(table.c.name))).all())

    async def _row(self, table: sa.Table, name: str) -> Any:
        async with self._db.read() as conn:
            return (await conn.execute(sa.select(table).where(table.c.name == name))).first()

    async def _put(self, table: sa.Table, kind: str, name: str, document: dict[str, Any]) -> Any:
        """Upsert one API-managed policy or capability, bump the policy version and audit it as
        "<kind>_saved" (with the document's hash), all in one transaction; returns the stored row."""
        now = self._db.now()
        async with self._db.write() as conn:
            await conn.execute(
                self._db.upsert(table)
                .values(name=name, document=document, created_at=now, updated_at=now)
                .on_conflict_do_update(index_elements=["name"], set_={"document": document, "updated_at": now})
            )
            await self._settings.bump_policy_version(conn, now)
            await self._db.audit(conn, now).append(
                f"{kind}_saved", payload={"name": name, "sha256": canonical_hash(document)}
            )
            return (await conn.execute(sa.select(table).where(table.c.name == name))).one()

    async def _delete(self, table: sa.Table, kind: str, name: str) -> bool:
        """Delete one API-managed policy or capability (audited as "<kind>_deleted"); False if absent."""
        now = self._db.now()
        async with self._db.write() as conn:
            result = await conn.execute(sa.delete(table).where(table.c.name == name))
            if result.rowcount != 1:
                return False
            await self._settings.bump_policy_version(conn, now)
            await self._db.audit(conn, now).append(f"{kind}_deleted", payload={"name": name})
        return True
