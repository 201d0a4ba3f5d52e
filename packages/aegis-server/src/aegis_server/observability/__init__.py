"""OpenTelemetry in the server: its spans (`tracing`, `server_spans`), `serve`'s configuration of the SDK from
the standard OTEL_* variables (`otel_setup`), and the separate /metrics listener (`metrics_listener`)."""

__all__: list[str] = []
