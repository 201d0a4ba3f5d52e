"""`/console/audit`: newest first, filters parsed as the API's listing filters (bad input → an alert), the
API's cursor for paging, and "Verify chain" (intact, tampered, CSRF, scopes)."""

from __future__ import annotations

import re

import httpx
import pytest
import sqlalchemy as sa
from _seed import XSS_CAPABILITY
from conftest import Browser, csrf_of, open_browser, sign_in, text_of

from aegis_server.inprocess import InProcessServer
from aegis_server.store.schema import audit_records


def _sequences(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<th scope="row">(\d+)</th>', html)]


def _older_link(html: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">Older records</a>', html)
    return found.group(1).replace("&amp;", "&") if found else None


async def _auditor(browser: Browser) -> httpx.AsyncClient:
    return await browser(["audit:read"])


async def test_records_newest_first_each_linking_to_its_decision(browser: Browser, seeded: list[str]) -> None:
    client = await _auditor(browser)
    answer = await client.get("/console/audit?limit=10")
    assert answer.status_code == 200
    sequences = _sequences(answer.text)
    head = max(sequences)
    assert sequences == list(range(head, head - 10, -1))
    assert f'<a href="/console/decisions/{seeded[-1]}">{seeded[-1]}</a>' in answer.text
    assert _older_link(answer.text) is not None
    assert "Newest records" not in answer.text  # already there


async def test_paging_follows_the_cursor_without_repeats(browser: Browser, seeded: list[str]) -> None:
    client = await _auditor(browser)
    seen: list[int] = []
    path: str | None = "/console/audit?limit=7&capability=payments.refund"
    pages = 0
    while path is not None:
        answer = await client.get(path)
        assert answer.status_code == 200
        seen += _sequences(answer.text)
        if pages:
            assert "Newest records" in answer.text
            older = _older_link(answer.text)
            assert older is None or "capability=payments.refund" in older
        path = _older_link(answer.text)
        pages += 1
    assert pages >= 2
    assert seen == sorted(set(seen), reverse=True)
    # three payments.refund decisions: proposal + decision each, two reviews
    assert len(seen) == 3 * 2 + 2


async def test_filters_narrow_the_log(browser: Browser, seeded: list[str]) -> None:
    client = await _auditor(browser)
    answer = await client.get(f"/console/audit?decision_id={seeded[6]}&actor_id=&since=")
    rows = re.findall(r"<tr>\s*<th scope=\"row\">\d+</th>.*?</tr>", answer.text, re.S)
    assert [re.findall(r"<td>([a-z_]+)</td>", row)[0] for row in rows] == ["review", "decision", "proposal"]
    assert f'value="{seeded[6]}"' in answer.text  # the form shows the filter in use
    assert "Clear filters" in answer.text
    expired = await client.get("/console/audit?event_type=review_expired&outcome=DENY")
    assert len(_sequences(expired.text)) == 1
    nothing = await client.get("/console/audit?since=2031-01-01T00:00:00Z")
    assert _sequences(nothing.text) == []
    assert "No audit records match these filters." in text_of(nothing.text)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=yesterday", "since: must be an RFC 3339 time such as 2025-01-31T12:00:00Z"),
        ("until=2025-13-01T00:00:00Z", "until: must be an RFC 3339 time such as 2025-01-31T12:00:00Z"),
        ("limit=0", "limit: must be an integer between 1 and 200"),
        ("limit=lots", "limit: must be an integer between 1 and 200"),
        ("cursor=not-a-cursor", "invalid cursor"),
        ("cursor=" + "x" * 2000, "cursor: must be at most 1024 characters"),
        ("actor_id=" + "a" * 1001, "actor_id: must be at most 1000 characters"),
    ],
)
async def test_bad_filters_are_an_alert_saying_what_to_fix(
    browser: Browser, seeded: list[str], query: str, message: str
) -> None:
    client = await _auditor(browser)
    answer = await client.get(f"/console/audit?{query}")
    assert answer.status_code == 400
    found = re.search(r'<div class="message alert" role="alert">(.*?)</div>', answer.text, re.S)
    assert found is not None and message in found.group(1)
    assert _sequences(answer.text) == []
    assert "Verify chain" in answer.text  # the page is still usable


async def test_user_controlled_values_are_escaped(browser: Browser, seeded: list[str]) -> None:
    client = await _auditor(browser)
    listing = await client.get("/console/audit?limit=200")
    assert XSS_CAPABILITY not in listing.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in listing.text
    echoed = await client.get('/console/audit?actor_id="><script>alert(2)</script>')
    assert "<script>alert(2)" not in echoed.text
    assert 'value="&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"' in echoed.text


async def test_verify_chain_intact(browser: Browser, seeded: list[str]) -> None:
    client = await _auditor(browser)
    page = await client.get("/console/audit")
    answer = await client.post("/console/audit/verify", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 200
    found = re.search(r'<div class="message status" role="status" id="verification">(.*?)</div>', answer.text, re.S)
    assert found is not None
    status = text_of(found.group(1))
    head = max(_sequences(page.text))
    assert f"The audit is intact. {head} records checked, up to record {head}." in status
    assert "signed checkpoint" in status and "(signature valid)" in status
    assert 'role="alert"' not in answer.text


async def test_verify_chain_shows_where_a_tampered_record_breaks_it(
    server: InProcessServer, browser: Browser, seeded: list[str]
) -> None:
    async with server.store.engine.begin() as conn:
        await conn.execute(
            sa.update(audit_records).where(audit_records.c.sequence == 5).values(payload={"forged": True})
        )
    client = await _auditor(browser)
    page = await client.get("/console/audit")
    answer = await client.post("/console/audit/verify", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 200
    found = re.search(r'<div class="message alert" role="alert" id="verification">(.*?)</div>', answer.text, re.S)
    assert found is not None
    alert = text_of(found.group(1))
    assert "The audit is broken." in alert
    assert "The chain breaks at record 5" in alert
    assert 'role="status"' not in answer.text


async def test_verify_needs_the_csrf_token_and_this_site(browser: Browser, seeded: list[str]) -> None:
    client = await _auditor(browser)
    token = csrf_of((await client.get("/console/audit")).text)
    for data, headers in [
        ({}, {}),
        ({"csrf_token": "0" * 64}, {}),
        ({"csrf_token": token}, {"Origin": "https://evil.example"}),
    ]:
        answer = await client.post("/console/audit/verify", data=data, headers=headers)
        assert answer.status_code == 403
        assert "This form expired or came from another site." in answer.text
        assert 'id="verification"' not in answer.text


async def test_verify_by_another_session_token_is_refused(
    server: InProcessServer, browser: Browser, seeded: list[str]
) -> None:
    victim = await _auditor(browser)
    token = csrf_of((await victim.get("/console/audit")).text)
    attacker = await _auditor(browser)  # signed in too, but with a session of its own
    answer = await attacker.post("/console/audit/verify", data={"csrf_token": token})
    assert answer.status_code == 403


@pytest.mark.parametrize("scopes", [["governance:read"], ["policies:manage"], ["governance:review"]])
async def test_a_key_without_audit_read_is_refused(browser: Browser, seeded: list[str], scopes: list[str]) -> None:
    client = await browser(scopes)
    page = await client.get("/console/audit")
    assert page.status_code == 403
    assert re.search(r'role="alert">[^<]*audit:read', page.text)
    assert _sequences(page.text) == []
    token = csrf_of(page.text)  # the 403 page is signed in: its sign-out form carries the token
    verify = await client.post("/console/audit/verify", data={"csrf_token": token})
    assert verify.status_code == 403
    assert 'id="verification"' not in verify.text


async def test_signed_out_requests_get_nothing(server: InProcessServer, seeded: list[str]) -> None:
    async with open_browser(server) as client:
        assert (await client.get("/console/audit")).status_code == 303
        answer = await client.post("/console/audit/verify", data={"csrf_token": "x"})
        assert answer.status_code in (401, 303)
        assert 'id="verification"' not in answer.text
        await sign_in(server, client, ["audit:read"], "auditor")
        token = csrf_of((await client.get("/console/audit")).text)
        await client.post("/console/sign-out", data={"csrf_token": token})
        after = await client.post("/console/audit/verify", data={"csrf_token": token})
        assert after.status_code in (401, 303) and 'id="verification"' not in after.text
