"""`CoalescingTransport`: what is written in one turn of the event loop leaves in one call, in order, and
nothing waits longer than that turn (a head whose body never comes, a close)."""

from __future__ import annotations

import asyncio
from typing import Any

from aegis_server.edge.http_server import CoalescingTransport


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default


def _wrap() -> tuple[CoalescingTransport, _Recorder]:
    recorder = _Recorder()
    return CoalescingTransport(recorder, asyncio.get_running_loop()), recorder  # type: ignore[arg-type]


async def test_a_head_and_its_body_written_in_one_turn_leave_in_one_call() -> None:
    transport, recorder = _wrap()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b'{"outcome":"ALLOW"}')
    assert recorder.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"outcome":"ALLOW"}']
    await asyncio.sleep(0)
    assert recorder.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"outcome":"ALLOW"}']


async def test_a_lone_write_leaves_at_the_end_of_the_turn() -> None:
    transport, recorder = _wrap()
    transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert recorder.writes == []
    await asyncio.sleep(0)
    assert recorder.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert recorder.writes == [b"HTTP/1.1 204 No Content\r\n\r\n", b"next"]


async def test_large_writes_are_not_copied_and_keep_their_order() -> None:
    transport, recorder = _wrap()
    big = b"x" * (64 * 1024)
    transport.write(b"head")
    transport.write(big)
    transport.write(big)
    assert recorder.writes == [b"head", big, big]
    await asyncio.sleep(0)
    assert recorder.writes == [b"head", big, big]


async def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    transport, recorder = _wrap()
    transport.write(b"last answer")
    transport.close()
    assert recorder.writes == [b"last answer"] and recorder.closed
    await asyncio.sleep(0)
    assert recorder.writes == [b"last answer"]

    transport, recorder = _wrap()
    transport.write(b"dropped")
    transport.abort()
    await asyncio.sleep(0)
    assert recorder.writes == [] and recorder.aborted


async def test_nothing_is_written_to_a_transport_closed_meanwhile() -> None:
    transport, recorder = _wrap()
    transport.write(b"held")
    recorder.closed = True  # the peer went away before the end of the turn
    await asyncio.sleep(0)
    assert recorder.writes == []


async def test_everything_else_is_the_transport_s_own() -> None:
    transport, _ = _wrap()
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert transport.is_closing() is False
