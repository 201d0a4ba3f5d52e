"""What the policy-history pages show of a recorded version: who made it (the key's name beside its id),
its policies and capabilities with their sources, and a unified diff split into classed lines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aegis_server.console.policies_page import item_digest, policy_view
from aegis_server.policies.candidate import API_SOURCE
from aegis_server.store import Store
from aegis_server.store.policy_versions import PolicyVersion

__all__ = ["MAX_VERSION", "DiffLine", "author_names", "diff_lines", "parse_version", "version_content"]

MAX_VERSION = 2**31 - 1
"""As the API's version numbers: larger is no version."""


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff; `kind` becomes its CSS class."""

    kind: Literal["added", "removed", "hunk", "header", "context"]
    text: str


def parse_version(text: str | None) -> int | None:
    """`text` as a version number (1 .. 2^31-1), else None."""
    if text is None:
        return None
    value = text.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 10:  # isdigit alone takes '²'
        return None
    number = int(value)
    return number if 1 <= number <= MAX_VERSION else None


async def author_names(store: Store, versions: list[PolicyVersion]) -> dict[str, str]:
    """The name of each API key that made one of `versions` (a deleted key keeps only its id)."""
    names: dict[str, str] = {}
    for key_id in {version.created_by for version in versions if version.created_by not in (None, "cli")}:
        assert key_id is not None
        key = await store.get_api_key(key_id)
        if key is not None:
            names[key_id] = key.name
    return names


def _source(source: str) -> str:
    return "API" if source == API_SOURCE else source


def version_content(version: PolicyVersion) -> dict[str, list[dict[str, Any]]]:
    """The version's policies (with their rules) and capabilities, each with its source and digest."""
    policies = [
        policy_view(policy, None if (source := version.source_of(policy.name)) == API_SOURCE else source)
        for policy in version.policies
    ]
    capabilities = [
        {
            "name": capability.name,
            "risk_level": capability.risk_level,
            "source": _source(version.source_of(capability.name, capability=True)),
            "digest": item_digest(capability),
        }
        for capability in version.capabilities
    ]
    return {"policies": policies, "capabilities": capabilities}


def diff_lines(text: str) -> list[DiffLine]:
    """The unified diff `text` line by line, each marked as added, removed, a hunk or file header, or context."""
    lines = []
    for line in text.splitlines():
        if line.startswith(("+++", "---")):
            kind: Literal["added", "removed", "hunk", "header", "context"] = "header"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "added"
        elif line.startswith("-"):
            kind = "removed"
        else:
            kind = "context"
        lines.append(DiffLine(kind, line))
    return lines
