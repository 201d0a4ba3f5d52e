"""`aegis-server serve` freezes what startup made out of the garbage collector's reach (a full
collection then scans only what requests made); the app does not do it unless asked."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from aegis_server.app import create_app
from aegis_server.settings import Settings


@pytest.mark.parametrize("freeze", [True, False])
async def test_startup_objects_are_frozen_only_when_asked(tmp_path: Path, freeze: bool) -> None:
    settings = Settings(db_url=f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}", policy_paths=())
    app = create_app(settings, run_background_tasks=False, freeze_gc_after_startup=freeze)
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()  # the rest of the test run collects as usual
    assert (frozen > 10_000) is freeze
