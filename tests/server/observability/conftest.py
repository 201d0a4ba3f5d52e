"""The server in-process with the API tests' policies (one capability per outcome), for the tracing tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
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


def _reset_global_tracer_provider() -> None:
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()


@pytest.fixture
def clean_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* variable from the machine, and no global TracerProvider left behind by the test."""
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    _reset_global_tracer_provider()
    try:
        yield
    finally:
        _reset_global_tracer_provider()
