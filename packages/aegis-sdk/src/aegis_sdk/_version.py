"""The installed version of each AEGIS distribution, read from its metadata: a package's pyproject.toml is
the one place its version is written (`make bump` rewrites them all). The SDK reads its own here; the server
and the adapters, which pin this SDK exactly, call `installed_version` for theirs."""

from __future__ import annotations

from importlib import metadata

__all__ = ["__version__", "installed_version"]


def installed_version(distribution: str) -> str:
    """The version `distribution` was installed with; "0.0.0+unknown" from a source tree never installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
        return "0.0.0+unknown"


__version__ = installed_version("aegisgov-sdk")
