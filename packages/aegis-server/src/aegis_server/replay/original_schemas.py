"""The parameter schemas of the policy-set versions stored proposals were decided under, loaded as a replay meets
them: a redacted proposal is judged against the schema its hashed values once passed (see `redecide`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aegis_server.store.proposal_history import StoredProposal

__all__ = ["OriginalSchemas"]


class OriginalSchemas(dict[int, dict[str, Any]]):
    """version -> capability name -> parameter schema; a version no longer stored maps to no capability."""

    def __init__(self, versions: Any) -> None:
        """`versions`: the store's `PolicyVersions` room."""
        super().__init__()
        self._versions = versions

    async def load_for(self, batch: Iterable[StoredProposal]) -> None:
        """Load the versions of the redacted proposals of `batch` not loaded yet."""
        wanted = {item.policy_version for item in batch if item.redacted and item.policy_version is not None}
        for version in sorted(wanted - self.keys()):
            recorded = await self._versions.get(version)
            capabilities = () if recorded is None else recorded.capabilities
            self[version] = {capability.name: capability.parameter_schema for capability in capabilities}
