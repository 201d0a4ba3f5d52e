"""The HTTP server of `aegis-server serve`: uvicorn (uvloop + httptools) with the network edge hardened.

What stock uvicorn 0.54 leaves open, and what this module adds:

- **Idle and partial-header connections.** uvicorn arms its keep-alive timer only after a response: a
  connection that never sends a byte, or sends its request head a byte at a time (slowloris), is kept
  forever. `AegisHttpToolsProtocol` arms a *head timer* when a connection opens and when the first byte
  of each next request arrives; the request line and headers must be complete within
  `header_timeout_seconds`, or the connection is closed. Idle keep-alive connections are closed after
  `keep_alive_timeout_seconds` (uvicorn's own timer). The timer is one `loop.call_later` per request
  head: measured in `bench/`, no cost per decision beyond noise.
- **Protocol-level 400s** (a malformed request line, header or chunk encoding, rejected by the parser
  before any ASGI app runs) are answered with the JSON error envelope, not uvicorn's `text/plain`.
- **File descriptors.** Thousands of open sockets need more than the common soft limit of 1,024 open
  files: `raise_open_files_limit()` raises the soft limit to the hard limit at start.
- **Shutdown.** uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process died by the
  signal (exit -15) before the buffered log lines were written. `AegisServer` shuts down gracefully and
  returns instead; `aegis-server serve` then logs its last line, flushes the log and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aegis_server.errors import envelope
from aegis_server.ids import new_request_id

__all__ = ["AegisHttpToolsProtocol", "AegisServer", "protocol_error_bytes", "raise_open_files_limit"]

logger = logging.getLogger("aegis_server")

_BAD_REQUEST_MESSAGE = (
    "The request is not valid HTTP/1.1 (a malformed request line, header or chunked body), so it was not "
    "read. Send a well-formed HTTP request."
)


def protocol_error_bytes(message: str = _BAD_REQUEST_MESSAGE) -> bytes:
    """The raw HTTP/1.1 400 answer, in the error envelope, for a request the parser rejected. It carries a
    request id of its own (in the body and `X-Request-ID`), as every answer does."""
    request_id = new_request_id()
    body = json.dumps(envelope("validation_error", "bad_request", message, {}, request_id=request_id))
    head = (
        "HTTP/1.1 400 Bad Request\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\n"
        "connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body.encode("ascii")


class AegisHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request head and JSON protocol errors.

    The head timer runs from the moment a connection opens (or the first byte of a next request on a
    kept-alive connection arrives) until the request line and headers are complete; it is not reset by
    more bytes, so a client that drips its headers is closed on time. Bodies are bounded in size by the
    body guard; their pace is left to a reverse proxy (`client_body_timeout`).
    """

    _head_timer: asyncio.TimerHandle | None = None
    _awaiting_head: bool = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._awaiting_head = True
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head and self._head_timer is None:
            self._arm_head_timer()  # the first byte of a next request on a kept-alive connection
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True  # whatever comes next on this connection is a new request head

    def send_400_response(self, msg: str) -> None:
        # uvicorn's message ("Invalid HTTP request received.") is replaced by the envelope.
        self._cancel_head_timer()
        self.transport.write(protocol_error_bytes())
        self.transport.close()

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

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            self.transport.close()


class AegisServer(uvicorn.Server):
    """`uvicorn.Server` that shuts down gracefully on SIGTERM/SIGINT and then returns, instead of
    re-raising the signal (which killed the process before atexit handlers flushed the log)."""

    stopped_by: str | None = None

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


def build_server(
    app: Any,
    *,
    host: str,
    port: int,
    proxy_headers: bool,
    keep_alive_timeout: float,
    header_timeout: float,
    shutdown_timeout: int,
) -> AegisServer:
    """The configured server (not started): httptools with the head timer, uvloop, our logging."""
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
    )
    config.aegis_header_timeout = header_timeout  # type: ignore[attr-defined]  # read by the protocol
    return AegisServer(config)
