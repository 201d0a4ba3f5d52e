"""A real webhook receiver for the tests: an HTTP server on 127.0.0.1 (a thread) that records every
request and answers as the test says: a status (with headers), or holding the request open. It can be
stopped (its port closed: connections refused) and started again on the same port."""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import threading
from collections.abc import Callable
from typing import Any

from standardwebhooks import Webhook


@dataclasses.dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> Any:
        """The parsed body, after `standardwebhooks` verified its signature (raises otherwise)."""
        return Webhook(secret).verify(self.body, self.headers)


Answer = tuple[int, dict[str, str]]


class Receiver:
    """`answer(request) -> (status, headers)` decides each answer (default 200). `hold()`: requests wait
    until `release()` (answering then as `answer` says)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answer: Callable[[Received], Answer] = lambda _: (200, {})
        self.arrived = threading.Event()
        self._held = threading.Event()
        self._held.set()
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                with receiver._lock:
                    receiver.requests.append(request)
                receiver.arrived.set()
                receiver._held.wait(timeout=30)
                status, headers = receiver.answer(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: connections are refused until `start()`."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def hold(self) -> None:
        self._held.clear()

    def release(self) -> None:
        self._held.set()

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def ids(self) -> list[str]:
        return [request.webhook_id for request in self.received()]

    async def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> list[Received]:
        """Poll (with a deadline) until `predicate(requests)` holds; fails the test otherwise."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while loop.time() < give_up:
            requests = self.received()
            if predicate(requests):
                return requests
            await asyncio.sleep(0.01)
        raise AssertionError(f"the receiver did not get what was expected within {timeout} s: {len(self.received())}")
