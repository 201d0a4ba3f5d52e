"""A stop that comes while the exporter is in the middle of a pass: what was committed during that pass is
exported too before the exporter ends (the last requests' records are not left for the next start)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from aegis_server.audit.signing_keys import audit_key_source
from aegis_server.audit_export import AuditExporter, ExportLine, line_sequence
from aegis_server.settings import Settings
from aegis_server.store import Store


class HeldSink:
    """Takes every batch, but holds the first one until `release` is set."""

    sink_id = "held-test-sink"
    label = "file"

    def __init__(self) -> None:
        self.sequences: list[int] = []
        self.delivering = asyncio.Event()
        self.release = asyncio.Event()

    async def open(self) -> int | None:
        return None

    async def deliver(self, lines: Sequence[ExportLine]) -> None:
        self.delivering.set()
        await self.release.wait()
        self.sequences.extend(line_sequence(line.data.rstrip(b"\n")) for line in lines)

    async def close(self) -> None:
        return None


async def test_a_stop_during_a_pass_exports_what_was_committed_meanwhile(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
    settings = Settings(db_url=url, audit_key="k" * 32, audit_export_poll_interval_seconds=60)
    store = await Store.open(url, migrate=True, audit_key=audit_key_source(settings))
    sink = HeldSink()
    exporter = AuditExporter(store, sink, settings)
    try:
        await store.append_audit("export_test", payload={"n": 0})
        exporter.start()
        await asyncio.wait_for(sink.delivering.wait(), 10)  # the first pass holds record 1
        for index in range(1, 6):
            await store.append_audit("export_test", payload={"n": index})  # committed during that pass
        stopping = asyncio.create_task(exporter.stop())
        await asyncio.sleep(0.05)
        sink.release.set()
        await asyncio.wait_for(stopping, 10)
        head, _ = await store.chain_head()
    finally:
        await store.close()
    assert sink.sequences == list(range(1, head + 1))
