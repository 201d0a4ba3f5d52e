"""The JSON-lines file sink on its own: rotation at a line boundary, and a torn last line dropped."""

from __future__ import annotations

from pathlib import Path

from aegis_server.audit_export import ExportLine, JsonlFileSink

from .support import read_lines


def _line(sequence: int, filler: str = "x" * 40) -> ExportLine:
    return ExportLine(sequence, f'{{"filler":"{filler}","sequence":{sequence}}}\n'.encode())


async def test_rotates_between_lines_and_keeps_the_configured_backups(tmp_path: Path) -> None:
    path = tmp_path / "out" / "audit.jsonl"
    size = len(_line(1).data)
    sink = JsonlFileSink(path, max_bytes=3 * size + 10, backups=2)
    assert await sink.open() is None
    await sink.deliver([_line(n) for n in range(1, 8)])
    await sink.deliver([_line(n) for n in range(8, 12)])
    await sink.close()
    # 11 lines, 3 per file: .2 holds 4-6 (1-3 were dropped with the third rotation), .1 7-9, current 10-11
    files = ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.lock"]  # the lock is never rotated
    assert sorted(p.name for p in path.parent.iterdir()) == files
    assert [r["sequence"] for r in read_lines(path, backups=2)] == list(range(4, 12))
    assert all(p.stat().st_size <= 3 * size + 10 for p in path.parent.iterdir())


async def test_open_drops_a_torn_last_line_and_answers_the_last_complete_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(_line(1).data + _line(2).data + _line(3).data[:17])
    sink = JsonlFileSink(path, max_bytes=10_000, backups=1)
    assert await sink.open() == 2
    assert path.read_bytes() == _line(1).data + _line(2).data
    await sink.deliver([_line(3)])
    await sink.close()
    assert [r["sequence"] for r in read_lines(path)] == [1, 2, 3]


async def test_open_after_a_rotation_reads_the_last_line_of_the_first_backup(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.with_name("audit.jsonl.1").write_bytes(_line(7).data + _line(8, "y" * 70_000).data)
    sink = JsonlFileSink(path, max_bytes=10_000, backups=1)
    assert await sink.open() == 8  # a last line longer than one read of the tail
    await sink.close()
    path.write_bytes(b'{"sequence":9,')  # torn: nothing complete in the current file
    assert await sink.open() == 8
    await sink.close()
    assert path.read_bytes() == b""


async def test_a_stale_batch_is_fenced_by_the_file_itself(tmp_path: Path) -> None:
    """A replica that stalled past its lease resumes with a batch another replica already wrote (and more
    after it): nothing is written twice or out of order, whichever sink object writes."""
    path = tmp_path / "audit.jsonl"
    stalled = JsonlFileSink(path, max_bytes=10**6, backups=1)
    holder = JsonlFileSink(path, max_bytes=10**6, backups=1)
    assert await stalled.open() is None and await holder.open() is None
    await stalled.deliver([_line(n) for n in range(1, 4)])
    await holder.deliver([_line(n) for n in range(4, 9)])  # the new lease holder went on
    await stalled.deliver([_line(n) for n in range(4, 7)])  # the stale batch, late
    await stalled.deliver([_line(n) for n in range(7, 11)])  # overlapping, then new
    await stalled.close()
    await holder.close()
    assert [r["sequence"] for r in read_lines(path)] == list(range(1, 11))


async def test_a_deleted_file_is_recreated_not_written_into_the_void(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlFileSink(path, max_bytes=10**6, backups=1)
    await sink.open()
    await sink.deliver([_line(n) for n in range(1, 4)])
    path.unlink()  # an operator's cleanup
    await sink.deliver([_line(n) for n in range(4, 6)])
    path.rename(tmp_path / "moved.jsonl")  # or a rename
    await sink.deliver([_line(6)])
    await sink.close()
    assert [r["sequence"] for r in read_lines(tmp_path / "moved.jsonl")] == [4, 5]
    assert [r["sequence"] for r in read_lines(path)] == [6]


async def test_a_symlinked_path_rotates_the_file_it_names(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    link = tmp_path / "audit.jsonl"
    link.symlink_to(volume / "audit.jsonl")
    size = len(_line(1).data)
    sink = JsonlFileSink(link, max_bytes=2 * size + 10, backups=3)
    await sink.open()
    await sink.deliver([_line(n) for n in range(1, 6)])
    await sink.close()
    assert sorted(p.name for p in volume.iterdir() if not p.name.endswith(".lock")) == [
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.2",
    ]
    assert [r["sequence"] for r in read_lines(volume / "audit.jsonl", backups=2)] == [1, 2, 3, 4, 5]
