"""Every console page passes axe-core (WCAG 2 A/AA) in the light and the dark color scheme, with real data on it;
each test leaves the screenshot docs/console.md shows (`make console-screenshots`), taken before the check so
that a failing page can be looked at."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from ._support import ConsoleServer, assert_accessible, propose_large_refund, save_screenshot, sign_in
from .conftest import NewPage

SCHEMES = ["light", "dark"]


@dataclass(frozen=True)
class Data:
    pending_order: str
    reviewed_decision_id: str


@pytest.fixture(scope="module")
def console(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """A server of this module's own, so the screenshots show only the requests made below."""
    server = ConsoleServer(tmp_path_factory.mktemp("pages"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def data(console: ConsoleServer) -> Data:
    """A few requests in every state, so each page has something to show (and to check)."""
    agent = console.client(console.keys.agent)
    reviewer = console.client(console.keys.bob)
    for order, bot in (("A-1042", "refund-bot-1"), ("A-1043", "refund-bot-7"), ("B-2001", "refund-bot-3")):
        propose_large_refund(agent, order, bot=bot)
    reviewed = propose_large_refund(agent, "A-0999", bot="refund-bot-1")
    reviewer.decisions.review(reviewed.decision_id, approve=True, note="customer verified by phone")
    allowed = agent.wait_for_review(reviewed, timeout=30)
    agent.decisions.report_execution(allowed.decision_id, status="SUCCESS", duration_ms=212)
    denied = propose_large_refund(agent, "A-1001", bot="refund-bot-2")
    reviewer.decisions.review(denied.decision_id, approve=False, note="duplicate of A-0999")
    for amount in (20, 80, 450):
        agent.propose(
            actor={"id": "refund-bot-1", "type": "ai-agent"},
            action={
                "capability": "payments.refund",
                "parameters": {"order_id": f"C-{amount}", "amount": amount, "currency": "USD"},
            },
        )
    return Data(pending_order="A-1042", reviewed_decision_id=reviewed.decision_id)


def _open(page: Page, console: ConsoleServer, path: str, heading: str) -> None:
    """Open a console page and check it is that page (not the console's 404 page, which passes axe too)."""
    response = page.goto(console.url(path))
    assert response is not None and response.status == 200, (path, response and response.status)
    expect(page.get_by_role("heading", level=1)).to_contain_text(heading)


def _a_webhook_endpoint(console: ConsoleServer) -> None:
    """One endpoint for the Webhooks page to list. A closed loopback port: its deliveries stay on this machine."""
    headers = {"Authorization": f"Bearer {console.keys.admin}"}
    listed = httpx.get(console.url("/api/v1/webhooks"), headers=headers, timeout=10)
    if listed.status_code == 200 and "ops-pager" in listed.text:
        return
    created = httpx.post(
        console.url("/api/v1/webhooks"),
        headers=headers,
        json={
            "url": "http://127.0.0.1:9/aegis/events",
            "description": "ops-pager",
            "event_types": ["decision.escalated", "review.resolved", "review.expired"],
            "capability": "payments.*",
            "min_risk": 0.5,
        },
        timeout=10,
    )
    assert created.status_code in (200, 201), created.text


def _shot_name(name: str, scheme: str) -> str:
    return name if scheme == "light" else f"{name}-dark"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_sign_in_page(console: ConsoleServer, new_page: NewPage, scheme: str) -> None:
    page = new_page(scheme)
    page.goto(console.url("/console/sign-in"))
    expect(page.get_by_label("API key")).to_be_visible()
    save_screenshot(page, _shot_name("sign-in", scheme))
    assert_accessible(page)

    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    assert_accessible(page)  # the refusal too


@pytest.mark.parametrize("scheme", SCHEMES)
def test_inbox_page(console: ConsoleServer, data: Data, new_page: NewPage, scheme: str) -> None:
    page = new_page(scheme)
    sign_in(page, console, console.keys.admin)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Inbox")
    expect(page.get_by_text(data.pending_order).first).to_be_visible()
    expect(page.get_by_role("button", name="Approve", exact=True).first).to_be_visible()
    save_screenshot(page, _shot_name("inbox", scheme))
    assert_accessible(page)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_decision_page(console: ConsoleServer, data: Data, new_page: NewPage, scheme: str) -> None:
    page = new_page(scheme)
    sign_in(page, console, console.keys.admin)
    _open(page, console, f"/console/decisions/{data.reviewed_decision_id}", "Decision")
    expect(page.get_by_text("customer verified by phone").first).to_be_visible()
    save_screenshot(page, _shot_name("decision", scheme))
    assert_accessible(page)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_audit_page_verifies_the_chain(console: ConsoleServer, data: Data, new_page: NewPage, scheme: str) -> None:
    page = new_page(scheme)
    sign_in(page, console, console.keys.auditor)
    _open(page, console, "/console/audit", "Audit")
    expect(page.get_by_role("table").first).to_be_visible()
    assert_accessible(page)

    page.get_by_role("button", name="Verify chain").click()
    expect(page.get_by_role("status").filter(has_text="intact")).to_be_visible()
    save_screenshot(page, _shot_name("audit", scheme))
    assert_accessible(page)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_overview_page(console: ConsoleServer, data: Data, new_page: NewPage, scheme: str) -> None:
    page = new_page(scheme)
    sign_in(page, console, console.keys.admin)
    _open(page, console, "/console/overview", "Overview")
    expect(page.get_by_role("img").first).to_be_visible()  # the charts
    save_screenshot(page, _shot_name("overview", scheme))
    assert_accessible(page)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_policies_page(console: ConsoleServer, data: Data, new_page: NewPage, scheme: str) -> None:
    page = new_page(scheme)
    sign_in(page, console, console.keys.admin)
    _open(page, console, "/console/policies", "Policies")
    expect(page.get_by_text("refund-limits").first).to_be_visible()
    save_screenshot(page, _shot_name("policies", scheme))
    assert_accessible(page)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_webhooks_page(console: ConsoleServer, data: Data, new_page: NewPage, scheme: str) -> None:
    _a_webhook_endpoint(console)
    page = new_page(scheme)
    sign_in(page, console, console.keys.admin)
    _open(page, console, "/console/webhooks", "Webhooks")
    save_screenshot(page, _shot_name("webhooks", scheme))
    assert_accessible(page)
