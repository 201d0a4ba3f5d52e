"""A recorded version as policy files an operator can load as they are (`aegis-server policy show`).

`version_yaml`: the whole set as one policy document (`capabilities:`, `policies:`), where each item came
from written as YAML comments (a policy file has no place for them). `files_yaml`: only what the policy
files defined, one YAML document per source file, headed by its path: what to restore when rolling back
file-defined items (the API-defined ones roll back through `policy rollback`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from aegis_sdk.models import Capability, Policy
from aegis_server.store.policy_versions import PolicyVersion

__all__ = ["files_yaml", "version_yaml"]

_API = "api"


def _document(capabilities: Sequence[Capability], policies: Sequence[Policy]) -> str:
    content: dict[str, Any] = {}
    if capabilities:
        content["capabilities"] = [c.model_dump(mode="json") for c in capabilities]
    if policies:
        content["policies"] = [p.model_dump(mode="json") for p in policies]
    return yaml.safe_dump(content, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _comment(text: str) -> str:
    return "# " + " ".join(text.splitlines())


def version_yaml(version: PolicyVersion) -> str:
    """The version's whole set as one loadable policy document; the sources as comments."""
    lines = [
        _comment(f"policy-set version {version.version}: every policy and capability (digest {version.digest})."),
        "# Where each came from ('api': stored through the API; loading this file makes it file-defined):",
    ]
    lines.extend(_comment(f"  {key}: {value}") for key, value in sorted(version.sources.items()))
    return "\n".join(lines) + "\n" + _document(version.capabilities, version.policies)


def files_yaml(version: PolicyVersion) -> str:
    """What the policy files defined in the version, one YAML document per file (`---` between them),
    each headed by the file's path; "" when no file defined anything."""
    files = sorted(
        {version.source_of(c.name, capability=True) for c in version.capabilities}
        | {version.source_of(p.name) for p in version.policies}
    )
    documents = []
    for source in (name for name in files if name != _API):
        capabilities = [c for c in version.capabilities if version.source_of(c.name, capability=True) == source]
        policies = [p for p in version.policies if version.source_of(p.name) == source]
        header = _comment(f"file: {source} (policy-set version {version.version})")
        documents.append(header + "\n" + _document(capabilities, policies))
    return "---\n".join(documents)
