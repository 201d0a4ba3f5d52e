"""URLs, engines and migrations: the schema comes from the migrations shipped in the package."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from aegis_server.store import SchemaNotReady, Store, current_revision, head_revision, normalise_url, upgrade_database
from aegis_server.store.engine import create_engine
from aegis_server.store.schema import metadata

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///data/a.db", "sqlite+aiosqlite:///data/a.db"),
        ("sqlite+aiosqlite:///data/a.db", "sqlite+aiosqlite:///data/a.db"),
        ("sqlite+pysqlite:////abs/a.db", "sqlite+aiosqlite:////abs/a.db"),
        ("postgresql://u:pw@h:5432/db", "postgresql+asyncpg://u:pw@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_urls_are_normalised_to_async_drivers(given: str, expected: str) -> None:
    assert normalise_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize("bad", ["mysql://u@h/db", "not a url", "oracle+cx_oracle://x"])
def test_unsupported_urls_are_refused_with_a_hint(bad: str) -> None:
    with pytest.raises(ValueError, match="sqlite"):
        normalise_url(bad)


async def test_sqlite_file_parent_folder_is_created_with_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "aegis.db"
    store = await Store.open(f"sqlite:///{path}")
    try:
        assert path.is_file()
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 30000
        assert await store.ping()
    finally:
        await store.close()


async def test_in_memory_sqlite_works(tmp_path: Path) -> None:
    store = await Store.open("sqlite+aiosqlite://")
    try:
        await store.append_audit("test", payload={})
        assert (await store.verify_chain()).records_checked == 1
    finally:
        await store.close()


async def test_migrated_schema_matches_the_table_definitions(store_url: str) -> None:
    revision = await upgrade_database(store_url)
    assert revision == head_revision()
    assert await upgrade_database(store_url) == revision  # idempotent
    engine = create_engine(store_url)
    try:
        assert await current_revision(engine) == revision

        def _diff(connection: sa.Connection) -> list[object]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_open_without_migrate_requires_the_schema(store_url: str) -> None:
    with pytest.raises(SchemaNotReady, match="aegis-server db upgrade"):
        await Store.open(store_url, migrate=False)
    await upgrade_database(store_url)
    store = await Store.open(store_url, migrate=False)
    await store.close()


async def test_two_stores_migrating_at_once_both_start(store_url: str) -> None:
    stores = await asyncio.gather(*(Store.open(store_url) for _ in range(4)))
    for store in stores:
        assert await store.ping()
        await store.close()


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else ["python3", "-m", "uv"]


@pytest.mark.slow
def test_migrations_run_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build the wheels, install them into a fresh virtualenv and migrate a database from there, with
    the repository nowhere on the path: the migrations are found inside the installed package."""
    dist = tmp_path / "dist"
    for package in ("aegis-sdk", "aegis-server"):
        subprocess.run(
            [*_uv(), "build", "--wheel", "--out-dir", str(dist), f"packages/{package}"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
    (wheel,) = dist.glob("aegisgov_server-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "aegis_server/store/migrations/env.py",
        "aegis_server/store/migrations/script.py.mako",
        "aegis_server/store/migrations/versions/r0001_initial_schema.py",
    ):
        assert required in names

    venv = tmp_path / "venv"
    subprocess.run([*_uv(), "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [*_uv(), "pip", "install", "--python", str(python), *map(str, dist.glob("*.whl"))],
        check=True,
        capture_output=True,
    )
    database = tmp_path / "db" / "aegis.db"
    script = (
        "import asyncio, sys, aegis_server.store as s; "
        "assert 'site-packages' in s.__file__, s.__file__; "
        f"print(asyncio.run(s.upgrade_database({f'sqlite:///{database}'!r})))"
    )
    done = subprocess.run([str(python), "-c", script], cwd=tmp_path, check=True, capture_output=True, text=True)
    assert done.stdout.strip() == head_revision()
    assert database.is_file()
