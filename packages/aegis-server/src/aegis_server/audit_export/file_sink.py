"""The JSON-lines file sink: appends each batch, then flush + fsync before the cursor moves; rotates like
logging's RotatingFileHandler (`audit.jsonl` -> `audit.jsonl.1` .. `.N`, only between lines, the directory
fsynced after the renames). Exactly-once across crashes: `open()` drops a torn last line (truncates it) and
answers the last complete line's sequence, which the exporter resumes after."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator, Sequence
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
    """Appends exported lines to `path`, rotating at `max_bytes` and keeping `backups` old files.

    Each batch is written under an exclusive lock of `path` + `.lock` (a file never rotated), and fenced by
    the file itself: under the lock the sink re-reads the sequence of the last complete line on disk and
    appends only the lines after it. A replica that stalled past its lease and resumes with a stale batch, or
    two replicas sharing the path, therefore never write a line twice or out of order. Before each batch the
    sink also checks that `path` still names the file it holds open (an operator deleted or moved it, another
    replica rotated it) and reopens it if not, like logging's `WatchedFileHandler`."""

    label = "file"

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path.resolve()  # a symlinked path: the file it names, so rotation renames that file
        self.max_bytes = max_bytes
        self.backups = max(1, backups)
        self.sink_id = "file-" + hashlib.sha256(str(self.path).encode()).hexdigest()[:16]
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._handle: BinaryIO | None = None
        self._size = 0

    async def open(self) -> int | None:
        return await asyncio.to_thread(self._open)

    async def deliver(self, lines: Sequence[ExportLine]) -> None:
        try:
            await asyncio.to_thread(self._write, lines)
        except OSError as exc:
            with contextlib.suppress(OSError):  # closing flushes, and a full disk refuses that too
                self._close()  # reopened (and its tail checked) before the retry
            raise SinkUnavailable(f"cannot write the export file ({type(exc).__name__}: {exc.strerror})") from None

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _open(self) -> int | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._reopen()
            return self._last_sequence()

    def _reopen(self) -> None:
        self._close()
        self._handle = self.path.open("ab")
        self._size = self._handle.tell()

    def _last_sequence(self) -> int | None:
        """The sequence of the last complete line on disk (a torn line after it is cut off)."""
        last = _recover_tail(self.path)
        if last is None:  # just rotated (or a crash between the renames and the new file)
            last = _recover_tail(self._backup(1))
        if self._handle is not None:
            self._size = self._handle.seek(0, os.SEEK_END)
        return last

    def _names_handle(self) -> bool:
        """True when `path` is still the file held open (not deleted, moved or rotated away)."""
        if self._handle is None:
            return False
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(self._handle.fileno())
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def _write(self, lines: Sequence[ExportLine]) -> None:
        with self._locked():
            if not self._names_handle():
                self._reopen()
            last = self._last_sequence()
            for line in lines:
                if last is not None and line.sequence <= last:
                    continue  # on disk already (a stale batch, or another replica was first)
                if self._size > 0 and self._size + len(line.data) > self.max_bytes:
                    self._rotate()
                assert self._handle is not None
                self._handle.write(line.data)
                self._size += len(line.data)
            assert self._handle is not None
            self._handle.flush()
            os.fsync(self._handle.fileno())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock_path.open("ab") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the lock file is closed
            yield

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
