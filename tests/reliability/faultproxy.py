"""A fault-injecting HTTP/1.1 proxy on loopback, between the SDK and a real aegis-server.

It understands just enough HTTP (requests and responses with `Content-Length`) to fault *one request* of
a keep-alive connection, and decides each request's fate from a seeded plan, so a run is reproducible:

- `pass`: forwarded both ways; the server decides, the client gets the answer.
- `delay`: held a little before forwarding; the client gets the answer, late.
- `refuse`: the connection is reset before anything is read; nothing reaches the server.
- `reset_request`: half of the request reaches the server, then both sides are reset; nothing is decided.
- `reset_response`: the request is forwarded, half of the answer comes back, then a reset: the server
  decided, the client saw a connection error.
- `stall_response`: the request is forwarded, the answer is held past the client's timeout: decided, and
  the client timed out.
- `unavailable`: the proxy answers 503 with `Retry-After` without forwarding.
- `unavailable_after`: forwarded (the server decides), then the proxy answers 503 with `Retry-After`.

Every attempt is journaled with its `Idempotency-Key`, the fault applied and whether a complete 2xx answer
was written to the client, so a test can prove "no retry after a decision was delivered".
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

FAULTS = (
    "pass",
    "delay",
    "refuse",
    "reset_request",
    "reset_response",
    "stall_response",
    "unavailable",
    "unavailable_after",
)
_HEAD_LIMIT = 64 * 1024
_BODY_LIMIT = 16 * 1024 * 1024


@dataclass
class Attempt:
    """One request the proxy saw (or, for `refuse`, one connection it reset)."""

    fault: str
    method: str = ""
    path: str = ""
    idempotency_key: str | None = None
    status: int | None = None  # the status the client was sent, if any
    delivered: bool = False  # a complete 2xx answer was written to the client
    started: float = field(default_factory=time.monotonic)


class _Closed(Exception):
    """The peer closed the connection (cleanly, between messages or in the middle of one)."""


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees 'connection reset', not a clean end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Closed
        self.buffer += chunk

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > _HEAD_LIMIT:
                raise _Closed
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head + b"\r\n\r\n"

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _content_length(headers: Mapping[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise _Closed  # the SDK and the server both send Content-Length; anything else is out of scope
    length = int(headers.get("content-length", "0"))
    if not 0 <= length <= _BODY_LIMIT:
        raise _Closed
    return length


class FaultProxy:
    """`with FaultProxy(upstream_port, weights, seed=1) as proxy:` then point clients at `proxy.endpoint`.

    `weights` maps fault names to relative weights (missing ones are 0); `script` lists faults to apply
    first, one per request, in order (connections are not refused while it lasts). `stall_seconds` must exceed the
    clients' timeout; `delay_seconds` stays below it. `retry_after` is the `Retry-After` of the 503s.
    """

    def __init__(
        self,
        upstream_port: int,
        weights: Mapping[str, float],
        *,
        seed: int = 0,
        delay_seconds: float = 0.05,
        stall_seconds: float = 2.5,
        retry_after: str = "0",
        script: Sequence[str] = (),
    ) -> None:
        unknown = set(weights) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self.upstream = ("127.0.0.1", upstream_port)
        self._faults = [name for name in FAULTS if weights.get(name, 0) > 0]
        self._weights = [weights[name] for name in self._faults]
        self._random = random.Random(seed)
        self._script = list(script)  # faults applied first, in order, one per request; then the weights
        self.delay_seconds = delay_seconds
        self.stall_seconds = stall_seconds
        self.retry_after = retry_after
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._acceptor = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stopping.set()
        self._acceptor.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            _reset(sock)
        for thread in list(self._threads):
            thread.join(timeout=self.stall_seconds + 5)

    # -- the plan -------------------------------------------------------------------------------

    def _draw(self, connection: bool = False) -> str:
        with self._lock:
            if self._script:  # a script names the fate of requests; connections pass meanwhile
                return "pass" if connection else self._script.pop(0)
            return self._random.choices(self._faults, self._weights)[0] if self._faults else "pass"

    def _journal(self, attempt: Attempt) -> Attempt:
        with self._lock:
            self.attempts.append(attempt)
        return attempt

    def by_key(self) -> dict[str, list[Attempt]]:
        """The journaled attempts of each Idempotency-Key, in arrival order."""
        with self._lock:
            attempts = list(self.attempts)
        grouped: dict[str, list[Attempt]] = {}
        for attempt in attempts:
            if attempt.idempotency_key is not None:
                grouped.setdefault(attempt.idempotency_key, []).append(attempt)
        return grouped

    def counts(self) -> dict[str, int]:
        with self._lock:
            attempts = list(self.attempts)
        result = dict.fromkeys(FAULTS, 0)
        for attempt in attempts:
            result[attempt.fault] += 1
        return result

    # -- the proxy ------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self._open.add(client)
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _forget(self, *sockets: socket.socket | None) -> None:
        with self._lock:
            for sock in sockets:
                if sock is not None:
                    self._open.discard(sock)

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            if self._draw(connection=True) == "refuse":
                self._journal(Attempt("refuse"))
                _reset(client)
                return
            reader = _Reader(client)
            up_reader: _Reader | None = None
            while not self._stopping.is_set():
                head = reader.head()
                request_line, headers = _headers(head)
                body = reader.exactly(_content_length(headers))
                method, path = [*request_line.split(" "), "", ""][:2]
                fault = self._draw()
                if fault == "refuse":  # on a kept-alive connection, a refusal is the next best thing: a reset
                    fault = "reset_request"
                attempt = self._journal(Attempt(fault, method, path, headers.get("idempotency-key")))
                if fault == "unavailable":
                    self._send_503(client, attempt)
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self.upstream, timeout=30)
                    with self._lock:
                        self._open.add(upstream)
                    up_reader = _Reader(upstream)
                assert up_reader is not None
                message = head + body
                if fault == "reset_request":
                    upstream.sendall(message[: max(1, len(message) // 2)])
                    _reset(upstream)
                    _reset(client)
                    return
                if fault == "delay":
                    time.sleep(self.delay_seconds)
                upstream.sendall(message)
                response_head = up_reader.head()
                status_line, response_headers = _headers(response_head)
                status = int(status_line.split(" ")[1])
                response = response_head + up_reader.exactly(
                    0 if status in (204, 304) else _content_length(response_headers)
                )
                if fault == "reset_response":
                    client.sendall(response[: max(1, len(response) // 2)])
                    _reset(client)
                    _reset(upstream)
                    return
                if fault == "stall_response":
                    self._stopping.wait(self.stall_seconds)
                    _reset(client)
                    _reset(upstream)
                    return
                if fault == "unavailable_after":
                    self._send_503(client, attempt)
                    continue
                client.sendall(response)
                attempt.status = status
                attempt.delivered = 200 <= status < 300
                if response_headers.get("connection", "").lower() == "close":
                    return
        except (_Closed, OSError, ValueError, IndexError):
            return
        finally:
            self._forget(client, upstream)
            with contextlib.suppress(OSError):
                client.close()
            if upstream is not None:
                with contextlib.suppress(OSError):
                    upstream.close()

    def _send_503(self, client: socket.socket, attempt: Attempt) -> None:
        body = json.dumps({"message": "injected fault"}).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\n"
            f"Retry-After: {self.retry_after}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        client.sendall(head + body)
        attempt.status = 503
