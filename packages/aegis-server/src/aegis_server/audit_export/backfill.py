"""`aegis-server audit export`'s work: the records of a window, in chain order, written page by page (constant
memory) in the live export's line format."""

from __future__ import annotations

from datetime import datetime
from typing import BinaryIO

from aegis_server.audit_export.record_format import export_line
from aegis_server.store import Store
from aegis_server.store.export_cursors import ExportCursors

__all__ = ["BACKFILL_PAGE", "write_backfill"]

BACKFILL_PAGE = 1000


async def write_backfill(
    store: Store,
    output: BinaryIO,
    *,
    after_sequence: int = 0,
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = BACKFILL_PAGE,
) -> tuple[int, int | None, int | None]:
    """Write the records after `after_sequence` written in [since, until) (as one contiguous range of sequences:
    `ExportCursors.window`) to `output`; returns (count, first sequence, last sequence)."""
    cursors = ExportCursors(store.database)
    through: int | None = None
    if since is not None or until is not None:
        window = await cursors.window(since, until)
        if window is None:
            return 0, None, None
        after_sequence, through = max(after_sequence, window[0] - 1), window[1]
    count, first, last = 0, None, after_sequence
    while True:
        records = await cursors.records_after(last, page, through=through)
        for record in records:
            output.write(export_line(record).data)
        if records:
            first = records[0].sequence if first is None else first
            last = records[-1].sequence
            count += len(records)
        if len(records) < page:
            output.flush()
            return count, first, (last if count else None)
