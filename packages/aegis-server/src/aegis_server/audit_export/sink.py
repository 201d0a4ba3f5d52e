"""What a sink is to the exporter: an id (names its cursor and lease), a metrics label, `open()` (the last
sequence the sink itself is known to hold, or None), `deliver(lines)` (returns once the sink durably took
them; raises `SinkUnavailable` otherwise) and `close()`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from aegis_server.audit_export.record_format import ExportLine

__all__ = ["Sink", "SinkUnavailable"]


class SinkUnavailable(Exception):
    """The sink did not take the batch; retry later (after `retry_after` seconds at least, when given).
    The message names no URL path, credential or record content."""

    def __init__(self, message: str, retry_after: float | None = None, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.too_large = too_large  # the batch was refused for its size (HTTP 413): send fewer records at once


class Sink(Protocol):
    @property
    def sink_id(self) -> str: ...

    @property
    def label(self) -> str: ...

    async def open(self) -> int | None: ...

    async def deliver(self, lines: Sequence[ExportLine]) -> None: ...

    async def close(self) -> None: ...
