"""The audit as a stream: exporters that copy every committed audit record, in chain order, to a JSON-lines
file that rotates or to an HTTP receiver (`exporter`, `file_sink`, `http_sink`), in the line format of
`record_format`; `exporters_from_settings` builds the ones the settings ask for."""

from __future__ import annotations

from aegis_server.audit_export.exporter import AuditExporter
from aegis_server.audit_export.file_sink import JsonlFileSink
from aegis_server.audit_export.http_sink import HttpSink
from aegis_server.audit_export.record_format import CONTENT_TYPE, ExportLine, export_line, line_sequence
from aegis_server.audit_export.sink import Sink, SinkUnavailable
from aegis_server.metrics import Metrics
from aegis_server.settings import Settings
from aegis_server.store import Store

__all__ = [
    "CONTENT_TYPE",
    "AuditExporter",
    "ExportLine",
    "HttpSink",
    "JsonlFileSink",
    "Sink",
    "SinkUnavailable",
    "export_line",
    "exporters_from_settings",
    "line_sequence",
]


def exporters_from_settings(store: Store, settings: Settings, metrics: Metrics | None = None) -> list[AuditExporter]:
    """One exporter per configured sink (none when neither AEGIS_AUDIT_EXPORT_FILE nor _URL is set)."""
    sinks: list[Sink] = []
    if settings.audit_export_file is not None:
        sinks.append(
            JsonlFileSink(
                settings.audit_export_file,
                max_bytes=settings.audit_export_file_max_bytes,
                backups=settings.audit_export_file_backups,
            )
        )
    if settings.audit_export_url is not None:
        sinks.append(
            HttpSink(
                settings.audit_export_url,
                authorization=settings.audit_export_authorization,
                timeout=settings.audit_export_timeout_seconds,
            )
        )
    return [AuditExporter(store, sink, settings, metrics=metrics) for sink in sinks]
