"""The three pages behind an expired session, a revoked key, or another browser's cookie: no data, no action."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import Clock, csrf_of, open_browser, sign_in

from aegis_server.inprocess import InProcessServer

PAGES = ["/console/overview", "/console/audit", "/console/policies"]
SCOPES = ["governance:read", "audit:read"]


@pytest.mark.parametrize("path", PAGES)
async def test_an_expired_session_is_sent_to_sign_in_again(
    server: InProcessServer, clock: Clock, seeded: list[str], path: str
) -> None:
    async with open_browser(server) as client:
        await sign_in(server, client, SCOPES, "reader")
        assert (await client.get(path)).status_code == 200
        token = csrf_of((await client.get("/console/audit")).text)
        clock.now += timedelta(seconds=server.service.settings.console_session_seconds + 1)
        answer = await client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith(f"/console/sign-in?next={path}")
        assert "reason=expired" in answer.headers["location"]
        verify = await client.post("/console/audit/verify", data={"csrf_token": token})
        assert verify.status_code in (401, 303) and 'id="verification"' not in verify.text


@pytest.mark.parametrize("path", PAGES)
async def test_a_revoked_key_ends_the_session(server: InProcessServer, seeded: list[str], path: str) -> None:
    async with open_browser(server) as client:
        key = await sign_in(server, client, SCOPES, "reader")
        assert (await client.get(path)).status_code == 200
        record = await server.store.authenticate(key)
        assert record is not None
        await server.store.revoke_api_key(record.key_id)
        answer = await client.get(path)
        assert answer.status_code == 303
        assert "reason=revoked" in answer.headers["location"]


@pytest.mark.parametrize("path", PAGES)
async def test_a_forged_cookie_is_nobody(server: InProcessServer, seeded: list[str], path: str) -> None:
    async with open_browser(server) as client:
        client.cookies.set("aegis_console", "forged-session-token", domain="aegis.inprocess", path="/console")
        answer = await client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/sign-in")
