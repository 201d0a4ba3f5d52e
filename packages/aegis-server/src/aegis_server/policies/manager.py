"""The policy set the engine decides with: what the policy files define (read-only through the API) plus
what the API stored, compiled into one set and swapped atomically, only when it compiles. Changes made
by other replicas are picked up by a cheap revision check.

Every change of the active set is a recorded policy-set version (`store.policy_versions`), and the active
set carries its number (`PolicySet.version`, on every decision): loading the files (deduplicated, so
replicas with the same files share one version), each API write (recorded in the write's transaction),
another replica's change picked up here, and a rollback (`rollback`, see `policies.rollback`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from aegis_sdk.models import Capability, Policy, PolicyProblem, PolicyValidation
from aegis_server.engine import PolicySet, PolicySetError
from aegis_server.governance.errors import Conflict, NotFound, Unavailable
from aegis_server.metrics import Metrics
from aegis_server.policies.candidate import API_SOURCE, FileItems, invalid_policy
from aegis_server.policies.files import load_policy_paths
from aegis_server.policies.rollback import PolicyRollback, roll_back
from aegis_server.store import Store
from aegis_server.store.policy_versions import NewPolicyVersion

__all__ = ["PolicyManager"]

logger = logging.getLogger("aegis_server.policies")

_Item = TypeVar("_Item", Capability, Policy)


def _by_name(from_files: Mapping[str, _Item], from_api: Mapping[str, _Item]) -> list[_Item]:
    """Every item sorted by name; a file's item wins over a stored one of the same name."""
    merged = {**from_api, **from_files}
    return [merged[name] for name in sorted(merged)]


def _named(kind: str, name: str, from_files: Mapping[str, _Item], from_api: Mapping[str, _Item]) -> _Item:
    item = from_files.get(name) or from_api.get(name)
    if item is None:
        raise NotFound(kind, name)
    return item


class PolicyManager:
    """Owns the active PolicySet. File-defined items are read-only through the API; API-defined ones
    live in the store. Any change recompiles the whole set and swaps it only if it compiles."""

    def __init__(
        self,
        store: Store,
        paths: Sequence[Path],
        metrics: Metrics,
        *,
        refresh_interval: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._paths = tuple(paths)
        self._metrics = metrics
        self._refresh_interval = refresh_interval
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._files = FileItems()
        self._api_policies: dict[str, Policy] = {}
        self._api_capabilities: dict[str, Capability] = {}
        self._active: PolicySet | None = None
        self._revision: str | None = None
        self._last_check = float("-inf")

    @property
    def active(self) -> PolicySet:
        if self._active is None:
            raise Unavailable("The policy set is not loaded yet; retry shortly.")
        return self._active

    @property
    def loaded(self) -> bool:
        return self._active is not None

    @property
    def paths(self) -> tuple[Path, ...]:
        return self._paths

    @property
    def files(self) -> FileItems:
        """What the policy files define (as loaded at start)."""
        return self._files

    def source_of(self, name: str, *, capability: bool = False) -> str | None:
        """The policy file that defines the policy (or capability) `name`; None when the API stored it."""
        return self._files.source_of(name, capability=capability)

    async def load(self) -> None:
        """Read the files and the stored items and compile them, then record the version (one per distinct
        set: replicas loading the same files share it); raises PolicySetError if they do not compile."""
        self._files = FileItems.from_documents(load_policy_paths(self._paths))
        async with self._lock:
            await self._reload_from_store(loading=True)

    async def _reload_from_store(self, *, loading: bool = False) -> None:
        revision = await self._store.policy_revision()
        policies = {p.name: p for p in await self._store.list_policies()}
        capabilities = {c.name: c for c in await self._store.list_capabilities()}
        for name in set(policies) & set(self._files.policies):
            logger.warning("stored policy %r is shadowed by the policy file that defines it", name)
            del policies[name]
        for name in set(capabilities) & set(self._files.capabilities):
            logger.warning("stored capability %r is shadowed by the policy file that defines it", name)
            del capabilities[name]
        compiled = self._files.compile(policies, capabilities)
        if loading:
            version = await self._record_loaded(compiled, policies, capabilities)
        else:
            version = await self._version_of_reloaded(compiled, policies, capabilities)
        self._api_policies, self._api_capabilities = policies, capabilities
        self._swap(dataclasses.replace(compiled, version=version))
        self._revision = revision
        self._last_check = self._monotonic()

    async def _record_loaded(
        self, compiled: PolicySet, policies: Mapping[str, Policy], capabilities: Mapping[str, Capability]
    ) -> int:
        latest = await self._store.policy_versions.latest()
        summary = (
            f"policy files loaded: {len(self._files.policies)} policies and {len(self._files.capabilities)} "
            f"capabilities from files, {len(policies)} policies and {len(capabilities)} capabilities from the API"
        )
        new = self._files.new_version(compiled, policies, capabilities, cause="files_loaded", summary=summary)
        number = await self._store.policy_versions.record(new)
        if latest is not None and latest.digest != compiled.digest:
            then = FileItems.of_version(latest)
            if then.policies != self._files.policies or then.capabilities != self._files.capabilities:
                logger.warning(
                    "the policy files loaded here differ from those of policy-set version %d; recorded version %d. "
                    "Replicas running with different policy files disagree on the policy set (expected only "
                    "while a change of the files rolls out)",
                    latest.version,
                    number,
                )
        return number

    async def _version_of_reloaded(
        self, compiled: PolicySet, policies: Mapping[str, Policy], capabilities: Mapping[str, Capability]
    ) -> int:
        """The version another replica recorded for this set; a new one ("replica_loaded") when none holds it,
        which happens only when this replica's policy files differ from the other's."""
        number = await self._store.policy_versions.number_of(compiled.digest)
        if number is not None:
            return number
        new = self._files.new_version(
            compiled,
            policies,
            capabilities,
            cause="replica_loaded",
            summary="another replica's change, loaded with this replica's policy files (which differ from theirs)",
        )
        number = await self._store.policy_versions.record(new)
        logger.warning(
            "after another replica's change the policy set here matches no recorded version; recorded version %d. "
            "Replicas running with different policy files disagree on the policy set",
            number,
        )
        return number

    def _swap(self, compiled: PolicySet) -> None:
        self._active = compiled
        self._metrics.policy_rules.set(compiled.rule_count)
        self._metrics.policy_version.set(compiled.version or 0)

    async def maybe_refresh(self) -> None:
        """Pick up changes made by other replicas: a cheap revision check at most once per interval."""
        if self._monotonic() - self._last_check < self._refresh_interval:
            return
        self._last_check = self._monotonic()
        revision = await self._store.policy_revision()
        if revision == self._revision:
            return
        async with self._lock:
            try:
                await self._reload_from_store()
            except PolicySetError as exc:
                # Another replica stored a set we cannot compile (e.g. different engine version): keep ours.
                logger.error("the stored policy set does not compile here; keeping the active set: %s", exc)
                self._revision = revision

    # -- reads ------------------------------------------------------------------------------------

    async def list_policies(self) -> list[Policy]:
        await self.maybe_refresh()
        return _by_name(self._files.policies, self._api_policies)

    async def get_policy(self, name: str) -> Policy:
        await self.maybe_refresh()
        return _named("policy", name, self._files.policies, self._api_policies)

    async def list_capabilities(self) -> list[Capability]:
        await self.maybe_refresh()
        return _by_name(self._files.capabilities, self._api_capabilities)

    async def get_capability(self, name: str) -> Capability:
        await self.maybe_refresh()
        return _named("capability", name, self._files.capabilities, self._api_capabilities)

    # -- writes -----------------------------------------------------------------------------------

    def _file_conflict(self, kind: str, name: str) -> Conflict:
        source = self._files.source_of(name, capability=kind == "capability") or "a policy file"
        return Conflict(
            f"The {kind} {name!r} is defined in {source}; what a policy file defines cannot be changed through the "
            f"API. Edit the file and restart the server, or use another name.",
            {"name": name, "source": source},
            code="policy_conflict",
        )

    async def _refresh_locked(self) -> None:
        revision = await self._store.policy_revision()
        if revision != self._revision:
            await self._reload_from_store()

    async def put_capability(self, capability: Capability, *, by: str | None = None) -> tuple[Capability, bool]:
        """Register (or replace) an API-defined capability; `by`: the API key id making the change."""
        if capability.name in self._files.capabilities:
            raise self._file_conflict("capability", capability.name)
        async with self._lock:
            await self._refresh_locked()
            created = capability.name not in self._api_capabilities
            candidate = {**self._api_capabilities, capability.name: capability}

            async def write(version: NewPolicyVersion) -> int | None:
                _, number = await self._store.capabilities.put_versioned(capability, version)
                return number

            summary = f"capability {capability.name!r} {'registered' if created else 'replaced'}"
            await self._commit(self._api_policies, candidate, write, cause="capability_saved", summary=summary, by=by)
            return capability, created

    async def create_policy(self, policy: Policy, *, by: str | None = None) -> Policy:
        if policy.name in self._files.policies:
            raise self._file_conflict("policy", policy.name)
        async with self._lock:
            await self._refresh_locked()
            if policy.name in self._api_policies:
                raise Conflict(
                    f"A policy named {policy.name!r} exists. Replace it with PUT /api/v1/policies/{policy.name}, "
                    "or choose another name.",
                    {"name": policy.name, "source": API_SOURCE},
                    code="policy_conflict",
                )
            await self._apply_policy(policy, by=by)
            return policy

    async def put_policy(self, policy: Policy, *, by: str | None = None) -> tuple[Policy, bool]:
        if policy.name in self._files.policies:
            raise self._file_conflict("policy", policy.name)
        async with self._lock:
            await self._refresh_locked()
            created = policy.name not in self._api_policies
            await self._apply_policy(policy, by=by)
            return policy, created

    async def _apply_policy(self, policy: Policy, *, by: str | None) -> None:
        candidate = {**self._api_policies, policy.name: policy}

        async def write(version: NewPolicyVersion) -> int | None:
            _, number = await self._store.policies.put_versioned(policy, version)
            return number

        summary = f"policy {policy.name!r} saved"
        await self._commit(candidate, self._api_capabilities, write, cause="policy_saved", summary=summary, by=by)

    async def _commit(
        self,
        policies: Mapping[str, Policy],
        capabilities: Mapping[str, Capability],
        write: Callable[[NewPolicyVersion], Awaitable[int | None]],
        *,
        cause: str,
        summary: str,
        by: str | None,
    ) -> None:
        """Compile the candidate API items with the files' (422 invalid_policy, nothing written, if they do
        not compile), then run the store `write` (which records the version in its transaction) and swap
        the compiled set in, stamped with that version. Called under the lock."""
        try:
            compiled = self._files.compile(policies, capabilities)
        except PolicySetError as exc:
            raise invalid_policy(exc) from None
        version = self._files.new_version(compiled, policies, capabilities, cause=cause, summary=summary, created_by=by)
        number = await write(version)
        self._api_policies, self._api_capabilities = dict(policies), dict(capabilities)
        self._swap(dataclasses.replace(compiled, version=number))
        self._revision = await self._store.policy_revision()

    async def delete_policy(self, name: str, *, by: str | None = None) -> None:
        if name in self._files.policies:
            raise self._file_conflict("policy", name)
        async with self._lock:
            await self._refresh_locked()
            if name not in self._api_policies:
                raise NotFound("policy", name)
            candidate = {k: v for k, v in self._api_policies.items() if k != name}

            async def write(version: NewPolicyVersion) -> int | None:
                deleted, number = await self._store.policies.delete_versioned(name, version)
                if not deleted:  # another replica deleted it since our refresh
                    raise NotFound("policy", name)
                return number

            summary = f"policy {name!r} deleted"
            await self._commit(candidate, self._api_capabilities, write, cause="policy_deleted", summary=summary, by=by)

    async def rollback(self, version: int, *, by: str | None) -> PolicyRollback:
        """Roll the API-defined items back to `version` (see `policies.rollback`); `by`: who (a key id)."""
        async with self._lock:
            await self._refresh_locked()
            active = self.active
            result = await roll_back(
                self._store,
                version,
                files=self._files,
                api_policies=self._api_policies,
                api_capabilities=self._api_capabilities,
                current_version=active.version,
                current_digest=active.digest,
                by=by,
            )
            if result.changed:
                await self._reload_from_store()
            return result

    async def validate(self, policy: Policy) -> PolicyValidation:
        if policy.name in self._files.policies:
            problem = PolicyProblem(
                message="a policy of this name is defined in a file and cannot be replaced through the API",
                policy=policy.name,
                source=self._files.source_of(policy.name),
            )
            return PolicyValidation(valid=False, errors=[problem])
        await self.maybe_refresh()
        try:
            self._files.compile({**self._api_policies, policy.name: policy}, self._api_capabilities)
        except PolicySetError as exc:
            return PolicyValidation(valid=False, errors=list(exc.problems))
        return PolicyValidation(valid=True)
