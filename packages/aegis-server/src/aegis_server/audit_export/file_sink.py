"""The JSON-lines file sink: appends each batch, then flush + fsync before the cursor moves; rotates like
logging's RotatingFileHandler (`audit.jsonl` -> `audit.jsonl.1` .. `.N`, only between lines, the directory
fsynced after the renames). Exactly-once across crashes: `open()` drops a torn last line (truncates it) and
answers the last complete line's sequence, which the exporter resumes after."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from aegis_server.audit_export.record_format import ExportLine, line_sequence
from aegis_server.audit_export.sink import SinkUnavailable

__all__ = ["JsonlFileSink"]

_TAIL_CHUNK = 64 * 1024


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover_tail(path: Path) -> int | None:
    """Truncate a torn last line of `path` and return the sequence of its last complete line (None: the
    file is missing or holds no complete line)."""
    if not path.exists():
        return None
    with path.open("r+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        position, tail = end, b""
        while position > 0 and tail.count(b"\n") < 2:  # the last complete line and what follows it
            step = min(_TAIL_CHUNK, position)
            position -= step
            handle.seek(position)
            tail = handle.read(step) + tail
        cut = tail.rfind(b"\n") + 1  # 0: no complete line in the tail
        if position + cut < end:
            handle.truncate(position + cut)
            handle.flush()
            os.fsync(handle.fileno())
        if cut == 0:
            return None
        last = tail[: cut - 1].rsplit(b"\n", 1)[-1]
    return line_sequence(last)


class JsonlFileSink:
    """Appends exported lines to `path`, rotating at `max_bytes` and keeping `backups` old files."""

    label = "file"

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path.absolute()
        self.max_bytes = max_bytes
        self.backups = max(1, backups)
        self.sink_id = "file-" + hashlib.sha256(str(self.path).encode()).hexdigest()[:16]
        self._handle: BinaryIO | None = None
        self._size = 0

    async def open(self) -> int | None:
        return await asyncio.to_thread(self._open)

    async def deliver(self, lines: Sequence[ExportLine]) -> None:
        try:
            await asyncio.to_thread(self._write, lines)
        except OSError as exc:
            self._close()  # reopened (and its tail checked) before the retry
            raise SinkUnavailable(f"cannot write the export file ({type(exc).__name__}: {exc.strerror})") from None

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _open(self) -> int | None:
        self._close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        last = _recover_tail(self.path)
        if last is None:  # just rotated (or a crash between the renames and the new file)
            last = _recover_tail(self._backup(1))
        self._handle = self.path.open("ab")
        self._size = self._handle.tell()
        return last

    def _write(self, lines: Sequence[ExportLine]) -> None:
        if self._handle is None:
            self._open()
        for line in lines:
            if self._size > 0 and self._size + len(line.data) > self.max_bytes:
                self._rotate()
            assert self._handle is not None
            self._handle.write(line.data)
            self._size += len(line.data)
        assert self._handle is not None
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _rotate(self) -> None:
        assert self._handle is not None
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._close()
        for index in range(self.backups - 1, 0, -1):
            if self._backup(index).exists():
                os.replace(self._backup(index), self._backup(index + 1))
        os.replace(self.path, self._backup(1))
        self._handle = self.path.open("ab")
        self._size = 0
        _fsync_directory(self.path.parent)

    def _close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()
