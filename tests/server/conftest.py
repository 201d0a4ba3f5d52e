"""Store URLs for every server test: a SQLite file per test, and a fresh PostgreSQL database per test.

- `sqlite_url`: `sqlite+aiosqlite:///<tmp_path>/aegis.db`.
- `postgres_url`: creates database `aegis_test_<random>` on the server of `AEGIS_TEST_POSTGRES_URL`
  (default `postgresql://postgres@127.0.0.1:5432/test`, used only to run CREATE/DROP DATABASE), yields
  its asyncpg URL and drops it afterwards. When the server cannot be reached the test is skipped, unless
  `AEGIS_TEST_POSTGRES=required` (CI), where it fails instead.
- `store_url`: parametrised over both backends (test ids `[sqlite]` and `[postgres]`).

Tests that use `postgres_url` (directly or through `store_url`) get the `postgres` marker, so
`-m "not postgres"` runs the SQLite half alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import shutil
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import make_url

_T = TypeVar("_T")
_DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
_unreachable: list[str] = []  # the reason, once a connection attempt failed in this session


def _admin_url() -> str:
    return os.environ.get("AEGIS_TEST_POSTGRES_URL", _DEFAULT_ADMIN_URL)


def _run_in_thread(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    # Admin work runs on its own event loop in a worker thread, so the fixture works for sync and async
    # tests alike and never touches the test's loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _dsn() -> str:
    url = make_url(_admin_url())
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_dsn(), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _skip_or_fail(reason: str) -> None:
    message = f"PostgreSQL at {make_url(_admin_url()).render_as_string(hide_password=True)} unreachable: {reason}"
    if os.environ.get("AEGIS_TEST_POSTGRES") == "required":
        pytest.fail(message + " (AEGIS_TEST_POSTGRES=required)")
    pytest.skip(message)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if _unreachable:
        _skip_or_fail(_unreachable[0])
    name = f"aegis_test_{secrets.token_hex(6)}"
    try:
        _run_in_thread(lambda: _admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        _unreachable.append(f"{type(exc).__name__}: {exc}")
        _skip_or_fail(_unreachable[0])
    url = make_url(_admin_url()).set(drivername="postgresql+asyncpg", database=name)
    rendered = url.render_as_string(hide_password=False)
    try:
        yield rendered
    finally:
        _run_in_thread(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        _remove_audit_dir(rendered)


def _remove_audit_dir(url: str) -> None:
    """The audit key file and checkpoints a store made for this test database (`~/.aegis/audit/...`)."""
    from aegis_server.store import default_audit_dir

    directory = default_audit_dir(url)
    if directory is not None and directory.name.endswith(str(make_url(url).database)):
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("store_url") == "postgres"
        if on_postgres or "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
