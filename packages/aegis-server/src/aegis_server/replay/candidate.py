"""The candidate policy set of a replay: a folder of policy files, a recorded version, the latest recorded
version, or policies and capabilities given as documents (the API's body). Each is compiled exactly as the
server compiles its active set; a set that does not compile raises `PolicySetError` listing every problem."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from aegis_sdk.models import Capability, Policy
from aegis_server.engine import PolicySet, compile_policy_set
from aegis_server.policies.files import PolicyDocuments, load_policy_paths, load_policy_set
from aegis_server.replay.report import CandidateDescription

__all__ = [
    "Candidate",
    "CandidateError",
    "candidate_from_documents",
    "candidate_from_files",
    "candidate_from_version",
    "latest_candidate",
]


class CandidateError(ValueError):
    """The candidate cannot be had (no such version, no version recorded yet); the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    policy_set: PolicySet
    description: CandidateDescription


async def candidate_from_files(store: Any, path: Path) -> Candidate:
    """The files under `path` plus the API-stored policies and capabilities they do not define: the set the
    server would run if its policy files were these (files win over stored items of the same name, as in
    the server)."""
    documents = load_policy_paths([path])
    file_policies = {policy.name for policy in documents.policies}
    file_capabilities = {capability.name for capability in documents.capabilities}
    stored = PolicyDocuments(
        policies=[policy for policy in await store.list_policies() if policy.name not in file_policies],
        capabilities=[
            capability for capability in await store.list_capabilities() if capability.name not in file_capabilities
        ],
    )
    policy_set = load_policy_set([path], extra=stored)
    return Candidate(policy_set, CandidateDescription(kind="files", path=str(path), digest=policy_set.digest))


async def candidate_from_version(store: Any, version: int) -> Candidate:
    """A recorded policy-set version (`aegis-server policy history` lists them)."""
    recorded = await store.policy_versions.get(version)
    if recorded is None:
        latest = await store.policy_versions.latest()
        known = f"the versions are 1..{latest.version}" if latest is not None else "no version is recorded yet"
        raise CandidateError(f"there is no policy-set version {version} ({known}); list them with `policy history`")
    return _compiled_version(recorded, "version")


async def latest_candidate(store: Any) -> Candidate:
    """The latest recorded version: the active set of the servers on this database."""
    recorded = await store.policy_versions.latest()
    if recorded is None:
        raise CandidateError(
            "no policy-set version is recorded in this database yet (a server records one when it starts); "
            "pass --candidate DIR or --version N"
        )
    return _compiled_version(recorded, "active")


def _compiled_version(recorded: Any, kind: Literal["version", "active"]) -> Candidate:
    policy_set = compile_policy_set(recorded.policies, recorded.capabilities, sources=recorded.sources)
    policy_set = dataclasses.replace(policy_set, version=recorded.version)
    return Candidate(
        policy_set,
        CandidateDescription(kind=kind, version=recorded.version, digest=policy_set.digest),
    )


def candidate_from_documents(policies: Sequence[Policy], capabilities: Sequence[Capability]) -> Candidate:
    """Policies and capabilities given whole (nothing of the active set is added)."""
    policy_set = compile_policy_set(policies, capabilities)
    return Candidate(policy_set, CandidateDescription(kind="policies", digest=policy_set.digest))
