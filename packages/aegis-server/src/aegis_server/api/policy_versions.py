"""`/api/v1/policy-versions`: the recorded versions of the policy set, what changed between two, and the
rollback to one.

Reads need `governance:read` (a version holds whole policy bodies, as GET /policies shows them); the
rollback needs `policies:manage`. An unknown version is 404 `not_found`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from aegis_sdk.models import Capability, Policy
from aegis_server.api.common import Manager, Reader, ServiceDep, errors
from aegis_server.governance.errors import InvalidRequest
from aegis_server.policies.diff import PolicySetDiff, diff_versions
from aegis_server.policies.rollback import PolicyRollback, unknown_version
from aegis_server.store.policy_versions import PolicyVersion

__all__ = ["PolicyVersionDetail", "PolicyVersionPage", "PolicyVersionSummary", "router"]

router = APIRouter(prefix="/api/v1/policy-versions", tags=["policy versions"])

VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="A version number (1, 2, ...).")]


class PolicyVersionSummary(BaseModel):
    """A recorded version, without its content."""

    version: int
    digest: str
    cause: str = Field(
        description="files_loaded, policy_saved, policy_deleted, capability_saved, capability_deleted, rollback "
        "or replica_loaded."
    )
    summary: str
    created_at: datetime
    created_by: str | None = Field(description="The API key id, 'cli', or null for a server loading its files.")
    rollback_of: int | None = Field(description="The version a rollback restored.")
    active: bool = Field(description="This server decides with this version now.")


class PolicyVersionPage(BaseModel):
    items: list[PolicyVersionSummary]
    next_cursor: int | None = Field(description="Pass as `before` for the next (older) page; null on the last.")


class PolicyVersionDetail(PolicyVersionSummary):
    """A recorded version with its whole content."""

    policies: list[Policy]
    capabilities: list[Capability]
    sources: dict[str, str] = Field(description="Policy name or `capability:<name>` → 'api' or the file.")


def _summary(version: PolicyVersion, active: int | None) -> dict[str, Any]:
    return {
        "version": version.version,
        "digest": version.digest,
        "cause": version.cause,
        "summary": version.summary,
        "created_at": version.created_at,
        "created_by": version.created_by,
        "rollback_of": version.rollback_of,
        "active": version.version == active,
    }


async def _active_version(service: ServiceDep) -> int | None:
    await service.policies.maybe_refresh()
    return service.policies.active.version


async def _get(service: ServiceDep, version: int) -> PolicyVersion:
    found = await service.store.policy_versions.get(version)
    if found is None:
        raise unknown_version(version)
    return found


@router.get("", response_model=PolicyVersionPage, summary="List policy-set versions, newest first", responses=errors())
async def list_versions(
    service: ServiceDep,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Versions below this one.")] = None,
) -> PolicyVersionPage:
    active = await _active_version(service)
    versions = await service.store.policy_versions.history(limit=limit + 1, before=before)
    page = versions[:limit]
    next_cursor = page[-1].version if len(versions) > limit else None
    return PolicyVersionPage(
        items=[PolicyVersionSummary(**_summary(v, active)) for v in page],
        next_cursor=next_cursor,
    )


@router.get(
    "/{version}", response_model=PolicyVersionDetail, summary="One version with its content", responses=errors(404)
)
async def get_version(version: VersionNumber, service: ServiceDep, _: Reader) -> PolicyVersionDetail:
    found = await _get(service, version)
    return PolicyVersionDetail(
        **_summary(found, await _active_version(service)),
        policies=list(found.policies),
        capabilities=list(found.capabilities),
        sources=dict(found.sources),
    )


@router.get(
    "/{version}/diff",
    response_model=PolicySetDiff,
    summary="What changed from another version to this one",
    description="`against` (default: the previous version) is the older side. Version 1 has no previous "
    "version: give `against`.",
    responses=errors(404, 422),
)
async def diff_version(
    version: VersionNumber,
    service: ServiceDep,
    _: Reader,
    against: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="The version to compare with.")] = None,
) -> PolicySetDiff:
    if against is None:
        if version == 1:
            raise InvalidRequest(
                "Version 1 is the first version; there is nothing before it. Compare it with another version: "
                "?against=N.",
                {"version": version},
            )
        against = version - 1
    new = await _get(service, version)
    old = await _get(service, against)
    return diff_versions(old, new)


@router.post(
    "/{version}/rollback",
    response_model=PolicyRollback,
    summary="Roll the API-defined policies and capabilities back to a version",
    description="Writes V's API-defined items (upserts them, deletes the others) with a new version (cause "
    "rollback) and a `policy_rollback` audit record in one transaction; other replicas pick it up within "
    "`policy_refresh_interval_seconds`. File-defined items are listed in `file_defined`: the operator's files "
    "roll those back. When nothing API-defined differs, 200 with `changed: false` and nothing written. "
    "422 invalid_policy when V's items no longer compile with today's files.",
    responses=errors(404, 422),
)
async def rollback_version(version: VersionNumber, service: ServiceDep, principal: Manager) -> PolicyRollback:
    return await service.policies.rollback(version, by=principal.key_id)
