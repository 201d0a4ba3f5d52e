"""The server in-process with the API tests' policies (one capability per outcome), for the tracing tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aegis_server.inprocess import InProcessServer

POLICIES = Path(__file__).parents[1] / "api" / "policies.yaml"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[InProcessServer]:
    async with InProcessServer(
        [POLICIES],
        db_url=f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}",
        run_background_tasks=False,
        secret="test-secret-of-at-least-16-bytes",
    ) as running:
        yield running
