"""Fixtures for the console's HTTP tests: the app in-process (async) on a SQLite file with a hand-driven
clock, and a reviewer signed in (helpers live in console_support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_support import POLICIES, Clock, browser, sign_in

from aegis_server.inprocess import InProcessServer


@pytest.fixture
def clock() -> Clock:
    return Clock()


ServerFactory = Callable[..., InProcessServer]


@pytest.fixture
def make_server(tmp_path: Path, clock: Clock) -> ServerFactory:
    def factory(**overrides: Any) -> InProcessServer:
        overrides.setdefault("policy_paths", [POLICIES])
        overrides.setdefault("db_url", f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}")
        overrides.setdefault("clock", clock)
        overrides.setdefault("run_background_tasks", False)
        overrides.setdefault("secret", "test-secret-of-at-least-16-bytes")
        overrides.setdefault("long_poll_recheck_seconds", 0.2)
        return InProcessServer(**overrides)

    return factory


@pytest.fixture
async def server(make_server: ServerFactory) -> AsyncIterator[InProcessServer]:
    async with make_server() as running:
        yield running


@pytest.fixture
async def reviewer_key(server: InProcessServer) -> str:
    return await server.acreate_key("rita-reviewer", ["governance:review"])


@pytest.fixture
async def reviewer(server: InProcessServer, reviewer_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(server) as client:
        await sign_in(client, reviewer_key)
        yield client
