"""The AEGIS governance platform."""

from aegis_sdk._version import installed_version

__version__ = installed_version("aegisgov-server")

__all__ = ["__version__"]
