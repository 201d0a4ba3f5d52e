"""Helpers for the aegis-sdk tests (a uniquely named module, imported by conftest.py and the tests)."""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from aegis_sdk import AegisClient, AsyncAegisClient

ENDPOINT = "http://127.0.0.1:8000"
API_KEY = "aegis_sk_test_0123456789abcdef"

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]
AnyClient = AegisClient | AsyncAegisClient


def decision_body(outcome: str = "ALLOW", **overrides: Any) -> dict[str, Any]:
    """A decision as the platform sends it."""
    body: dict[str, Any] = {
        "decision_id": "dec_0001",
        "outcome": outcome,
        "reason": f"policy default/{outcome.lower()} decided",
        "risk_score": 0.2,
        "constraints": {},
        "timestamp": "2026-01-01T00:00:00Z",
        "audit_ref": "aud_0001",
        "policy_ids": ["default/0"],
        "confirmation_token": None,
        "expires_at": None,
        "review": None,
        "parent_decision_id": None,
    }
    body.update(overrides)
    return body


def error_body(
    error_type: str, code: str, message: str = "it went wrong", request_id: str = "req_err", **details: Any
) -> dict[str, Any]:
    """The platform's error envelope."""
    error = {"type": error_type, "code": code, "message": message, "request_id": request_id, "details": details}
    return {"error": error}


def reply(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if body is None and status != 204:
        body = decision_body()
    all_headers = {"X-Request-ID": "req_0001", **(headers or {})}
    if status == 204:
        return httpx.Response(204, headers=all_headers)
    return httpx.Response(status, json=body, headers=all_headers)


class FakePlatform:
    """A scripted stand-in for the platform: answers come from a queue (the last one repeats), or from a
    route table; every request is recorded."""

    def __init__(self, *replies: Reply) -> None:
        self.queue: list[Reply] = list(replies)
        self.routes: dict[tuple[str, str], Reply] = {}
        self.requests: list[httpx.Request] = []

    def route(self, method: str, path: str, answer: Reply) -> None:
        self.routes[(method, path)] = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            if not self.queue:
                return reply(404, error_body("not_found", "not_found", f"no route {request.url.path}"))
            answer = self.queue.pop(0) if len(self.queue) > 1 else self.queue[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            # A Response object can be sent once; hand out a fresh copy each time.
            return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)
        return answer(request)

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def patch_client(client: AnyClient, sleeps: list[float]) -> None:
    client._random = lambda: 0.0  # no jitter: delays are exactly retry_delay * 2**n
    if isinstance(client, AsyncAegisClient):

        async def fake_async_sleep(seconds: float) -> None:
            sleeps.append(seconds)

        client._sleep = fake_async_sleep
    else:
        client._sleep = sleeps.append


async def resolve(value: Any) -> Any:
    """The result of a client call, awaited when the client is async."""
    if inspect.isawaitable(value):
        return await value
    return value


async def collect(iterator: Any) -> list[Any]:
    """Every item of a sync or async page iterator."""
    if hasattr(iterator, "__aiter__"):
        return [item async for item in iterator]
    return list(iterator)


class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a pooled connection is reused

    def do_POST(self) -> None:
        self.server.peers.add(self.client_address)  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps(decision_body()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def keep_alive_server() -> Iterator[tuple[str, set[Any]]]:
    """A keep-alive HTTP server on loopback answering every POST with an ALLOW decision: (endpoint, the set
    of client (host, port) pairs seen, one per TCP connection)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    server.peers = set()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.peers  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
