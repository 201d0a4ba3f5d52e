"""Signing in and out, as a person and as someone holding an old cookie: nothing readable without a live session,
and a key sees only what its scopes allow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, expect

from ._support import (
    ConsoleServer,
    inbox_item,
    propose_large_refund,
    review_form,
    session_cookie,
    sign_in,
    unique_order_id,
)
from .conftest import NewPage

EXPIRY_SECONDS = 4
EXPIRED_MESSAGE = "Your session expired. Sign in again."


def _replay(console: ConsoleServer, cookie: str) -> httpx.Client:
    """Another client presenting a cookie it copied: what a thief of the cookie could do."""
    return httpx.Client(base_url=console.endpoint, cookies={"aegis_console": cookie}, follow_redirects=False)


def test_signing_in_with_a_key_opens_the_inbox(console: ConsoleServer, new_page: NewPage) -> None:
    page = new_page()
    page.goto(console.url("/console"))
    assert "/console/sign-in" in page.url  # /console -> /console/inbox -> sign in first
    page.get_by_label("API key").fill(console.keys.alice)
    page.get_by_role("button", name="Sign in").click()

    page.wait_for_url(console.url("/console/inbox"))
    nav = page.get_by_role("navigation", name="Console")
    for link in ("Inbox", "Overview", "Audit", "Policies"):
        expect(nav.get_by_role("link", name=link, exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name="Webhooks", exact=True)).to_have_count(0)  # admin keys only
    expect(page.get_by_text("alice").first).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    cookies = [c for c in page.context.cookies() if c["name"] == "aegis_console"]
    assert len(cookies) == 1
    cookie = cookies[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert console.keys.alice not in cookie["value"]
    assert page.evaluate("() => document.cookie") == ""  # HttpOnly: no script on the page can read it


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/console/inbox", "/\\evil.example"])
def test_signing_in_never_sends_the_browser_to_another_site(
    console: ConsoleServer, new_page: NewPage, target: str
) -> None:
    page = new_page()
    page.goto(console.url("/console/sign-in?next=" + quote(target, safe="")))
    page.get_by_label("API key").fill(console.keys.alice)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/console/sign-in" not in url)
    assert page.url.startswith(console.endpoint + "/console/"), page.url


def test_after_sign_in_the_page_asked_for_opens(console: ConsoleServer, new_page: NewPage) -> None:
    page = new_page()
    page.goto(console.url("/console/audit?outcome=DENY"))
    assert "/console/sign-in" in page.url and "next=" in page.url
    page.get_by_label("API key").fill(console.keys.auditor)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(console.url("/console/audit?outcome=DENY"))


def test_nothing_is_readable_without_a_session(console: ConsoleServer, new_page: NewPage) -> None:
    order_id = unique_order_id()
    pending = propose_large_refund(console.client(console.keys.agent), order_id)
    page = new_page()
    paths = ["/console/inbox", f"/console/decisions/{pending.decision_id}", "/console/audit", "/console/overview"]
    for path in [*paths, "/console/policies", "/console/webhooks"]:
        page.goto(console.url(path))
        assert "/console/sign-in" in page.url, (path, page.url)
        expect(page.get_by_label("API key")).to_be_visible()
        assert order_id not in page.content(), path  # (the id asked for may stay in the form's `next`)
    with (
        httpx.Client(base_url=console.endpoint) as anonymous,
        anonymous.stream("GET", "/console/inbox/stream", timeout=10) as stream,
    ):
        assert stream.status_code != 200


def test_only_admin_keys_open_the_webhooks_page(console: ConsoleServer, new_page: NewPage) -> None:
    page = new_page()
    sign_in(page, console, console.keys.alice)
    response = page.goto(console.url("/console/webhooks"))
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("admin")


def test_an_admin_key_sees_the_webhooks_link(console: ConsoleServer, new_page: NewPage) -> None:
    page = new_page()
    sign_in(page, console, console.keys.admin)
    expect(page.get_by_role("navigation", name="Console").get_by_role("link", name="Webhooks")).to_be_visible()


def test_a_wrong_or_revoked_key_is_refused_with_an_alert(console: ConsoleServer, new_page: NewPage) -> None:
    page = new_page()
    page.goto(console.url("/console/sign-in"))
    page.get_by_label("API key").fill("aegis_live_not-a-real-key")
    with page.expect_response(lambda r: r.request.method == "POST" and "/console/sign-in" in r.url) as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    expect(page.get_by_role("alert")).to_contain_text("That API key is not valid (unknown or revoked).")
    assert not [c for c in page.context.cookies() if c["name"] == "aegis_console"]
    page.goto(console.url("/console/inbox"))
    assert "/console/sign-in" in page.url


def test_a_page_the_key_may_not_see_names_the_missing_scope(console: ConsoleServer, new_page: NewPage) -> None:
    page = new_page()
    page.goto(console.url("/console/sign-in"))
    page.get_by_label("API key").fill(console.keys.auditor)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    response = page.goto(console.url("/console/inbox"))
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("governance:")


def test_signing_out_ends_the_session_for_the_back_button_and_the_old_cookie(
    console: ConsoleServer, new_page: NewPage
) -> None:
    order_id = unique_order_id()
    propose_large_refund(console.client(console.keys.agent), order_id)
    page = new_page()
    sign_in(page, console, console.keys.alice)
    expect(inbox_item(page, order_id)).to_be_visible()
    cookie = session_cookie(page)

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/sign-in**")
    assert not [c for c in page.context.cookies() if c["name"] == "aegis_console"]

    page.go_back()
    page.wait_for_load_state()
    expect(page.get_by_text(order_id)).to_have_count(0)
    with _replay(console, cookie) as thief:
        answer = thief.get("/console/inbox")
        assert answer.status_code == 303 and "/console/sign-in" in answer.headers["location"]
        assert order_id not in answer.text
        with thief.stream("GET", "/console/inbox/stream", timeout=10) as stream:
            assert stream.status_code != 200, "the live stream still answers the signed-out cookie"


@pytest.fixture(scope="module")
def short_sessions(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """A second server whose console sessions last a few seconds (the shared one keeps the default 8 hours)."""
    server = ConsoleServer(Path(tmp_path_factory.mktemp("short-sessions")), session_seconds=EXPIRY_SECONDS)
    yield server
    server.stop()


def test_an_expired_session_lands_on_sign_in_and_its_cookie_changes_nothing(
    short_sessions: ConsoleServer, new_page: NewPage
) -> None:
    order_id = unique_order_id()
    pending = propose_large_refund(short_sessions.client(short_sessions.keys.agent), order_id)
    page = new_page()
    signed_in_at = time.monotonic()
    sign_in(page, short_sessions, short_sessions.keys.alice)
    cookie = session_cookie(page)
    action, fields = review_form(inbox_item(page, order_id), "Approve")

    while time.monotonic() < signed_in_at + EXPIRY_SECONDS + 1:
        time.sleep(0.2)

    # The open (live) inbox notices by itself; a page opened now lands on the sign-in form too.
    page.wait_for_url("**/console/sign-in?**")
    expect(page.get_by_text(EXPIRED_MESSAGE)).to_be_visible()
    later = page.context.new_page()
    later.goto(short_sessions.url("/console/inbox"))
    assert "/console/sign-in" in later.url
    expect(later.get_by_label("API key")).to_be_visible()
    assert order_id not in later.content()
    with _replay(short_sessions, cookie) as thief:
        answer = thief.get("/console/inbox")
        assert answer.status_code == 303 and "/console/sign-in" in answer.headers["location"]
        sign_in_page = thief.get(answer.headers["location"])
        assert EXPIRED_MESSAGE in sign_in_page.text
        refused = thief.post(action, data=fields, headers={"Origin": short_sessions.endpoint})
        assert refused.status_code in (401, 303), refused.status_code
    still = short_sessions.decision(pending.decision_id)
    assert still.review is not None and still.review.status == "pending"
