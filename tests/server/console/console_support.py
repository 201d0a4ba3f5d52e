"""Helpers of the console's HTTP tests (imported by name: `from console_support import ...`): a
cookie-keeping browser-like client, signing in, reading CSRF tokens and messages, proposing an ESCALATE,
and a driver for the live stream (an ASGI call of our own, since httpx's ASGI transport waits for a
response to finish)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from html import unescape
from pathlib import Path
from typing import Any

import httpx

from aegis_server.inprocess import InProcessServer

POLICIES = Path(__file__).with_name("policies.yaml")
ORIGIN = "http://testserver"


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def browser(server: InProcessServer) -> httpx.AsyncClient:
    """A client that keeps cookies, like a browser on the console's own origin (no API key)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app), base_url=ORIGIN)


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    response = await client.post("/console/sign-in", data={"api_key": key})
    assert response.status_code == 303, response.text
    return response


CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


async def csrf_of(client: httpx.AsyncClient, path: str = "/console/inbox") -> str:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    match = CSRF.search(response.text)
    assert match is not None, "no csrf_token on the page"
    return match.group(1)


def proposal(capability: str = "payments.transfer", actor: str = "agent-1", **parameters: Any) -> dict[str, Any]:
    if capability == "payments.transfer":
        parameters.setdefault("amount", 5000)  # over 1000: ESCALATE (see policies.yaml)
    return {
        "actor": {"id": actor, "type": "ai-agent"},
        "action": {"capability": capability, "parameters": parameters},
        "context": {"session_id": "sess-1"},
    }


async def escalate(server: InProcessServer, **kwargs: Any) -> str:
    """Propose an ESCALATE with the server's admin key; its decision id."""
    async with server.async_http_client() as api:
        response = await api.post("/api/v1/governance/propose", json=proposal(**kwargs))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outcome"] == "ESCALATE", body
    return str(body["decision_id"])


def messages(html: str) -> list[tuple[str, str]]:
    """The (role, text) of every status/alert message on a page."""
    found = re.findall(r'role="(status|alert)"[^>]*>([^<]*)<', html)
    return [(role, unescape(text.strip())) for role, text in found]


class Stream:
    """`GET /console/inbox/stream` called on the app directly: events as they are sent, and a disconnect."""

    def __init__(self, app: Any, cookie: str) -> None:
        self._app = app
        self._cookie = cookie
        self._gone = asyncio.Event()
        self._sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._buffer = ""
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        await self._sent.put(message)

    async def open(self) -> Stream:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/console/inbox/stream",
            "raw_path": b"/console/inbox/stream",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"cookie", self._cookie.encode()),
                (b"accept", b"text/event-stream"),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        self.task = asyncio.create_task(self._app(scope, self._receive, self._send))
        start = await asyncio.wait_for(self._sent.get(), timeout=10)
        assert start["type"] == "http.response.start", start
        self.status = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return self

    async def next_event(self, timeout: float = 10.0) -> tuple[str, str] | None:
        """The next (event, data) — comments and `retry:` skipped; None when the stream ended."""
        while True:
            if "\n\n" in self._buffer:
                block, self._buffer = self._buffer.split("\n\n", 1)
                event, data = "message", []
                for line in block.split("\n"):
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                if data:
                    return event, "\n".join(data)
                continue
            message = await asyncio.wait_for(self._sent.get(), timeout=timeout)
            self._buffer += message.get("body", b"").decode()
            if not message.get("more_body", False) and "\n\n" not in self._buffer:
                return None

    async def close(self) -> None:
        self._gone.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, timeout=10)
