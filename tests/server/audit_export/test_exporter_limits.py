"""The exporter against a sink's limits: a batch refused as too large (HTTP 413) is split until it fits, and
the lag gauge tells the truth during a long catch-up, not only at its end."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from aegis_server.audit.signing_keys import audit_key_source
from aegis_server.audit_export import AuditExporter, ExportLine, HttpSink, SinkUnavailable
from aegis_server.metrics import Metrics
from aegis_server.settings import Settings
from aegis_server.store import Store


class SizedSink:
    """Takes batches of at most `most` records, refuses bigger ones as too large; records the lag gauge."""

    sink_id = "sized-test-sink"
    label = "http"

    def __init__(self, most: int, metrics: Metrics) -> None:
        self.most = most
        self.metrics = metrics
        self.batches: list[list[int]] = []
        self.lag_seen: list[float] = []
        self.refused = 0

    async def open(self) -> int | None:
        return None

    async def deliver(self, lines: Sequence[ExportLine]) -> None:
        if len(lines) > self.most:
            self.refused += 1
            raise SinkUnavailable("the receiver answered HTTP 413", too_large=True)
        self.lag_seen.append(self.metrics.audit_export_lag.labels(sink="http")._value.get())
        self.batches.append([line.sequence for line in lines])

    async def close(self) -> None:
        return None


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    url = f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
    opened = await Store.open(url, migrate=True, audit_key=audit_key_source(Settings(db_url=url, audit_key="k" * 32)))
    for index in range(40):
        await opened.append_audit("export_test", payload={"n": index})
    yield opened
    await opened.close()


async def test_a_batch_too_large_is_split_until_the_sink_takes_it(store: Store, tmp_path: Path) -> None:
    settings = Settings(db_url="sqlite+aiosqlite://", audit_key="k" * 32, audit_export_batch=16)
    metrics = Metrics()
    sink = SizedSink(3, metrics)
    exporter = AuditExporter(store, sink, settings, metrics=metrics)
    exporter.start()
    await exporter.stop()  # exports what is committed first
    assert [s for batch in sink.batches for s in batch] == list(range(1, 41))
    assert all(len(batch) <= 3 for batch in sink.batches)
    assert 0 < sink.refused <= 4  # 16 -> 8 -> 4 -> 2 at the start, regrown after each success
    assert metrics.audit_export_lag.labels(sink="http")._value.get() == 0


async def test_the_lag_gauge_is_current_during_a_catch_up(store: Store) -> None:
    settings = Settings(db_url="sqlite+aiosqlite://", audit_key="k" * 32, audit_export_batch=10)
    metrics = Metrics()
    sink = SizedSink(10, metrics)
    exporter = AuditExporter(store, sink, settings, metrics=metrics)
    assert await exporter.run_once() == 40
    assert sink.lag_seen[1:] == [30.0, 20.0, 10.0]  # read while each next batch was being sent
    assert metrics.audit_export_lag.labels(sink="http")._value.get() == 0
    await exporter.stop()


async def test_the_http_sink_names_a_413_too_large() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413)

    sink = HttpSink("http://receiver.test/ingest", authorization=None, timeout=5, transport=httpx.MockTransport(answer))
    with pytest.raises(SinkUnavailable) as refused:
        await sink.deliver([ExportLine(1, b'{"sequence":1}\n')])
    await sink.close()
    assert refused.value.too_large


@pytest.mark.parametrize("url", ["http://[::1/ingest", "http:///ingest", "https://siem.example:99999/ingest"])
def test_an_unusable_export_url_is_refused_at_start(url: str) -> None:
    with pytest.raises(ValueError, match="AEGIS_AUDIT_EXPORT_URL") as refused:
        Settings.from_env({"AEGIS_AUDIT_EXPORT_URL": url})
    assert "e.g. https://siem.example/ingest" in str(refused.value)
