"""The HTTP server of `aegis-server serve`: uvicorn (uvloop + httptools) with the network edge hardened.

What stock uvicorn 0.54 leaves open, and what this module adds:

- **Idle and partial-header connections.** uvicorn arms its keep-alive timer only after a response: a
  connection that never sends a byte, or sends its request head a byte at a time (slowloris), is kept
  forever. `AegisHttpToolsProtocol` arms a *head timer* when a connection opens and when the first byte
  of each next request arrives; the request line and headers must be complete within
  `header_timeout_seconds`, or the connection is closed. Idle keep-alive connections are closed after
  `keep_alive_timeout_seconds` (uvicorn's own timer). The timer is one `loop.call_later` per request
  head: measured in `bench/`, no cost per decision beyond noise.
- **Slow or stalled bodies.** A complete head announcing a body (`Content-Length: 100000`) followed by a
  byte a second, or by nothing, held a connection (and a request task blocked in `receive()`) forever.
  A *body timer* runs from the moment the head is complete until the whole body has arrived: after
  `body_timeout_seconds` the request is answered 408 in the JSON error envelope (when the app has not
  started answering) and the connection is closed; the app's `receive()` returns `http.disconnect`. It
  is armed only when the body did not arrive with its head, so a small request costs nothing.
- **Head size.** httptools buffers a header line of any length: one 200 MB header was accepted, three
  1 GB ones took the process to 3.2 GB. The bytes received before a head is complete are counted; over
  `max_header_bytes` the request is answered 431 (the envelope) and the connection is closed.
- **Protocol-level 400s** (a malformed request line, header or chunk encoding, rejected by the parser
  before any ASGI app runs) are answered with the JSON error envelope, not uvicorn's `text/plain`.
- **One write per answer.** uvicorn writes a response's head when the app starts it and the body when
  the app sends it: two `send()` system calls and two TCP segments for every small JSON answer.
  `CoalescingTransport` holds a write until the next one or the end of the event loop's turn, so a head
  and the body sent in the same turn leave in one call; nothing waits longer than that turn.
- **File descriptors.** Thousands of open sockets need more than the common soft limit of 1,024 open
  files: `raise_open_files_limit()` raises the soft limit to the hard limit at start.
- **Shutdown.** uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process died by the
  signal (exit -15) before the buffered log lines were written. `AegisServer` shuts down gracefully and
  returns instead; `aegis-server serve` then logs its last line, flushes the log and exits 0. Requests
  still waiting for their body when the shutdown starts cannot finish: they are ended as a disconnect
  (the app's `receive()` returns `http.disconnect`) and their connection closed, rather than cancelled
  at the shutdown timeout with an "Exception in ASGI application" traceback each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
from collections.abc import Iterator
from typing import Any, Protocol

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aegis_server.errors import envelope
from aegis_server.ids import new_request_id

__all__ = [
    "EVENT_STREAM",
    "AegisHttpToolsProtocol",
    "AegisServer",
    "CoalescingTransport",
    "protocol_error_bytes",
    "raise_open_files_limit",
]

logger = logging.getLogger("aegis_server")

EVENT_STREAM = "aegis_event_stream"
"""Key of `request.state` a route sets (True) when its response is an endless event stream: a graceful
shutdown ends such a response as a client disconnect instead of waiting for it."""

_BAD_REQUEST_MESSAGE = (
    "The request is not valid HTTP/1.1 (a malformed request line, header or chunked body), so it was not "
    "read. Send a well-formed HTTP request."
)


_TIMEOUT_MESSAGE = (
    "The request body did not arrive within {seconds:g} s of the request head, so the request was not read. "
    "Send the whole body promptly (the limit is AEGIS_BODY_TIMEOUT_SECONDS)."
)
_HEADERS_TOO_LARGE_MESSAGE = (
    "The request line and headers are larger than {limit} bytes, so the request was not read. Send smaller "
    "headers (the limit is AEGIS_MAX_HEADER_BYTES)."
)
_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}


def protocol_error_bytes(
    message: str = _BAD_REQUEST_MESSAGE,
    *,
    status: int = 400,
    code: str = "bad_request",
    details: dict[str, Any] | None = None,
) -> bytes:
    """The raw HTTP/1.1 answer, in the error envelope, for a request refused before any app ran (400: the
    parser rejected it; 408: its body did not arrive in time; 431: its head is too large). It carries a
    request id of its own (in the body and `X-Request-ID`), as every answer does, and closes."""
    request_id = new_request_id()
    body = json.dumps(envelope("validation_error", code, message, details or {}, request_id=request_id))
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\n"
        "connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body.encode("ascii")


_HOLD_LIMIT = 16 * 1024  # larger writes go out at once (joined only to what is held before them)


class CoalescingTransport:
    """The connection's transport, with small writes held until the next write or the end of the event loop's
    turn, then sent in one call: what was written in one turn leaves together and in order. Everything
    else is the transport's own (`close()` first sends what is held; `abort()` drops it with the rest)."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            if len(data) > _HOLD_LIMIT:
                self._transport.write(data)
                return
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._held = None
        self._transport.write(held + data if len(data) <= _HOLD_LIMIT else held)
        if len(data) > _HOLD_LIMIT:
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading, set_protocol, ...
        return getattr(self._transport, name)


class AegisHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for each request head and body, a bound on the head's
    size, and JSON protocol errors.

    The head timer runs from the moment a connection opens (or the first byte of a next request on a
    kept-alive connection arrives) until the request line and headers are complete; it is not reset by
    more bytes, so a client that drips its headers is closed on time. The body timer runs from then until
    the body is complete, and is not reset by more bytes either. Bodies are bounded in size by the body
    guard, heads here (`aegis_max_header_bytes`).
    """

    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _awaiting_head: bool = True
    _in_body: bool = False  # the current request's head is complete, its body is not
    _head_bytes: int = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Every write of the protocol and of its request cycles goes through it (their order is kept);
        # flow control (`self.flow`) stays on the socket's own transport.
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._awaiting_head = True
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            if self._head_timer is None:
                self._arm_head_timer()  # the first byte of a next request on a kept-alive connection
            self._head_bytes += len(data)
        super().data_received(data)
        if self._awaiting_head:
            limit = getattr(self.config, "aegis_max_header_bytes", None)
            if limit is not None and self._head_bytes > limit and not self.transport.is_closing():
                self._refuse(
                    431,
                    "headers_too_large",
                    _HEADERS_TOO_LARGE_MESSAGE.format(limit=limit),
                    {"max_bytes": limit},
                )
        elif self._in_body and self._body_timer is None:
            # The head is complete and its body has not all arrived with it: the body has until the deadline.
            timeout = getattr(self.config, "aegis_body_timeout", None)
            if timeout is not None and not self.transport.is_closing():
                self._body_timer = self.loop.call_later(float(timeout), self._body_timeout)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        # (A WebSocket upgrade hands the connection to another protocol: no body to time.)
        self._in_body = not (self.parser.should_upgrade() and self._should_upgrade())
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_body = False
        self._cancel_body_timer()
        self._awaiting_head = True  # whatever comes next on this connection is a new request head
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        # uvicorn's message ("Invalid HTTP request received.") is replaced by the envelope.
        self._cancel_head_timer()
        self._cancel_body_timer()
        self.transport.write(protocol_error_bytes())
        self.transport.close()

    def shutdown(self) -> None:
        # A request still waiting for its body cannot finish during the graceful shutdown: end it as a
        # disconnect now (no traceback when the shutdown timeout would have cancelled it).
        if self._in_body and self.cycle is not None and not self.cycle.response_started:
            self._end_request()
            self.transport.close()
            return
        # An event stream (the console's live inbox) never finishes on its own: end it as a disconnect too,
        # rather than wait the whole shutdown timeout for it. Its route marks it in the request state.
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.scope.get("state", {}).get(EVENT_STREAM):
            self._end_request()
            self.transport.close()
            return
        super().shutdown()

    def _refuse(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        """Answer `status` in the envelope (unless the app already answers) and close the connection."""
        self._cancel_head_timer()
        self._cancel_body_timer()
        cycle = self.cycle
        if self._awaiting_head:  # a next head: answer only when no earlier (pipelined) answer is due
            can_answer = cycle is None or cycle.response_complete
        else:  # this request's body: answer only when the app has not started to
            can_answer = cycle is None or not cycle.response_started
        if can_answer:
            self.transport.write(protocol_error_bytes(message, status=status, code=code, details=details))
        self._end_request()
        self.transport.close()

    def _end_request(self) -> None:
        """The app's `receive()` returns `http.disconnect` from now on, and what it sends is dropped."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()

    def _arm_head_timer(self) -> None:
        timeout = getattr(self.config, "aegis_header_timeout", None)
        if timeout is None or self.transport is None or self.transport.is_closing():
            return
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(float(timeout), self._head_timeout)

    def _cancel_head_timer(self) -> None:
        timer, self._head_timer = self._head_timer, None
        if timer is not None:
            timer.cancel()

    def _cancel_body_timer(self) -> None:
        timer, self._body_timer = self._body_timer, None
        if timer is not None:
            timer.cancel()

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            self.transport.close()

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self._in_body and not self.transport.is_closing():
            seconds = float(getattr(self.config, "aegis_body_timeout", 0.0))
            self._refuse(408, "body_timeout", _TIMEOUT_MESSAGE.format(seconds=seconds), {"timeout_seconds": seconds})


class Companion(Protocol):
    """Something served beside the application (the separate /metrics listener): started once the
    application is up, stopped before it shuts down."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class AegisServer(uvicorn.Server):
    """`uvicorn.Server` that shuts down gracefully on SIGTERM/SIGINT and then returns, instead of
    re-raising the signal (which killed the process before atexit handlers flushed the log); and starts
    its `companions` after its own startup, and stops them first at shutdown."""

    stopped_by: str | None = None

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.companions: list[Companion] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:  # the application did not start (the log says why)
            return
        for companion in self.companions:
            await companion.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for companion in self.companions:
            await companion.stop()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                if self._captured_signals:
                    self.stopped_by = signal.Signals(self._captured_signals[-1]).name
                self._captured_signals.clear()  # handled: the graceful shutdown has run


def raise_open_files_limit() -> tuple[int, int] | None:
    """Raise this process's soft limit of open files to its hard limit (POSIX); the (old, new) soft
    limits when raised, else None. Each connection is a file descriptor: 2,000 idle sockets and a new
    client do not fit under the common default of 1,024."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # pragma: no cover - a platform that refuses (macOS caps at OPEN_MAX)
            return None
        return soft, target
    return None


def edge_config(
    app: Any,
    *,
    host: str,
    port: int,
    proxy_headers: bool,
    keep_alive_timeout: float,
    header_timeout: float,
    shutdown_timeout: int,
    body_timeout: float = 30.0,
    max_header_bytes: int = 64 * 1024,
) -> uvicorn.Config:
    """The uvicorn configuration of every address `serve` listens on: httptools with the head and body
    timers and the head size limit, uvloop, our logging."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=AegisHttpToolsProtocol,
        loop="auto",  # uvloop when installed (uvicorn[standard]), else asyncio
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=proxy_headers,
        timeout_keep_alive=keep_alive_timeout,  # type: ignore[arg-type]  # a float works (loop.call_later)
        timeout_graceful_shutdown=shutdown_timeout,
        backlog=4096,
        h11_max_incomplete_event_size=max_header_bytes,  # the same bound, should the h11 protocol be used
    )
    config.aegis_header_timeout = header_timeout  # type: ignore[attr-defined]  # read by the protocol
    config.aegis_body_timeout = body_timeout  # type: ignore[attr-defined]
    config.aegis_max_header_bytes = max_header_bytes  # type: ignore[attr-defined]
    return config


def build_server(app: Any, **options: Any) -> AegisServer:
    """The configured server (not started), with `edge_config(app, **options)`."""
    return AegisServer(edge_config(app, **options))
