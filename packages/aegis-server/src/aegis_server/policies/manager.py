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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aegis_sdk._wire.canonical import canonical_hash
from aegis_sdk.models import Capability, Policy, PolicyProblem, PolicyValidation
from aegis_server.engine import PolicySet, PolicySetError
from aegis_server.governance.errors import Conflict, NotFound, Unavailable
from aegis_server.metrics import Metrics
from aegis_server.policies.candidate import API_SOURCE, FileItems, invalid_policy
from aegis_server.policies.files import load_policy_paths
from aegis_server.policies.rollback import PolicyRollback, roll_back
from aegis_server.store import Store
from aegis_server.store.policy_versions import ApiDocumentsReplacement, PolicyChange, StoredApiItems

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


@dataclasses.dataclass(frozen=True)
class _Edit:
    """One API change planned on given API items: the items after it, what to write, how to audit it."""

    policies: Mapping[str, Policy]
    capabilities: Mapping[str, Capability]
    replacement: ApiDocumentsReplacement
    audit: tuple[tuple[str, Mapping[str, Any]], ...]
    cause: str
    summary: str
    created: bool


_Editor = Callable[[Mapping[str, Policy], Mapping[str, Capability]], _Edit]


def _policy_saved(policy: Policy, policies: Mapping[str, Policy], capabilities: Mapping[str, Capability]) -> _Edit:
    payload = {"name": policy.name, "sha256": canonical_hash(policy.model_dump(mode="json"))}
    return _Edit(
        policies={**policies, policy.name: policy},
        capabilities=dict(capabilities),
        replacement=ApiDocumentsReplacement(put_policies=[policy]),
        audit=(("policy_saved", payload),),
        cause="policy_saved",
        summary=f"policy {policy.name!r} saved",
        created=policy.name not in policies,
    )


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

    def _api_view(self, stored: StoredApiItems) -> tuple[dict[str, Policy], dict[str, Capability]]:
        """The stored API items this replica uses: those no policy file of its own defines."""
        policies = {name: p for name, p in stored.policies.items() if name not in self._files.policies}
        capabilities = {name: c for name, c in stored.capabilities.items() if name not in self._files.capabilities}
        return policies, capabilities

    async def _reload_from_store(self, *, loading: bool = False) -> None:
        # One consistent read of the revision and both tables: a set mixing two changes never gets compiled.
        stored = await self._store.policy_versions.read_api_items(
            policies=self._store.policies, capabilities=self._store.capabilities
        )
        policies, capabilities = self._api_view(stored)
        for name in sorted(set(stored.policies) - set(policies)):
            logger.warning("stored policy %r is shadowed by the policy file that defines it", name)
        for name in sorted(set(stored.capabilities) - set(capabilities)):
            logger.warning("stored capability %r is shadowed by the policy file that defines it", name)
        # Compiling a large set takes a while: in a thread, the event loop keeps deciding meanwhile.
        compiled = await asyncio.to_thread(self._files.compile, policies, capabilities)
        version: int | None
        if loading:
            version = await self._record_loaded(compiled, policies, capabilities)
        else:
            version = await self._version_of_reloaded(compiled, policies, capabilities)
        self._api_policies, self._api_capabilities = policies, capabilities
        self._swap(dataclasses.replace(compiled, version=version))
        self._revision = stored.revision
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
    ) -> int | None:
        """The version another replica recorded for this set. A new one ("replica_loaded") only when this
        replica's policy files differ from those of the latest version (the writer's): the same files and an
        unknown set mean the set was read while it changed, which the consistent read rules out; then the
        decisions carry no version rather than one for a set that never existed."""
        number = await self._store.policy_versions.number_of(compiled.digest)
        if number is not None:
            return number
        latest = await self._store.policy_versions.latest()
        if latest is not None:
            then = FileItems.of_version(latest)
            if then.policies == self._files.policies and then.capabilities == self._files.capabilities:
                logger.error(
                    "the policy set loaded after another replica's change matches no recorded version although the "
                    "policy files are those of version %d; decisions carry no version until the next change",
                    latest.version,
                )
                return None
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

        def edit(policies: Mapping[str, Policy], capabilities: Mapping[str, Capability]) -> _Edit:
            created = capability.name not in capabilities
            payload = {"name": capability.name, "sha256": canonical_hash(capability.model_dump(mode="json"))}
            return _Edit(
                policies=dict(policies),
                capabilities={**capabilities, capability.name: capability},
                replacement=ApiDocumentsReplacement(put_capabilities=[capability]),
                audit=(("capability_saved", payload),),
                cause="capability_saved",
                summary=f"capability {capability.name!r} {'registered' if created else 'replaced'}",
                created=created,
            )

        async with self._lock:
            await self._refresh_locked()
            done = await self._commit(edit, by=by)
            return capability, done.created

    async def create_policy(self, policy: Policy, *, by: str | None = None) -> Policy:
        if policy.name in self._files.policies:
            raise self._file_conflict("policy", policy.name)

        def edit(policies: Mapping[str, Policy], capabilities: Mapping[str, Capability]) -> _Edit:
            if policy.name in policies:
                raise Conflict(
                    f"A policy named {policy.name!r} exists. Replace it with PUT /api/v1/policies/{policy.name}, "
                    "or choose another name.",
                    {"name": policy.name, "source": API_SOURCE},
                    code="policy_conflict",
                )
            return _policy_saved(policy, policies, capabilities)

        async with self._lock:
            await self._refresh_locked()
            await self._commit(edit, by=by)
            return policy

    async def put_policy(self, policy: Policy, *, by: str | None = None) -> tuple[Policy, bool]:
        if policy.name in self._files.policies:
            raise self._file_conflict("policy", policy.name)

        def edit(policies: Mapping[str, Policy], capabilities: Mapping[str, Capability]) -> _Edit:
            return _policy_saved(policy, policies, capabilities)

        async with self._lock:
            await self._refresh_locked()
            done = await self._commit(edit, by=by)
            return policy, done.created

    async def delete_policy(self, name: str, *, by: str | None = None) -> None:
        if name in self._files.policies:
            raise self._file_conflict("policy", name)

        def edit(policies: Mapping[str, Policy], capabilities: Mapping[str, Capability]) -> _Edit:
            if name not in policies:  # never stored, or another replica deleted it
                raise NotFound("policy", name)
            return _Edit(
                policies={k: v for k, v in policies.items() if k != name},
                capabilities=dict(capabilities),
                replacement=ApiDocumentsReplacement(delete_policies=[name]),
                audit=(("policy_deleted", {"name": name}),),
                cause="policy_deleted",
                summary=f"policy {name!r} deleted",
                created=False,
            )

        async with self._lock:
            await self._refresh_locked()
            await self._commit(edit, by=by)

    def _compiled(self, edit: _Edit) -> PolicySet:
        try:
            return self._files.compile(edit.policies, edit.capabilities)
        except PolicySetError as exc:
            raise invalid_policy(exc) from None

    async def _commit(
        self, edit: Callable[[Mapping[str, Policy], Mapping[str, Capability]], _Edit], *, by: str | None
    ) -> _Edit:
        """Apply `edit` to the API items and store it (called under the lock). The edit is planned and
        compiled from this replica's cache first (422 invalid_policy, nothing written, if it does not
        compile); the store's write then re-plans it on what is stored, read under the policy-write lock,
        when that differs (another replica wrote since our last refresh), so the version records the set
        that is really stored. The set compiled for the write and the revision the write left are adopted:
        a later change by another replica still moves the revision and is picked up."""
        first = edit(self._api_policies, self._api_capabilities)
        first_compiled = await asyncio.to_thread(self._compiled, first)  # the event loop keeps deciding meanwhile
        adopted: list[tuple[_Edit, PolicySet]] = []

        def plan(stored: StoredApiItems) -> PolicyChange:
            policies, capabilities = self._api_view(stored)
            if policies == self._api_policies and capabilities == self._api_capabilities:
                planned, compiled = first, first_compiled
            else:
                planned = edit(policies, capabilities)
                compiled = self._compiled(planned)
            adopted.append((planned, compiled))
            version = self._files.new_version(
                compiled,
                planned.policies,
                planned.capabilities,
                cause=planned.cause,
                summary=planned.summary,
                created_by=by,
            )
            return PolicyChange(replacement=planned.replacement, version=version, audit=planned.audit)

        written = await self._store.policy_versions.write_change(
            policies=self._store.policies, capabilities=self._store.capabilities, plan=plan
        )
        assert written is not None  # `plan` always returns a change
        planned, compiled = adopted[-1]
        self._api_policies, self._api_capabilities = dict(planned.policies), dict(planned.capabilities)
        self._swap(dataclasses.replace(compiled, version=written.version))
        self._revision = written.revision
        self._last_check = self._monotonic()
        return planned

    async def rollback(self, version: int, *, by: str | None) -> PolicyRollback:
        """Roll the API-defined items back to `version` (see `policies.rollback`); `by`: who (a key id)."""
        async with self._lock:
            await self._refresh_locked()
            active = self.active
            result = await roll_back(self._store, version, files=self._files, current_version=active.version, by=by)
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
