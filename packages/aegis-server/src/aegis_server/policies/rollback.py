"""Rolling the policy set back to a recorded version.

The server can only roll back what the API defined: version V's API-defined policies and capabilities
replace the stored ones (those of V upserted, every other stored one deleted: planned from what the
transaction reads under the policy-write lock, so a concurrent write is not missed) in one transaction with
the new version (cause "rollback") and its "policy_rollback" audit record; the policy revision is bumped in it, so every
replica reloads. What the policy files define rolls back by the operator's files: the result lists the
file-defined items that differ from V's and says so. When the resulting set equals the active one nothing
is written (`changed` false): a repeated rollback is a no-op, not an error.

`roll_back` is shared by the server's `PolicyManager.rollback` (today's files: the ones it loaded) and the
`aegis-server policy rollback` command (today's files: those of the latest version).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field

from aegis_sdk.models import Capability, Policy
from aegis_server.engine import PolicySetError
from aegis_server.governance.errors import NotFound
from aegis_server.policies.candidate import API_SOURCE, FileItems, invalid_policy
from aegis_server.store import Store
from aegis_server.store.policy_versions import ApiDocumentsReplacement, PolicyChange, PolicyVersion, StoredApiItems

__all__ = ["FileDefinedItem", "PolicyRollback", "RollbackPlan", "plan_rollback", "roll_back", "unknown_version"]


class FileDefinedItem(BaseModel):
    """A policy or capability the policy files define, today or in the version rolled back to, whose
    definition differs between the two: the server cannot roll it back, the operator's files do."""

    kind: Literal["policy", "capability"]
    name: str
    in_version: str | None = Field(
        description="Where it came from in the version rolled back to: a file, 'api', or null (absent)."
    )
    in_files: str | None = Field(description="The policy file that defines it today (null: none does).")


class PolicyRollback(BaseModel):
    """The answer of a rollback."""

    changed: bool = Field(description="False when the active set already was the result (nothing written).")
    from_version: int | None = Field(description="The active version before the rollback.")
    to_version: int = Field(description="The version rolled back to.")
    version: int | None = Field(description="The new version the rollback made (unchanged: the active one).")
    restored_policies: list[str] = Field(default_factory=list)
    removed_policies: list[str] = Field(default_factory=list)
    restored_capabilities: list[str] = Field(default_factory=list)
    removed_capabilities: list[str] = Field(default_factory=list)
    file_defined: list[FileDefinedItem] = Field(default_factory=list)
    message: str


@dataclasses.dataclass(frozen=True)
class RollbackPlan:
    """What rolling back to `target` writes, and the API-defined items afterwards."""

    target: PolicyVersion
    api_policies: dict[str, Policy]
    api_capabilities: dict[str, Capability]
    replacement: ApiDocumentsReplacement
    file_defined: tuple[FileDefinedItem, ...]


def unknown_version(version: int) -> NotFound:
    """404 not_found for a version that was never recorded, saying how to list them."""
    error = NotFound("policy version", str(version))
    error.message = (
        f"No policy-set version {version} exists. List the versions with GET /api/v1/policy-versions "
        "(or `aegis-server policy history`)."
    )
    error.args = (error.message,)
    return error


def _file_differences(
    kind: Literal["policy", "capability"],
    target_items: Mapping[str, Policy] | Mapping[str, Capability],
    target: PolicyVersion,
    files: FileItems,
) -> list[FileDefinedItem]:
    capability = kind == "capability"
    today: Mapping[str, Policy] | Mapping[str, Capability] = files.capabilities if capability else files.policies
    differences = []
    for name in sorted(set(target_items) | set(today)):
        then_source = target.source_of(name, capability=capability) if name in target_items else None
        then_from_file = then_source is not None and then_source != API_SOURCE
        if name not in today and not then_from_file:
            continue  # API-defined in V and no file defines it now: the server restores it
        if then_from_file and today.get(name) == target_items.get(name):
            continue  # the same file-defined item then and now
        differences.append(
            FileDefinedItem(
                kind=kind, name=name, in_version=then_source, in_files=files.source_of(name, capability=capability)
            )
        )
    return differences


def plan_rollback(
    target: PolicyVersion,
    files: FileItems,
    api_policies: Mapping[str, Policy],
    api_capabilities: Mapping[str, Capability],
) -> RollbackPlan:
    """Roll the stored API items `api_policies` / `api_capabilities` back to those of `target` (its items
    that today's `files` define stay the files')."""
    target_policies = {p.name: p for p in target.policies}
    target_capabilities = {c.name: c for c in target.capabilities}
    wanted_policies = {
        name: p
        for name, p in target_policies.items()
        if target.source_of(name) == API_SOURCE and name not in files.policies
    }
    wanted_capabilities = {
        name: c
        for name, c in target_capabilities.items()
        if target.source_of(name, capability=True) == API_SOURCE and name not in files.capabilities
    }
    replacement = ApiDocumentsReplacement(
        put_policies=[p for name, p in sorted(wanted_policies.items()) if api_policies.get(name) != p],
        delete_policies=sorted(set(api_policies) - set(wanted_policies)),
        put_capabilities=[c for name, c in sorted(wanted_capabilities.items()) if api_capabilities.get(name) != c],
        delete_capabilities=sorted(set(api_capabilities) - set(wanted_capabilities)),
    )
    file_defined = (
        *_file_differences("capability", target_capabilities, target, files),
        *_file_differences("policy", target_policies, target, files),
    )
    return RollbackPlan(target, wanted_policies, wanted_capabilities, replacement, file_defined)


def _names(items: list[str]) -> str:
    return ", ".join(repr(name) for name in items)


def _files_caveat(version: int, items: tuple[FileDefinedItem, ...]) -> str:
    if not items:
        return ""
    policies = [item.name for item in items if item.kind == "policy"]
    capabilities = [item.name for item in items if item.kind == "capability"]
    named = " and ".join(
        part
        for part in (
            f"policies {_names(policies)}" if policies else "",
            f"capabilities {_names(capabilities)}" if capabilities else "",
        )
        if part
    )
    files = sorted(
        {source for item in items for source in (item.in_version, item.in_files) if source and source != API_SOURCE}
    )
    where = f" (from files {', '.join(files)})" if files else ""
    return (
        f" The {named}{where} are defined by the policy files, which the server cannot roll back; restore those "
        f"files from version {version} (`aegis-server policy show {version} --files`) and restart the servers."
    )


def _result(plan: RollbackPlan, *, changed: bool, from_version: int | None, version: int | None) -> PolicyRollback:
    target = plan.target.version
    replacement = plan.replacement
    restored_policies = [p.name for p in replacement.put_policies]
    restored_capabilities = [c.name for c in replacement.put_capabilities]
    if changed:
        parts = [
            f"{verb} {kind} {_names(names)}"
            for verb, kind, names in (
                ("restored", "policies", restored_policies),
                ("removed", "policies", list(replacement.delete_policies)),
                ("restored", "capabilities", restored_capabilities),
                ("removed", "capabilities", list(replacement.delete_capabilities)),
            )
            if names
        ]
        message = f"Rolled back to version {target}: {'; '.join(parts)} (new version {version})."
    else:
        message = (
            f"Nothing to roll back: the API-defined policies and capabilities already match version {target}; "
            f"the active version stays {version}."
        )
    return PolicyRollback(
        changed=changed,
        from_version=from_version,
        to_version=target,
        version=version,
        restored_policies=restored_policies if changed else [],
        removed_policies=list(replacement.delete_policies) if changed else [],
        restored_capabilities=restored_capabilities if changed else [],
        removed_capabilities=list(replacement.delete_capabilities) if changed else [],
        file_defined=list(plan.file_defined),
        message=message + _files_caveat(target, plan.file_defined),
    )


async def roll_back(
    store: Store,
    version: int,
    *,
    files: FileItems,
    current_version: int | None,
    by: str | None,
) -> PolicyRollback:
    """Roll the stored API-defined items back to `version`: planned from what is stored, read in the write's
    transaction under the policy-write lock (not from a replica's cache, which a concurrent write may have
    outdated), with the new version recorded and audited in that transaction; the caller reloads its
    active set when `changed`. Nothing is written when the stored items already are `version`'s. Raises
    `NotFound` (unknown version) or `InvalidInput` invalid_policy (its API items do not compile with
    today's files; nothing written)."""
    target = await store.policy_versions.get(version)
    if target is None:
        raise unknown_version(version)
    planned: list[RollbackPlan] = []

    def plan(stored: StoredApiItems) -> PolicyChange | None:
        api_policies = {name: p for name, p in stored.policies.items() if name not in files.policies}
        api_capabilities = {name: c for name, c in stored.capabilities.items() if name not in files.capabilities}
        rollback = plan_rollback(target, files, api_policies, api_capabilities)
        planned.append(rollback)
        try:
            compiled = files.compile(rollback.api_policies, rollback.api_capabilities)
        except PolicySetError as exc:
            raise invalid_policy(
                exc,
                f"Version {version}'s API-defined policies and capabilities do not compile with today's policy files",
            ) from None
        replacement = rollback.replacement
        if not any(
            (
                replacement.put_policies,
                replacement.delete_policies,
                replacement.put_capabilities,
                replacement.delete_capabilities,
            )
        ):
            return None
        new = files.new_version(
            compiled,
            rollback.api_policies,
            rollback.api_capabilities,
            cause="rollback",
            summary=f"rolled back to version {version}",
            created_by=by,
            rollback_of=version,
        )
        payload = {
            "from_version": current_version,
            "to_version": version,
            "by": by,
            "restored_policies": [p.name for p in replacement.put_policies],
            "removed_policies": list(replacement.delete_policies),
            "restored_capabilities": [c.name for c in replacement.put_capabilities],
            "removed_capabilities": list(replacement.delete_capabilities),
            "file_defined": [item.model_dump() for item in rollback.file_defined],
        }
        return PolicyChange(replacement=replacement, version=new, audit=[("policy_rollback", payload)])

    written = await store.policy_versions.write_change(
        policies=store.policies, capabilities=store.capabilities, plan=plan
    )
    if written is None:
        return _result(planned[-1], changed=False, from_version=current_version, version=current_version)
    return _result(planned[-1], changed=True, from_version=current_version, version=written.version)
