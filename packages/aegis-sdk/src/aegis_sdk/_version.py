"""The installed version of aegis-sdk, read from the package metadata (`make bump` changes it)."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("aegis-sdk")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
