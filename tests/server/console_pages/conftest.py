"""Fixtures of the console-pages tests: the app in-process (async mode) at a fixed clock, with the decisions
of `_seed` recorded, and browsers (httpx clients keeping cookies) signed in with keys of chosen scopes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from _seed import NOW, seed

from aegis_server.inprocess import InProcessServer

POLICIES = Path(__file__).with_name("policies.yaml")
Browser = Callable[[Sequence[str]], Awaitable[httpx.AsyncClient]]


class Clock:
    """The server's wall clock, at `NOW` until a test moves it."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def make_server(db_url: str, clock: Callable[[], datetime] = lambda: NOW) -> InProcessServer:
    return InProcessServer(
        policy_paths=[POLICIES],
        db_url=db_url,
        clock=clock,
        run_background_tasks=False,
        secret="test-secret-of-at-least-16-bytes",
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def server(sqlite_url: str, clock: Clock) -> AsyncIterator[InProcessServer]:
    async with make_server(sqlite_url, clock) as running:
        yield running


@pytest.fixture
async def seeded(server: InProcessServer) -> list[str]:
    return await seed(server.store)


def open_browser(server: InProcessServer) -> httpx.AsyncClient:
    """A client with no API key: it is only what its cookies make it."""
    return httpx.AsyncClient(transport=server.async_transport(), base_url=server.endpoint)


async def sign_in(server: InProcessServer, client: httpx.AsyncClient, scopes: Sequence[str], name: str) -> str:
    key = await server.acreate_key(name, list(scopes))
    answer = await client.post("/console/sign-in", data={"api_key": key})
    assert answer.status_code == 303, answer.text
    return key


@pytest.fixture
async def browser(server: InProcessServer) -> AsyncIterator[Browser]:
    """`await browser(scopes)`: a client signed in with a new key of those scopes."""
    opened: list[httpx.AsyncClient] = []

    async def open_signed_in(scopes: Sequence[str]) -> httpx.AsyncClient:
        client = open_browser(server)
        opened.append(client)
        await sign_in(server, client, scopes, f"key-{len(opened)}-{'-'.join(s.replace(':', '.') for s in scopes)}")
        return client

    yield open_signed_in
    for client in opened:
        await client.aclose()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


def text_of(html: str) -> str:
    """The page's text: tags dropped, whitespace collapsed (entities left as they are)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())
