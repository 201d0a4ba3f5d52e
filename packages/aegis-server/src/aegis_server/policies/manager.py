"""The policy set the engine decides with: what the policy files define (read-only through the API) plus
what the API stored, compiled into one set and swapped atomically, only when it compiles. Changes made
by other replicas are picked up by a cheap version check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from aegis_sdk.models import Capability, Policy, PolicyProblem, PolicyValidation
from aegis_server.engine import PolicySet, PolicySetError, compile_policy_set
from aegis_server.governance.errors import Conflict, InvalidInput, NotFound, Unavailable
from aegis_server.metrics import Metrics
from aegis_server.policies.files import load_policy_paths
from aegis_server.store import Store

__all__ = ["PolicyManager"]

logger = logging.getLogger("aegis_server.policies")

_API_SOURCE = "api"


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
        self._file_policies: dict[str, Policy] = {}
        self._file_capabilities: dict[str, Capability] = {}
        self._file_sources: dict[str, str] = {}
        self._api_policies: dict[str, Policy] = {}
        self._api_capabilities: dict[str, Capability] = {}
        self._active: PolicySet | None = None
        self._version: str | None = None
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

    def source_of(self, name: str, *, capability: bool = False) -> str | None:
        """The policy file that defines the policy (or capability) `name`; None when the API stored it."""
        return self._file_sources.get(f"capability:{name}" if capability else name)

    async def load(self) -> None:
        """Read the files and the stored items and compile them; raises PolicySetError if they do not."""
        documents = load_policy_paths(self._paths)
        self._file_policies = {p.name: p for p in documents.policies}
        self._file_capabilities = {c.name: c for c in documents.capabilities}
        self._file_sources = dict(documents.sources)
        async with self._lock:
            await self._reload_from_store()

    async def _reload_from_store(self) -> None:
        version = await self._store.policy_revision()
        policies = {p.name: p for p in await self._store.list_policies()}
        capabilities = {c.name: c for c in await self._store.list_capabilities()}
        for name in set(policies) & set(self._file_policies):
            logger.warning("stored policy %r is shadowed by the policy file that defines it", name)
            del policies[name]
        for name in set(capabilities) & set(self._file_capabilities):
            logger.warning("stored capability %r is shadowed by the policy file that defines it", name)
            del capabilities[name]
        compiled = self._compile(policies, capabilities)
        self._api_policies, self._api_capabilities = policies, capabilities
        self._swap(compiled)
        self._version = version
        self._last_check = self._monotonic()

    def _swap(self, compiled: PolicySet) -> None:
        self._active = compiled
        self._metrics.policy_rules.set(compiled.rule_count)

    def _compile(self, api_policies: Mapping[str, Policy], api_capabilities: Mapping[str, Capability]) -> PolicySet:
        policies = [*self._file_policies.values(), *api_policies.values()]
        capabilities = [*self._file_capabilities.values(), *api_capabilities.values()]
        sources = dict(self._file_sources)
        for name in api_policies:
            sources.setdefault(name, _API_SOURCE)
        for name in api_capabilities:
            sources.setdefault(f"capability:{name}", _API_SOURCE)
        return compile_policy_set(policies, capabilities, sources=sources)

    async def maybe_refresh(self) -> None:
        """Pick up changes made by other replicas: a cheap version check at most once per interval."""
        if self._monotonic() - self._last_check < self._refresh_interval:
            return
        self._last_check = self._monotonic()
        version = await self._store.policy_revision()
        if version == self._version:
            return
        async with self._lock:
            try:
                await self._reload_from_store()
            except PolicySetError as exc:
                # Another replica stored a set we cannot compile (e.g. different engine version): keep ours.
                logger.error("the stored policy set does not compile here; keeping the active set: %s", exc)
                self._version = version

    # -- reads ------------------------------------------------------------------------------------

    async def list_policies(self) -> list[Policy]:
        await self.maybe_refresh()
        return _by_name(self._file_policies, self._api_policies)

    async def get_policy(self, name: str) -> Policy:
        await self.maybe_refresh()
        return _named("policy", name, self._file_policies, self._api_policies)

    async def list_capabilities(self) -> list[Capability]:
        await self.maybe_refresh()
        return _by_name(self._file_capabilities, self._api_capabilities)

    async def get_capability(self, name: str) -> Capability:
        await self.maybe_refresh()
        return _named("capability", name, self._file_capabilities, self._api_capabilities)

    # -- writes -----------------------------------------------------------------------------------

    def _file_conflict(self, kind: str, name: str) -> Conflict:
        key = f"capability:{name}" if kind == "capability" else name
        source = self._file_sources.get(key, "a policy file")
        return Conflict(
            f"The {kind} {name!r} is defined in {source}; what a policy file defines cannot be changed through the "
            f"API. Edit the file and restart the server, or use another name.",
            {"name": name, "source": source},
            code="policy_conflict",
        )

    @staticmethod
    def _invalid(exc: PolicySetError) -> InvalidInput:
        problems = [p.model_dump() for p in exc.problems]
        first = exc.problems[0].message if exc.problems else "the set does not compile"
        return InvalidInput(
            f"The policy set would not compile ({len(problems)} problem(s); first: {first}). Nothing was "
            "changed; fix the problems listed in details.errors.",
            {"errors": problems},
            code="invalid_policy",
        )

    async def _refresh_locked(self) -> None:
        version = await self._store.policy_revision()
        if version != self._version:
            await self._reload_from_store()

    async def put_capability(self, capability: Capability) -> tuple[Capability, bool]:
        if capability.name in self._file_capabilities:
            raise self._file_conflict("capability", capability.name)
        async with self._lock:
            await self._refresh_locked()
            created = capability.name not in self._api_capabilities
            candidate = {**self._api_capabilities, capability.name: capability}
            await self._commit(self._api_policies, candidate, lambda: self._store.put_capability(capability))
            return capability, created

    async def create_policy(self, policy: Policy) -> Policy:
        if policy.name in self._file_policies:
            raise self._file_conflict("policy", policy.name)
        async with self._lock:
            await self._refresh_locked()
            if policy.name in self._api_policies:
                raise Conflict(
                    f"A policy named {policy.name!r} exists. Replace it with PUT /api/v1/policies/{policy.name}, "
                    "or choose another name.",
                    {"name": policy.name, "source": _API_SOURCE},
                    code="policy_conflict",
                )
            await self._apply_policy(policy)
            return policy

    async def put_policy(self, policy: Policy) -> tuple[Policy, bool]:
        if policy.name in self._file_policies:
            raise self._file_conflict("policy", policy.name)
        async with self._lock:
            await self._refresh_locked()
            created = policy.name not in self._api_policies
            await self._apply_policy(policy)
            return policy, created

    async def _apply_policy(self, policy: Policy) -> None:
        candidate = {**self._api_policies, policy.name: policy}
        await self._commit(candidate, self._api_capabilities, lambda: self._store.put_policy(policy))

    async def _commit(
        self,
        policies: Mapping[str, Policy],
        capabilities: Mapping[str, Capability],
        write: Callable[[], Awaitable[object]],
    ) -> None:
        """Compile the candidate API items with the files' (422 invalid_policy, nothing written, if they do
        not compile), then run the store `write` and swap the compiled set in. Called under the lock."""
        try:
            compiled = self._compile(policies, capabilities)
        except PolicySetError as exc:
            raise self._invalid(exc) from None
        await write()
        self._api_policies, self._api_capabilities = dict(policies), dict(capabilities)
        self._swap(compiled)
        self._version = await self._store.policy_revision()

    async def delete_policy(self, name: str) -> None:
        if name in self._file_policies:
            raise self._file_conflict("policy", name)
        async with self._lock:
            await self._refresh_locked()
            if name not in self._api_policies:
                raise NotFound("policy", name)
            candidate = {k: v for k, v in self._api_policies.items() if k != name}
            await self._commit(candidate, self._api_capabilities, lambda: self._store.delete_policy(name))

    async def validate(self, policy: Policy) -> PolicyValidation:
        if policy.name in self._file_policies:
            problem = PolicyProblem(
                message="a policy of this name is defined in a file and cannot be replaced through the API",
                policy=policy.name,
                source=self._file_sources.get(policy.name),
            )
            return PolicyValidation(valid=False, errors=[problem])
        await self.maybe_refresh()
        try:
            self._compile({**self._api_policies, policy.name: policy}, self._api_capabilities)
        except PolicySetError as exc:
            return PolicyValidation(valid=False, errors=list(exc.problems))
        return PolicyValidation(valid=True)
