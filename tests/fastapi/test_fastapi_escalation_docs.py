"""The client's loop of docs/fastapi.md ("The client's loop"), run as written: a client of the example app
(on a uvicorn socket, the real aegis-server in-process) sends a refund that escalates, waits on the status
link while a reviewer decides, and repeats the request once approved. (tests/docs runs the same snippet on
its own, where it only defines the function.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi_support import BOT, ROOT, load_example, serve

from aegis_server.inprocess import InProcessServer

LARGE = {"amount": 5000, "currency": "EUR"}


def documented_client_loop() -> dict[str, Any]:
    """The namespace of the first Python snippet under the page's "The client's loop" heading."""
    page = (ROOT / "docs" / "fastapi.md").read_text(encoding="utf-8")
    section = page.split("\n### The client's loop\n", 1)[1].split("\n#", 1)[0]
    code = section.split("```python\n", 1)[1].split("\n```", 1)[0]
    namespace: dict[str, Any] = {"__name__": "docs_fastapi_client_loop"}
    exec(compile(code, "docs/fastapi.md (The client's loop)", "exec"), namespace)
    return namespace


async def review_once_polled(server: InProcessServer, *, approve: bool) -> str:
    """Wait until the client long-polls its pending decision, then review it with a reviewer's own key."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 10.0
    while not server.service.notifier.waiting:
        assert loop.time() < give_up, "the client did not long-poll within 10 s"
        await asyncio.sleep(0.001)
    reader = server.async_client()
    (pending,) = [d async for d in reader.decisions.list(review_status="pending")]
    reviewer = server.async_client(await server.acreate_key("operator", ["governance:review"]))
    await reviewer.decisions.review(pending.decision_id, approve=approve)
    return pending.decision_id


async def run_client(url: str, send: Callable[..., httpx.Response], order: str) -> httpx.Response:
    """The documented loop on a worker thread (it is sync code), as the client app would call it."""

    def call() -> httpx.Response:
        with httpx.Client(base_url=url) as http:
            return send(http, "POST", f"/orders/{order}/refunds", headers=BOT, json=LARGE, max_wait=60)

    return await asyncio.to_thread(call)


async def test_the_documented_loop_waits_for_the_approval_and_repeats(server: InProcessServer) -> None:
    loop_ns = documented_client_loop()
    app = load_example().create_app(client=server.async_client())
    async with serve(app) as url:
        client = asyncio.create_task(run_client(url, loop_ns["send_governed"], "D-1"))
        decision_id = await review_once_polled(server, approve=True)
        response = await client
    assert response.status_code == 200, response.text
    assert response.json()["confirmed_from"] == decision_id


async def test_the_documented_loop_stops_on_a_denial(server: InProcessServer) -> None:
    loop_ns = documented_client_loop()
    app = load_example().create_app(client=server.async_client())
    async with serve(app) as url:
        client = asyncio.create_task(run_client(url, loop_ns["send_governed"], "D-2"))
        await review_once_polled(server, approve=False)
        with pytest.raises(loop_ns["ReviewRefused"], match="The review was denied"):
            await client
