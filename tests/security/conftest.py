"""`store_url` for the security suite: a SQLite file per test and a fresh PostgreSQL database per test
(the same parametrisation as tests/server/conftest.py: ids `[sqlite]` and `[postgres]`; PostgreSQL tests
skip when the server is unreachable unless `AEGIS_TEST_POSTGRES=required`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability._support import postgres_database, sqlite_url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    with postgres_database() as url:
        yield url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("store_url") == "postgres":
            item.add_marker(pytest.mark.postgres)
