"""`bench/profile_server.py` charges py-spy's samples of the event loop's thread to the rooms of a request."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def profiler() -> ModuleType:
    """`bench.profile_server` (the repository's root is not on the tests' import path)."""
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module("bench.profile_server")
    finally:
        sys.path.remove(str(ROOT))


_ENTRY = "<module> (aegis-server:10);main (aegis_server/cli/__init__.py:54);Runner.run (asyncio/runners.py:118)"


def test_the_innermost_frame_names_the_room(profiler: ModuleType) -> None:
    room_of = profiler.room_of
    assert room_of("BulkInsert.execute (aegis_server/store/bulk.py:88)").startswith("store")
    assert room_of("_evaluate (aegis_server/engine/evaluate.py:119)") == "policy engine"
    assert room_of("Logger.info (logging/__init__.py:1477)") == "access log"
    assert room_of("something (elsewhere/module.py:1)") == "other"


def test_shares_count_only_the_event_loops_thread(profiler: ModuleType) -> None:
    raw = "\n".join(
        [
            f"{_ENTRY};propose (aegis_server/api/governance.py:69);execute (aegis_server/store/bulk.py:88) 30",
            f"{_ENTRY};propose (aegis_server/api/governance.py:69);evaluate (aegis_server/engine/evaluate.py:80) 10",
            "Thread._bootstrap (threading.py:1002);checkpoint_wal (aegis_server/store/engine.py:231) 50",
            "a line py-spy would not write",
        ]
    )
    summary = profiler.summarise(raw)
    assert summary["loop_thread_samples"] == 40
    assert summary["other_thread_samples"] == 50
    assert sum(summary["rooms_percent"].values()) == pytest.approx(100.0)
    assert next(iter(summary["rooms_percent"])).startswith("store")
    assert summary["rooms_percent"]["policy engine"] == 25.0
    assert summary["top_functions_percent"]["execute (aegis_server/store/bulk.py)"] == 75.0
