"""A candidate policy set: what the policy files define (`FileItems`) plus the API-defined items, compiled
the way the server compiles its active set, and described as a version to record (`NewPolicyVersion`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aegis_sdk.models import Capability, Policy
from aegis_server.engine import PolicySet, PolicySetError, compile_policy_set
from aegis_server.governance.errors import InvalidInput
from aegis_server.policies.files import PolicyDocuments
from aegis_server.store.policy_versions import NewPolicyVersion, PolicyVersion

__all__ = ["API_SOURCE", "FileItems", "invalid_policy"]

API_SOURCE = "api"


def _capability_key(name: str) -> str:
    return f"capability:{name}"


@dataclass(frozen=True)
class FileItems:
    """What the policy files define, by name; `sources` maps a policy name, and `capability:<name>`, to
    its file. A file's item wins over an API-defined one of the same name."""

    policies: Mapping[str, Policy] = field(default_factory=dict)
    capabilities: Mapping[str, Capability] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_documents(cls, documents: PolicyDocuments) -> FileItems:
        return cls(
            policies={p.name: p for p in documents.policies},
            capabilities={c.name: c for c in documents.capabilities},
            sources=dict(documents.sources),
        )

    @classmethod
    def of_version(cls, version: PolicyVersion) -> FileItems:
        """The file-defined items of a recorded version (what the servers' files were then)."""
        policies = {p.name: p for p in version.policies if version.source_of(p.name) != API_SOURCE}
        capabilities = {
            c.name: c for c in version.capabilities if version.source_of(c.name, capability=True) != API_SOURCE
        }
        sources = {
            key: value
            for key, value in version.sources.items()
            if value != API_SOURCE and (key in policies or key.removeprefix("capability:") in capabilities)
        }
        return cls(policies=policies, capabilities=capabilities, sources=sources)

    def source_of(self, name: str, *, capability: bool = False) -> str | None:
        """The file that defines the policy (or capability) `name`; None when no file does."""
        return self.sources.get(_capability_key(name) if capability else name)

    def sources_with(
        self, api_policies: Mapping[str, Policy], api_capabilities: Mapping[str, Capability]
    ) -> dict[str, str]:
        sources = dict(self.sources)
        for name in api_policies:
            sources.setdefault(name, API_SOURCE)
        for name in api_capabilities:
            sources.setdefault(_capability_key(name), API_SOURCE)
        return sources

    def compile(self, api_policies: Mapping[str, Policy], api_capabilities: Mapping[str, Capability]) -> PolicySet:
        """The files' items plus the API-defined ones, compiled; raises `PolicySetError`."""
        policies = [*self.policies.values(), *(p for name, p in api_policies.items() if name not in self.policies)]
        capabilities = [
            *self.capabilities.values(),
            *(c for name, c in api_capabilities.items() if name not in self.capabilities),
        ]
        return compile_policy_set(policies, capabilities, sources=self.sources_with(api_policies, api_capabilities))

    def new_version(
        self,
        compiled: PolicySet,
        api_policies: Mapping[str, Policy],
        api_capabilities: Mapping[str, Capability],
        *,
        cause: str,
        summary: str,
        created_by: str | None = None,
        rollback_of: int | None = None,
    ) -> NewPolicyVersion:
        """The version to record for `compiled` (made by `compile` from these API items)."""
        sources = self.sources_with(api_policies, api_capabilities)
        names = {p.name for p in compiled.policies} | {_capability_key(name) for name in compiled.capabilities}
        return NewPolicyVersion(
            digest=compiled.digest,
            policies=tuple(compiled.policies),
            capabilities=tuple(compiled.capabilities.values()),
            sources={key: value for key, value in sorted(sources.items()) if key in names},
            cause=cause,
            summary=summary,
            created_by=created_by,
            rollback_of=rollback_of,
        )


def invalid_policy(exc: PolicySetError, what: str = "The policy set would not compile") -> InvalidInput:
    """422 invalid_policy listing the compile problems; `what` starts the message."""
    problems = [p.model_dump() for p in exc.problems]
    first = exc.problems[0].message if exc.problems else "the set does not compile"
    return InvalidInput(
        f"{what} ({len(problems)} problem(s); first: {first}). Nothing was changed; fix the problems listed in "
        "details.errors.",
        {"errors": problems},
        code="invalid_policy",
    )
