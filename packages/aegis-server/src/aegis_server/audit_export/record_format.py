"""The export's line format: one audit record per line, as `GET /api/v1/audit/log` shows it (the SDK's
`AuditRecord`, which carries `sequence`, `hash` and `previous_hash`), as compact JSON with sorted keys,
UTF-8, ending in a newline. A receiver checks completeness (sequences contiguous) and order (each
`previous_hash` is the prior line's `hash`)."""

from __future__ import annotations

import json

from aegis_sdk.models import AuditRecord

__all__ = ["CONTENT_TYPE", "ExportLine", "export_line", "line_sequence"]

CONTENT_TYPE = "application/x-ndjson"


class ExportLine:
    """One record's line and its sequence."""

    __slots__ = ("data", "sequence")

    def __init__(self, sequence: int, data: bytes) -> None:
        self.sequence = sequence
        self.data = data


def export_line(record: AuditRecord) -> ExportLine:
    text = json.dumps(record.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return ExportLine(record.sequence, text.encode("utf-8") + b"\n")


def line_sequence(line: bytes) -> int:
    """The `sequence` of a complete exported line (ValueError when it is not one)."""
    value = json.loads(line)
    if not isinstance(value, dict) or not isinstance(value.get("sequence"), int):
        raise ValueError("not an exported audit record")
    return int(value["sequence"])
