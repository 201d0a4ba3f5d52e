"""`aegis-server serve`'s OpenTelemetry SDK, configured from the standard OTEL_* variables when they ask for it.

Tracing is asked for when OTEL_SDK_DISABLED is not `true` and OTEL_TRACES_EXPORTER is set, or an OTLP
endpoint is (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT; the exporter is then `otlp`).
OTEL_TRACES_EXPORTER is a comma list: `otlp` (OTLP over HTTP/protobuf, the server's `otel` extra), `console`,
`none`, or the name of any installed `opentelemetry_traces_exporter` entry point, as the SDK's own
auto-configuration loads them. Each exporter gets a BatchSpanProcessor. The resource is `Resource.create()`
(OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES; service.name defaults to "aegis-server"); the sampler is the
SDK's reading of OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG. Everything else of the exporters (headers,
timeouts, certificates) they read from the environment themselves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from aegis_server import __version__

__all__ = ["OtelSetupError", "TracingSetup", "configure_tracing"]

_INSTALL_HINT = "install the server's OpenTelemetry extra: pip install 'aegisgov-server[otel]'"
_ENTRY_POINTS = "opentelemetry_traces_exporter"


class OtelSetupError(Exception):
    """The OTEL_* variables ask for something this installation cannot do; the message says how to fix it."""


@dataclass
class TracingSetup:
    """The TracerProvider `serve` set as the global one, and where its spans go (for the log)."""

    provider: Any
    destinations: list[str]

    def describe(self) -> str:
        return "traces are exported to: " + ", ".join(self.destinations)

    def shutdown(self) -> None:
        """Export what is buffered and stop the exporters (at the server's shutdown)."""
        self.provider.shutdown()


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _otlp_endpoint(environ: Mapping[str, str]) -> str | None:
    traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return f"{base.rstrip('/')}/v1/traces" if base else None


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    listed = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not listed:
        return ["otlp"] if _otlp_endpoint(environ) else []
    names = [name.strip().lower() for name in listed.split(",") if name.strip()]
    return [name for name in dict.fromkeys(names) if name != "none"]


def _shown(url: str) -> str:
    """An endpoint as the log may show it: no user info, query or fragment (they can carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _otlp(environ: Mapping[str, str]) -> tuple[Any, str]:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip()
    if protocol not in ("", "http/protobuf"):
        raise OtelSetupError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported by `aegis-server serve`: it exports OTLP "
            "over HTTP (http/protobuf). Unset it, or point the endpoint at your collector's OTLP/HTTP port (4318)."
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise OtelSetupError(f"OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: {_INSTALL_HINT}") from None
    endpoint = _otlp_endpoint(environ)
    exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    return exporter, f"otlp ({_shown(endpoint or 'http://localhost:4318/v1/traces')})"


def _from_entry_point(name: str) -> Any:
    from opentelemetry.util._importlib_metadata import entry_points

    found = list(entry_points(group=_ENTRY_POINTS, name=name))
    if not found:
        raise OtelSetupError(
            f"unknown trace exporter {name!r} in OTEL_TRACES_EXPORTER: use otlp, console or none, or install a "
            f"package that provides the {_ENTRY_POINTS!r} entry point {name!r}."
        )
    return found[0].load()()


def configure_tracing(
    environ: Mapping[str, str] | None = None, *, console_out: TextIO | None = None
) -> TracingSetup | None:
    """Set the global TracerProvider as the OTEL_* variables ask (None when they do not ask for tracing).
    Raises OtelSetupError for an unknown exporter, an unsupported protocol or a missing `otel` extra."""
    env = os.environ if environ is None else environ
    if _true(env.get("OTEL_SDK_DISABLED")):
        return None
    names = _exporter_names(env)
    if not names:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise OtelSetupError(
            f"OTEL_TRACES_EXPORTER asks for traces, but the OpenTelemetry SDK is missing: {_INSTALL_HINT}"
        ) from None
    exporters: list[Any] = []
    destinations: list[str] = []
    for name in names:
        if name == "otlp":
            exporter, destination = _otlp(env)
        elif name == "console":
            exporter, destination = ConsoleSpanExporter(out=console_out or sys.stdout), "console"
        else:
            exporter, destination = _from_entry_point(name), name
        exporters.append(exporter)
        destinations.append(destination)
    configured = env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    defaults = {"service.name": "aegis-server", "service.version": __version__}
    if env.get("OTEL_SERVICE_NAME", "").strip() or "service.name=" in configured:
        del defaults["service.name"]
    if "service.version=" in configured:
        del defaults["service.version"]
    provider = TracerProvider(resource=Resource.create(defaults))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return TracingSetup(provider, destinations)
