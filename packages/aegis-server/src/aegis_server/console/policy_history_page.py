"""Policies > History (scope governance:read or policies:manage, as the Policies page): the recorded versions
of the policy set, newest first, paged with `before`; and a version's page: its metadata, its policies and
capabilities with their sources, its canonical YAML, and what changed against another version (`compare`,
default the previous one). Keys with policies:manage also get the rollback form there
(`policy_rollback_page`)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aegis_server.console.policy_versions_view import (
    author_names,
    diff_lines,
    parse_version,
    version_content,
)
from aegis_server.console.rendering import error_page, render
from aegis_server.console.sessions import ConsoleUser, signed_in
from aegis_server.governance.errors import Unavailable
from aegis_server.governance.service import GovernanceService
from aegis_server.policies.diff import canonical_yaml, diff_versions
from aegis_server.security import SCOPE_POLICIES, SCOPE_READ
from aegis_server.store.policy_versions import PolicyVersion

__all__ = ["PAGE_SIZE", "router"]

router = APIRouter()
PAGE_SIZE = 25
_VIEWERS = (SCOPE_READ, SCOPE_POLICIES)


async def active_version(service: GovernanceService) -> int | None:
    """The version this server decides with now (after picking up what other replicas stored)."""
    await service.policies.maybe_refresh()
    return service.policies.active.version


@router.get("/policies/history", response_class=HTMLResponse)
async def history_page(request: Request, user: Annotated[ConsoleUser, Depends(signed_in(*_VIEWERS))]) -> HTMLResponse:
    service: GovernanceService = request.app.state.service
    given = request.query_params.get("before")
    before = parse_version(given) if given else None
    if given and before is None:
        return error_page(
            request, 400, f"'before' must be a version number (1, 2, ...), not {given[:20]!r}.", user=user
        )
    try:
        active = await active_version(service)
    except Unavailable as error:
        return error_page(request, 503, error.message, user=user)
    found = await service.store.policy_versions.history(limit=PAGE_SIZE + 1, before=before)
    versions = found[:PAGE_SIZE]
    older = (
        f"/console/policies/history?{urlencode({'before': versions[-1].version})}" if len(found) > PAGE_SIZE else None
    )
    context = {
        "versions": versions,
        "active": active,
        "authors": await author_names(service.store, versions),
        "older": older,
        "paged": before is not None,
    }
    return render(request, "policy_history.html", context, user=user)


async def _compared(
    service: GovernanceService, version: PolicyVersion, given: str | None
) -> tuple[dict[str, Any] | None, str | None, str]:
    """The diff against `compare` (default: the previous version), a problem to show instead, and the field's value."""
    if given is None or not given.strip():
        if version.version == 1:
            return None, None, ""
        against = version.version - 1
    else:
        parsed = parse_version(given)
        if parsed is None:
            return None, f"'Compare with' must be a version number (1, 2, ...), not {given[:20]!r}.", given[:20]
        against = parsed
    other = await service.store.policy_versions.get(against)
    if other is None:
        latest = await service.store.policy_versions.latest()
        known = f"the versions are 1 to {latest.version}" if latest is not None else "none is recorded"
        return None, f"There is no version {against} to compare with ({known}).", str(against)
    old, new = (other, version) if other.version <= version.version else (version, other)
    diff = diff_versions(old, new)
    return {"diff": diff, "lines": diff_lines(diff.text)}, None, str(against)


@router.get("/policies/versions/{number}", response_class=HTMLResponse)
async def version_page(
    request: Request, number: str, user: Annotated[ConsoleUser, Depends(signed_in(*_VIEWERS))]
) -> HTMLResponse:
    service: GovernanceService = request.app.state.service
    parsed = parse_version(number)
    version = await service.store.policy_versions.get(parsed) if parsed is not None else None
    if version is None:
        return error_page(
            request,
            404,
            f"There is no policy-set version {number[:20]!r}. Policies > History lists the versions.",
            user=user,
        )
    try:
        active = await active_version(service)
    except Unavailable as error:
        return error_page(request, 503, error.message, user=user)
    comparison, problem, compare_value = await _compared(service, version, request.query_params.get("compare"))
    context = {
        "version": version,
        "active": active,
        "authors": await author_names(service.store, [version]),
        "content": version_content(version),
        "yaml": canonical_yaml(version),
        "comparison": comparison,
        "compare_problem": problem,
        "compare_value": compare_value,
        "can_roll_back": user.has_scope(SCOPE_POLICIES) and version.version != active,
    }
    return render(request, "policy_version.html", context, user=user, status_code=400 if problem else 200)
