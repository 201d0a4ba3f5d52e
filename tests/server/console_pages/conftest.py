"""Fixtures of the console-pages tests: the app in-process (async mode) at a movable clock, with the
decisions of `SEEDED` recorded, and browsers (httpx clients keeping cookies) signed in with keys of chosen
scopes. The helpers live in `console_pages_support` (a unique module name: every test folder has a conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from console_pages_support import Browser, Clock, make_server, open_browser, seed, sign_in

from aegis_server.inprocess import InProcessServer


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


@pytest.fixture
async def browser(server: InProcessServer) -> AsyncIterator[Browser]:
    opened: list[httpx.AsyncClient] = []

    async def open_signed_in(scopes: Sequence[str]) -> httpx.AsyncClient:
        client = open_browser(server)
        opened.append(client)
        await sign_in(server, client, scopes, f"key-{len(opened)}-{'-'.join(s.replace(':', '.') for s in scopes)}")
        return client

    yield open_signed_in
    for client in opened:
        await client.aclose()
