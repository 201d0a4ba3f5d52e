"""Fixtures every suite shares: OpenTelemetry tracing switched on for one test.

OpenTelemetry lets a process set its global TracerProvider once. `otel_spans` sets one for the test, with an
in-memory exporter (every finished span, synchronously), and takes it away again afterwards, so the next test
runs as an application that configured no tracing does: the API's no-op provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def _reset_global_tracer_provider() -> None:
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()


@pytest.fixture
def otel_spans() -> Iterator[InMemorySpanExporter]:
    """The global TracerProvider for this test: every span ends up in the exporter this yields."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_global_tracer_provider()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _reset_global_tracer_provider()


@pytest.fixture(autouse=True)
def _forget_unflushed_reports() -> Iterator[None]:
    """A test that leaves execution reports queued (a TestClient without its lifespan, a doc snippet that never
    closes its client) does not hand them on to the interpreter's exit, where the SDK would try, for 10 s, a
    platform the test stopped long ago. The exit flush itself is tested in subprocesses."""
    yield
    from aegis_sdk import _reporter

    with _reporter._exit_lock:
        _reporter._busy_reporters.clear()
