"""The live inbox (Server-Sent Events): an update when an escalation arrives or is decided elsewhere, the
end of the stream at sign-out, session expiry and key revocation, and nothing left behind after a client
goes away."""

from __future__ import annotations

import httpx
from console_support import Clock, Stream, browser, csrf_of, escalate, sign_in

from aegis_server.inprocess import InProcessServer


def _cookie(client: httpx.AsyncClient) -> str:
    return f"aegis_console={client.cookies['aegis_console']}"


async def test_stream_headers_and_first_list(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    stream = await Stream(server.app, _cookie(reviewer)).open()
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-store"
        assert stream.headers["x-accel-buffering"] == "no"
        event = await stream.next_event()
        assert event is not None and event[0] == "inbox"
        assert "No requests are waiting for review." in event[1]
    finally:
        await stream.close()


async def test_an_escalation_appears_and_a_review_elsewhere_removes_it(
    server: InProcessServer, reviewer: httpx.AsyncClient
) -> None:
    stream = await Stream(server.app, _cookie(reviewer)).open()
    try:
        await stream.next_event()  # the empty inbox
        decision_id = await escalate(server)
        event = await stream.next_event()
        assert event is not None and event[0] == "inbox"
        assert f'id="decision-{decision_id}"' in event[1]

        other_key = await server.acreate_key("other-reviewer", ["governance:review"])
        async with server.async_http_client(other_key) as api:
            answer = await api.post(f"/api/v1/governance/decisions/{decision_id}/review", json={"approve": False})
        assert answer.status_code == 200, answer.text
        event = await stream.next_event()
        assert event is not None and event[0] == "inbox"
        assert decision_id not in event[1]
    finally:
        await stream.close()


async def test_sign_out_ends_the_stream(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    stream = await Stream(server.app, _cookie(reviewer)).open()
    try:
        await stream.next_event()
        csrf = await csrf_of(reviewer)
        signed_out = await reviewer.post("/console/sign-out", data={"csrf_token": csrf})
        assert signed_out.status_code == 303
        assert await stream.next_event() == ("signed-out", "Your session ended. Sign in again.")
        assert await stream.next_event() is None
    finally:
        await stream.close()
    assert not server.store.database._event_listeners  # the stream's listener was removed


async def test_expiry_and_revocation_end_the_stream(
    server: InProcessServer, reviewer: httpx.AsyncClient, clock: Clock
) -> None:
    stream = await Stream(server.app, _cookie(reviewer)).open()
    try:
        await stream.next_event()
        clock.advance(server.app.state.settings.console_session_seconds + 1)
        event = await stream.next_event()
        assert event is not None and event[0] == "signed-out"
    finally:
        await stream.close()


async def test_revoked_key_ends_the_stream(server: InProcessServer) -> None:
    key = await server.acreate_key("soon-revoked", ["governance:read"])
    async with browser(server) as client:
        await sign_in(client, key)
        stream = await Stream(server.app, _cookie(client)).open()
        try:
            await stream.next_event()
            key_id = (await server.store.list_api_keys())[-1].key_id
            assert await server.store.revoke_api_key(key_id)
            event = await stream.next_event()
            assert event is not None and event[0] == "signed-out"
        finally:
            await stream.close()


async def test_a_client_going_away_leaves_nothing_behind(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    before = set(server.store.database._event_listeners)
    stream = await Stream(server.app, _cookie(reviewer)).open()
    await stream.next_event()
    assert len(server.store.database._event_listeners) == len(before) + 1
    await stream.close()  # the client disconnects: the response task finishes
    assert stream.task is not None and stream.task.done()
    assert set(server.store.database._event_listeners) == before
    assert not server.app.state.console_streams.events


async def test_stream_needs_a_session(server: InProcessServer) -> None:
    stream = await Stream(server.app, "aegis_console=forged").open()
    try:
        assert stream.status == 303
        assert stream.headers["location"].startswith("/console/sign-in")
    finally:
        await stream.close()
