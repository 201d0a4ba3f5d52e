"""The server's log output: the same lines as the standard formatter, written together but never lost."""

from __future__ import annotations

import io
import logging
import time

from aegis_server.cli.log_output import BufferedStreamHandler, CachedTimeFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _record(created: float, message: str = "POST /x -> 200 in 1.0 ms", level: int = logging.INFO) -> logging.LogRecord:
    record = logging.LogRecord("aegis", level, __file__, 1, message, None, None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


def test_cached_time_is_the_standard_formatters_text_across_seconds() -> None:
    cached, standard = CachedTimeFormatter(FORMAT), logging.Formatter(FORMAT)
    start = 1_764_600_000.0
    for step in range(0, 5000, 7):  # 0 to 5 s in uneven steps, crossing second boundaries both ways
        record = _record(start + step / 1000)
        assert cached.format(record) == standard.format(record)
    late, early = _record(start + 9.5), _record(start + 3.25)  # a record from an earlier second after a later
    assert [cached.format(late), cached.format(early)] == [standard.format(late), standard.format(early)]


def test_an_explicit_date_format_is_honoured() -> None:
    record = _record(1_764_600_000.5)
    assert CachedTimeFormatter(FORMAT, datefmt="%H:%M").format(record) == logging.Formatter(
        FORMAT, datefmt="%H:%M"
    ).format(record)


def _handler(stream: io.StringIO, **options: float) -> BufferedStreamHandler:
    handler = BufferedStreamHandler(stream, **options)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    return handler


def test_info_lines_wait_and_are_written_together_within_the_interval() -> None:
    stream = io.StringIO()
    handler = _handler(stream, flush_interval=0.05)
    try:
        for n in range(3):
            handler.handle(_record(time.time(), f"line {n}"))
        assert stream.getvalue() == ""
        deadline = time.monotonic() + 5
        while not stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.getvalue() == "INFO line 0\nINFO line 1\nINFO line 2\n"
    finally:
        handler.close()


def test_a_warning_is_written_at_once_after_the_lines_before_it() -> None:
    stream = io.StringIO()
    handler = _handler(stream, flush_interval=60)
    try:
        handler.handle(_record(time.time(), "request"))
        handler.handle(_record(time.time(), "the disk is full", logging.WARNING))
        assert stream.getvalue() == "INFO request\nWARNING the disk is full\n"
    finally:
        handler.close()


def test_a_full_buffer_is_written_and_close_writes_the_rest() -> None:
    stream = io.StringIO()
    handler = _handler(stream, flush_interval=60, capacity=40)
    handler.handle(_record(time.time(), "a" * 30))
    assert stream.getvalue() == ""
    handler.handle(_record(time.time(), "b" * 30))  # 72 characters wait: over capacity
    assert stream.getvalue() == f"INFO {'a' * 30}\nINFO {'b' * 30}\n"
    handler.handle(_record(time.time(), "last"))
    handler.close()
    assert stream.getvalue().endswith("INFO last\n")


def test_logging_shutdown_writes_what_waits() -> None:
    stream = io.StringIO()
    handler = _handler(stream, flush_interval=60)
    logger = logging.getLogger("aegis-test-log-output")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("waiting")
        assert stream.getvalue() == ""
        logging.shutdown([lambda: handler])  # what the interpreter runs at exit, for this handler
        assert stream.getvalue() == "INFO waiting\n"
    finally:
        logger.removeHandler(handler)
