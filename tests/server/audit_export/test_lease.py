"""Two exporters of one sink on one database (two replicas): only the lease holder exports; when it stops
(releasing the lease) the other takes over where the cursor is, so the file holds every record once."""

from __future__ import annotations

from pathlib import Path

from aegis_server.audit.signing_keys import audit_key_source
from aegis_server.audit_export import AuditExporter, JsonlFileSink
from aegis_server.metrics import Metrics
from aegis_server.settings import Settings
from aegis_server.store import Store

from .support import assert_chain, read_lines


async def _append(store: Store, count: int) -> None:
    for index in range(count):
        await store.append_audit("export_test", payload={"n": index})


async def test_one_exporter_holds_the_lease_and_the_other_takes_over(store_url: str, tmp_path: Path) -> None:
    settings = Settings(db_url=store_url, audit_key="k" * 32, audit_export_batch=4, audit_export_lease_seconds=30)
    first = await Store.open(store_url, migrate=True, audit_key=audit_key_source(settings))
    second = await Store.open(store_url, migrate=False, audit_key=audit_key_source(settings))
    path = tmp_path / "audit.jsonl"

    def exporter(store: Store, metrics: Metrics) -> AuditExporter:
        return AuditExporter(store, JsonlFileSink(path, max_bytes=10**6, backups=1), settings, metrics=metrics)

    metrics_a, metrics_b = Metrics(), Metrics()
    a, b = exporter(first, metrics_a), exporter(second, metrics_b)
    try:
        await _append(first, 10)
        assert await a.run_once() == 10
        assert await b.run_once() == 0
        assert a.holds_lease and not b.holds_lease
        await _append(second, 5)
        assert await b.run_once() == 0  # still A's
        assert metrics_b.audit_export_lag.labels(sink="file")._value.get() == 5  # head - the shared cursor
        await a.stop()  # exports nothing more itself here (not started), releases the lease
        assert await b.run_once() == 5
        assert b.holds_lease
        assert metrics_b.audit_export_lag.labels(sink="file")._value.get() == 0
        assert metrics_b.audit_export_records.labels(sink="file")._value.get() == 5
    finally:
        await b.stop()
        await first.close()
        await second.close()
    records = read_lines(path)
    assert_chain(records)
    assert len(records) == 15
