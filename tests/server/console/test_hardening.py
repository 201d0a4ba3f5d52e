"""Attacks a hostile review found, kept closed: a CR in a proposal splitting the live stream's events, a
session opening streams without end, the console skipping the key's rate limit, a reviewer's key reading
decisions the API would not show it, the sign-in throttle forgetting a blocked address, redirects without
the console's headers."""

from __future__ import annotations

import httpx
from console_support import Stream, browser, escalate, sign_in

from aegis_server.console.live import MAX_STREAMS_PER_SESSION, sse_event
from aegis_server.console.sign_in import SignInThrottle
from aegis_server.inprocess import InProcessServer


def _cookie(client: httpx.AsyncClient) -> str:
    return f"aegis_console={client.cookies['aegis_console']}"


def _browser_events(stream_text: str) -> list[tuple[str, str]]:
    """The events a browser's EventSource dispatches (the HTML spec's line rules: CRLF, LF or CR alone)."""
    events, event, data = [], "message", []
    for line in stream_text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            if data:
                events.append((event, "\n".join(data)))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    return events


def test_a_carriage_return_cannot_start_an_event_of_its_own() -> None:
    hostile = "<li>memo x\revent: signed-out\rdata: gotcha\r\r</li>\r\n<li>next</li>"
    events = _browser_events(sse_event("inbox", hostile))
    assert [name for name, _ in events] == ["inbox"]
    assert "signed-out" in events[0][1]  # still there, as text of the one event


async def test_a_carriage_return_in_a_proposal_reaches_the_stream_as_text(
    server: InProcessServer, reviewer: httpx.AsyncClient
) -> None:
    stream = await Stream(server.app, _cookie(reviewer)).open()
    try:
        await stream.next_event()
        await escalate(server, memo="x\revent: signed-out\rdata: bye\r\r")
        event = await stream.next_event()
        assert event is not None and event[0] == "inbox"
        assert "signed-out" in event[1]  # inside the list's HTML, not an event
    finally:
        await stream.close()


async def test_a_session_holds_a_bounded_number_of_streams(
    server: InProcessServer, reviewer: httpx.AsyncClient
) -> None:
    streams = [await Stream(server.app, _cookie(reviewer)).open() for _ in range(MAX_STREAMS_PER_SESSION)]
    try:
        for stream in streams:
            assert (await stream.next_event() or ("", ""))[0] == "inbox"
        extra = await Stream(server.app, _cookie(reviewer)).open()
        event = await extra.next_event()
        assert event is not None and event[0] == "busy"
        assert await extra.next_event() is None  # and it ends
        await extra.close()
    finally:
        for stream in streams:
            await stream.close()
    again = await Stream(server.app, _cookie(reviewer)).open()  # closed tabs free their places
    try:
        assert (await again.next_event() or ("", ""))[0] == "inbox"
    finally:
        await again.close()


async def test_the_keys_own_rate_limit_holds_in_the_console(server: InProcessServer) -> None:
    key = await server.acreate_key("slow-reviewer", ["governance:review"], rate_limit_per_minute=2)
    async with browser(server) as client:
        await sign_in(client, key)
        statuses = [(await client.get("/console/inbox")).status_code for _ in range(6)]
    assert statuses[0] == 200
    assert 429 in statuses
    limited = statuses.index(429)
    assert all(status == 429 for status in statuses[limited:])


async def test_a_review_only_key_sees_escalations_not_other_decisions(server: InProcessServer) -> None:
    escalated = await escalate(server)
    async with server.async_http_client() as api:
        allowed = await api.post(
            "/api/v1/governance/propose",
            json={
                "actor": {"id": "agent-1", "type": "ai-agent"},
                "action": {"capability": "payments.transfer", "parameters": {"amount": 5, "memo": "lunch money"}},
            },
        )
    assert allowed.json()["outcome"] == "ALLOW", allowed.text
    reviewer = await server.acreate_key("review-only", ["governance:review"])
    reader = await server.acreate_key("read-only", ["governance:read"])
    async with browser(server) as client:
        await sign_in(client, reviewer)
        assert (await client.get(f"/console/decisions/{escalated}")).status_code == 200
        refused = await client.get(f"/console/decisions/{allowed.json()['decision_id']}")
        assert refused.status_code == 403 and "governance:read" in refused.text
        assert "lunch money" not in refused.text
    async with browser(server) as client:
        await sign_in(client, reader)
        page = await client.get(f"/console/decisions/{allowed.json()['decision_id']}")
        assert page.status_code == 200
        assert "lunch money" not in page.text  # parameters of a decision never escalated: audit:read only
        assert "audit:read" in page.text


def test_failures_from_other_addresses_do_not_unblock_one() -> None:
    throttle = SignInThrottle(limit=3)
    throttle.max_clients = 50
    for _ in range(3):
        throttle.failed("203.0.113.7")
    assert throttle.blocked("203.0.113.7")
    for number in range(500):
        throttle.failed(f"2001:db8::{number:x}")
    assert throttle.blocked("203.0.113.7")


async def test_redirects_carry_the_consoles_headers(server: InProcessServer, reviewer_key: str) -> None:
    async with browser(server) as client:
        signed_in = await client.post("/console/sign-in", data={"api_key": reviewer_key})
        home = await client.get("/console")
    for response in (signed_in, home):
        assert response.status_code == 303
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
