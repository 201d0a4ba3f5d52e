"""Signing in and out, the session cookie and its server-side life: expiry, sign-out, revocation, a forged
or replayed cookie, and no key or token where it could leak (URLs, pages, logs, the database)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from http.cookies import SimpleCookie

import httpx
import pytest
import sqlalchemy as sa
from console_support import Clock, browser, csrf_of, messages, sign_in

from aegis_server.inprocess import InProcessServer
from aegis_server.store.schema import console_sessions

BAD_KEY = "That API key is not valid (unknown or revoked)."


def _set_cookie(response: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


async def _session_rows(server: InProcessServer) -> list[sa.Row[tuple[str, str]]]:
    async with server.store.database.read() as conn:
        return list((await conn.execute(sa.select(console_sessions.c.session_hash, console_sessions.c.key_id))).all())


async def test_sign_in_form(server: InProcessServer) -> None:
    async with browser(server) as client:
        response = await client.get("/console/sign-in")
    assert response.status_code == 200
    assert '<label for="api_key">API key</label>' in response.text
    assert 'type="password"' in response.text and 'name="api_key"' in response.text
    assert ">Sign in</button>" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_console_root_and_pages_without_a_session_go_to_sign_in(server: InProcessServer) -> None:
    async with browser(server) as client:
        root = await client.get("/console")
        assert root.status_code == 303 and root.headers["location"] == "/console/inbox"
        inbox = await client.get("/console/inbox")
        assert inbox.status_code == 303 and inbox.headers["location"] == "/console/sign-in"
        page = await client.get("/console/decisions/dec_123")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/sign-in?next=/console/decisions/dec_123"


async def test_good_key_sets_a_strict_http_only_cookie(server: InProcessServer, reviewer_key: str) -> None:
    async with browser(server) as client:
        response = await client.post("/console/sign-in", data={"api_key": reviewer_key})
        assert response.status_code == 303 and response.headers["location"] == "/console/inbox"
        cookie = _set_cookie(response)["aegis_console"]
        assert cookie["httponly"] is True
        assert cookie["samesite"].lower() == "strict"
        assert cookie["path"] == "/console"
        assert cookie["max-age"] == str(server.app.state.settings.console_session_seconds)
        assert not cookie["secure"]  # plain http and console_secure_cookie unset
        assert reviewer_key not in response.headers["location"] and reviewer_key not in cookie.value
        inbox = await client.get("/console/inbox")
    assert inbox.status_code == 200
    assert "rita-reviewer" in inbox.text
    assert reviewer_key not in inbox.text
    rows = await _session_rows(server)
    assert [row.session_hash for row in rows] == [hashlib.sha256(cookie.value.encode()).hexdigest()]


@pytest.mark.parametrize(
    ("setting", "origin", "secure"),
    [(True, "http://testserver", True), (None, "https://testserver", True), (False, "https://testserver", False)],
)
async def test_secure_flag(
    make_server: Callable[..., InProcessServer], setting: bool | None, origin: str, secure: bool
) -> None:
    async with make_server(console_secure_cookie=setting) as server:
        key = await server.acreate_key("rita", ["governance:review"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app), base_url=origin) as client:
            response = await client.post("/console/sign-in", data={"api_key": key})
    assert response.status_code == 303
    assert bool(_set_cookie(response)["aegis_console"]["secure"]) is secure


async def test_unknown_and_revoked_keys_get_the_same_answer(server: InProcessServer) -> None:
    key = await server.acreate_key("gone", ["governance:review"])
    key_id = (await server.store.list_api_keys())[-1].key_id
    assert await server.store.revoke_api_key(key_id)
    async with browser(server) as client:
        answers = [
            await client.post("/console/sign-in", data={"api_key": presented})
            for presented in (key, "aegis_sk_" + "x" * 43, "not-even-a-key", "")
        ]
    for answer in answers:
        assert answer.status_code == 401
        assert messages(answer.text) == [("alert", BAD_KEY)]
        assert "set-cookie" not in answer.headers
        assert key not in answer.text
    assert await _session_rows(server) == []


async def test_failed_sign_ins_are_limited(server: InProcessServer, reviewer_key: str) -> None:
    async with browser(server) as client:
        for _ in range(20):
            assert (await client.post("/console/sign-in", data={"api_key": "aegis_sk_wrong"})).status_code == 401
        blocked = await client.post("/console/sign-in", data={"api_key": reviewer_key})
    assert blocked.status_code == 429
    assert messages(blocked.text)[0][0] == "alert"
    assert await _session_rows(server) == []


async def test_sign_in_from_another_site_is_refused(server: InProcessServer, reviewer_key: str) -> None:
    async with browser(server) as client:
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
            response = await client.post("/console/sign-in", data={"api_key": reviewer_key}, headers=headers)
            assert response.status_code == 403
            assert "came from another site" in response.text
            assert "set-cookie" not in response.headers
        same_site = await client.post(
            "/console/sign-in", data={"api_key": reviewer_key}, headers={"Origin": "http://testserver"}
        )
    assert same_site.status_code == 303


@pytest.mark.parametrize(
    ("target", "landing"),
    [
        ("/console/decisions/dec_1", "/console/decisions/dec_1"),
        ("/console/audit?actor_id=a", "/console/audit?actor_id=a"),
        ("//evil.example/console", "/console/inbox"),
        ("https://evil.example/console/inbox", "/console/inbox"),
        ("/\\evil.example", "/console/inbox"),
        ("/api/v1/keys", "/console/inbox"),
        ("/console/../api/v1/keys", "/console/inbox"),
    ],
)
async def test_next_stays_in_the_console(server: InProcessServer, reviewer_key: str, target: str, landing: str) -> None:
    async with browser(server) as client:
        response = await client.post("/console/sign-in", data={"api_key": reviewer_key, "next": target})
    assert response.status_code == 303 and response.headers["location"] == landing


async def test_expired_session_goes_back_to_sign_in(
    server: InProcessServer, reviewer: httpx.AsyncClient, clock: Clock
) -> None:
    assert (await reviewer.get("/console/inbox")).status_code == 200
    clock.advance(server.app.state.settings.console_session_seconds)
    expired = await reviewer.get("/console/inbox")
    assert expired.status_code == 303
    assert expired.headers["location"] == "/console/sign-in?reason=expired"
    page = await reviewer.get(expired.headers["location"])
    assert messages(page.text) == [("status", "Your session expired. Sign in again.")]
    assert await _session_rows(server) == []  # deleted server-side, not only forgotten by the browser


async def test_expired_rows_are_cleaned_up_at_the_next_sign_in(
    server: InProcessServer, reviewer_key: str, clock: Clock
) -> None:
    async with browser(server) as first:
        await sign_in(first, reviewer_key)
    clock.advance(server.app.state.settings.console_session_seconds + 1)
    async with browser(server) as second:
        await sign_in(second, reviewer_key)
    assert len(await _session_rows(server)) == 1


async def test_sign_out_deletes_the_session_and_a_replayed_cookie_fails(
    server: InProcessServer, reviewer: httpx.AsyncClient
) -> None:
    old_cookie = reviewer.cookies["aegis_console"]
    csrf = await csrf_of(reviewer)
    response = await reviewer.post("/console/sign-out", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == "/console/sign-in?reason=signed_out"
    cleared = _set_cookie(response)["aegis_console"]
    assert cleared.value in ("", '""') and cleared["max-age"] == "0"
    assert await _session_rows(server) == []
    async with browser(server) as replay:
        replay.cookies.set("aegis_console", old_cookie, domain="testserver", path="/console")
        again = await replay.get("/console/inbox")
        assert again.status_code == 303 and again.headers["location"].startswith("/console/sign-in")
        post = await replay.post("/console/sign-out", data={"csrf_token": csrf})
        assert post.status_code == 303


async def test_sign_out_needs_the_csrf_token(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    refused = await reviewer.post("/console/sign-out", data={})
    assert refused.status_code == 403
    assert (await reviewer.get("/console/inbox")).status_code == 200  # still signed in
    assert len(await _session_rows(server)) == 1


async def test_a_revoked_key_ends_its_sessions_at_once(server: InProcessServer) -> None:
    key = await server.acreate_key("soon-revoked", ["governance:review"])
    async with browser(server) as client:
        await sign_in(client, key)
        assert (await client.get("/console/inbox")).status_code == 200
        key_id = (await server.store.list_api_keys())[-1].key_id
        assert await server.store.revoke_api_key(key_id)
        response = await client.get("/console/inbox")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/sign-in?reason=revoked"
    assert await _session_rows(server) == []


async def test_forged_cookie_is_no_session(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    rows = await _session_rows(server)
    async with browser(server) as forger:
        for value in (rows[0].session_hash, "x" * 43, "a" * 500):
            forger.cookies.set("aegis_console", value, domain="testserver", path="/console")
            response = await forger.get("/console/inbox")
            assert response.status_code == 303 and response.headers["location"] == "/console/sign-in"


async def test_a_key_without_the_pages_scope_gets_403(server: InProcessServer) -> None:
    key = await server.acreate_key("proposer-only", ["governance:propose"])
    async with browser(server) as client:
        await sign_in(client, key)
        response = await client.get("/console/inbox")
    assert response.status_code == 403
    assert messages(response.text) == [
        (
            "alert",
            "Your API key 'proposer-only' lacks the scope 'governance:read' or 'governance:review' this page needs. "
            "Sign in with a key that has it (or admin).",
        )
    ]


async def test_no_key_or_token_in_the_logs(
    server: InProcessServer, reviewer_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with browser(server) as client:
        await client.post("/console/sign-in", data={"api_key": "aegis_sk_wrong-key-value"})
        await sign_in(client, reviewer_key)
        token = client.cookies["aegis_console"]
        csrf = await csrf_of(client)
        await client.post("/console/sign-out", data={"csrf_token": csrf})
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "console sign-in" in logged
    for secret in (reviewer_key, token, csrf, "aegis_sk_wrong-key-value"):
        assert secret not in logged


async def test_nav_and_webhooks_link_for_admins_only(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    page = (await reviewer.get("/console/inbox")).text
    assert '<nav aria-label="Console">' in page
    for label in ("Inbox", "Overview", "Audit", "Policies"):
        assert f">{label}</a>" in page
    assert ">Webhooks</a>" not in page
    assert ">Sign out</button>" in page
    async with browser(server) as admin:
        await sign_in(admin, server.api_key)
        assert ">Webhooks</a>" in (await admin.get("/console/inbox")).text
