"""The SDK's tests run from its wheel alone (Python 3.10, no server installed): they must not import the server."""

from __future__ import annotations

import re
from pathlib import Path

SERVER_PACKAGE = "aegis" + "_server"


def test_sdk_tests_import_nothing_from_the_server() -> None:
    here = Path(__file__).parent
    pattern = re.compile(rf"^\s*(from|import)\s+{SERVER_PACKAGE}\b", re.MULTILINE)
    offenders = [path.name for path in sorted(here.glob("*.py")) if pattern.search(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_public_names_are_exported() -> None:
    import aegis_sdk

    for name in aegis_sdk.__all__:
        assert hasattr(aegis_sdk, name), name
    for name in ("AegisClient", "AsyncAegisClient", "AegisError", "GovernanceError", "Decision", "__version__"):
        assert name in aegis_sdk.__all__
