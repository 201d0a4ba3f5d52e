"""Cross-site request forgery against a signed-in reviewer: every forged review is refused and changes nothing.

The attacker's page is served from another port of 127.0.0.1. Ports do not make another *site*, so the browser
sends the SameSite=Strict cookie along: only the console's own CSRF checks (the token and the Origin) stand
between that page and an approval."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect

from ._support import ConsoleServer, inbox_item, propose_large_refund, review_form, sign_in, unique_order_id
from .conftest import NewPage

REFUSAL = "This form expired or came from another site. Reload the page and try again."


class AttackerSite:
    """A page on another loopback port whose form posts to the console; `show(html)` sets what it serves."""

    def __init__(self) -> None:
        self.page_html = "<!doctype html><title>nothing</title>"
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = site.page_html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def auto_submitting_form(self, action: str, fields: dict[str, str]) -> None:
        inputs = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
        )
        self.page_html = (
            "<!doctype html><title>You won a prize</title>"
            f'<form id="f" method="post" action="{html.escape(action)}">{inputs}</form>'
            "<script>document.getElementById('f').submit()</script>"
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def attacker() -> Iterator[AttackerSite]:
    site = AttackerSite()
    yield site
    site.stop()


def _pending_review(console: ConsoleServer, new_page: NewPage) -> tuple[Page, str, str, dict[str, str]]:
    """Alice signed in with a pending request in her inbox, and the fields its Approve button would post."""
    order_id = unique_order_id()
    pending = propose_large_refund(console.client(console.keys.agent), order_id)
    page = new_page()
    sign_in(page, console, console.keys.alice)
    action, fields = review_form(inbox_item(page, order_id), "Approve")
    assert fields.get("csrf_token"), f"the review form carries no csrf_token: {sorted(fields)}"
    return page, pending.decision_id, action, fields


def _still_pending(console: ConsoleServer, decision_id: str) -> None:
    decision = console.decision(decision_id)
    assert decision.review is not None and decision.review.status == "pending", decision.review


def test_a_post_without_the_token_or_with_a_wrong_one_is_refused(console: ConsoleServer, new_page: NewPage) -> None:
    page, decision_id, action, fields = _pending_review(console, new_page)
    same_origin = {"Origin": console.endpoint}
    without = {k: v for k, v in fields.items() if k != "csrf_token"}

    for forged in (without, {**fields, "csrf_token": "forged"}, {**fields, "csrf_token": ""}):
        answer = page.request.post(action, form=forged, headers=same_origin, max_redirects=0)
        assert answer.status == 403, (answer.status, sorted(forged))
        assert REFUSAL in answer.text()
    _still_pending(console, decision_id)


def test_a_post_with_the_right_token_from_another_origin_is_refused(console: ConsoleServer, new_page: NewPage) -> None:
    page, decision_id, action, fields = _pending_review(console, new_page)
    for origin in ("http://evil.example", "null", console.endpoint.replace("127.0.0.1", "localhost")):
        answer = page.request.post(action, form=fields, headers={"Origin": origin}, max_redirects=0)
        assert answer.status == 403, (answer.status, origin)
    _still_pending(console, decision_id)


def test_a_form_on_another_site_cannot_approve_for_the_signed_in_reviewer(
    console: ConsoleServer, new_page: NewPage, attacker: AttackerSite
) -> None:
    page, decision_id, action, fields = _pending_review(console, new_page)

    attacker.auto_submitting_form(action, {k: v for k, v in fields.items() if k != "csrf_token"})
    page.goto(attacker.url)
    page.wait_for_url(f"{console.endpoint}/**")
    expect(page.get_by_role("alert")).to_contain_text(REFUSAL)
    _still_pending(console, decision_id)

    # Even a token that leaked to the other site does not help it: the browser's Origin names that site.
    attacker.auto_submitting_form(action, fields)
    page.goto(attacker.url)
    page.wait_for_url(f"{console.endpoint}/**")
    expect(page.get_by_role("alert")).to_contain_text(REFUSAL)
    _still_pending(console, decision_id)


def test_a_key_without_the_review_scope_cannot_review_through_the_console(
    console: ConsoleServer, new_page: NewPage
) -> None:
    _, decision_id, action, fields = _pending_review(console, new_page)
    auditor = new_page()
    sign_in(auditor, console, console.keys.auditor)
    own_token = auditor.locator('input[name="csrf_token"]').first.input_value()  # its Sign out form's

    answer = auditor.request.post(
        action, form={**fields, "csrf_token": own_token}, headers={"Origin": console.endpoint}, max_redirects=0
    )
    assert answer.status == 403, answer.status
    _still_pending(console, decision_id)
