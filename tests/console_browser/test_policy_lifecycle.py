"""Policies > History, a version's page with its diff, Replay and a rollback, in a real browser: each page
passes axe-core (WCAG 2 A/AA) in the light and the dark color scheme, the forms work as a person uses them
(the rollback needs its box ticked), and the screenshots for docs/console.md are taken here
(`make console-screenshots`)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from ._support import ConsoleServer, assert_accessible, save_screenshot, sign_in
from .conftest import NewPage

SCHEMES = ["light", "dark"]
CAP_REFUNDS = {
    "name": "refund-cap",
    "description": "Refunds above 300 are denied while the fraud review runs.",
    "rules": [
        {
            "id": "deny-over-300",
            "capability": "payments.refund",
            "condition": "action.parameters.amount > 300",
            "outcome": "DENY",
            "priority": 50,
            "reason": "Refunds over 300 are paused",
        }
    ],
}


@pytest.fixture(scope="module")
def console(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """A server of this module's own: its policy changes must not reach the other tests' decisions."""
    server = ConsoleServer(tmp_path_factory.mktemp("lifecycle"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def versions(console: ConsoleServer) -> int:
    """Refunds decided under version 1 (the example files), then version 2 adds `refund-cap`; its number."""
    agent = console.client(console.keys.agent)
    for index, amount in enumerate((20, 80, 450, 2000, 5000)):
        agent.propose(
            actor={"id": "refund-bot-1", "type": "ai-agent"},
            action={
                "capability": "payments.refund",
                "parameters": {"order_id": f"L-{index}", "amount": amount, "currency": "EUR"},
            },
        )
    headers = {"Authorization": f"Bearer {console.keys.admin}"}
    saved = httpx.post(console.url("/api/v1/policies"), headers=headers, json=CAP_REFUNDS, timeout=10)
    assert saved.status_code == 201, saved.text
    listed = httpx.get(console.url("/api/v1/policy-versions"), headers=headers, timeout=10).json()
    return int(listed["items"][0]["version"])


def _shot_name(name: str, scheme: str) -> str:
    return name if scheme == "light" else f"{name}-dark"


def _open(page: Page, console: ConsoleServer, path: str, heading: str) -> None:
    response = page.goto(console.url(path))
    assert response is not None and response.status == 200, (path, response and response.status)
    expect(page.get_by_role("heading", level=1)).to_contain_text(heading)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_history_page(console: ConsoleServer, versions: int, new_page: NewPage, scheme: str) -> None:
    page = new_page(scheme)
    sign_in(page, console, console.keys.admin)
    _open(page, console, "/console/policies", "Policies")
    page.get_by_role("link", name="History", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Policy history")
    expect(page.get_by_role("link", name=f"Version {versions}")).to_be_visible()
    expect(page.get_by_text("active", exact=True).first).to_be_visible()
    assert_accessible(page)
    save_screenshot(page, _shot_name("policy-history", scheme))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_version_page_and_its_diff(console: ConsoleServer, versions: int, new_page: NewPage, scheme: str) -> None:
    page = new_page(scheme)
    sign_in(page, console, console.keys.admin)
    _open(page, console, "/console/policies/history", "Policy history")
    page.get_by_role("link", name=f"Version {versions}").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Policy version {versions}")
    expect(page.get_by_role("heading", name=f"From version {versions - 1} to version {versions}")).to_be_visible()
    expect(page.locator(".diff-added").filter(has_text="name: refund-cap")).to_be_visible()
    page.get_by_label("Compare with version").fill("1")
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page.get_by_role("heading", name=f"From version 1 to version {versions}")).to_be_visible()
    assert_accessible(page)
    page.locator("#compare-heading").evaluate("heading => heading.scrollIntoView()")
    save_screenshot(page, _shot_name("policy-version", scheme))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_replay_page(console: ConsoleServer, versions: int, new_page: NewPage, scheme: str) -> None:
    page = new_page(scheme)
    sign_in(page, console, console.keys.admin)
    _open(page, console, "/console/policies", "Policies")
    page.get_by_role("link", name="Replay", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Replay")
    assert_accessible(page)  # the form alone
    page.get_by_label("Since").fill("1d")
    page.get_by_label("Candidate version (optional)").fill(str(versions))
    page.get_by_role("button", name="Replay", exact=True).click()
    expect(page.get_by_role("heading", name="Report")).to_be_visible()
    transitions = page.get_by_role("region", name="Outcomes that would change")
    expect(transitions.get_by_role("row", name="ESCALATE DENY 2")).to_be_visible()  # 2000 and 5000: escalated before
    expect(transitions.get_by_role("row", name="REQUIRE_CONFIRMATION DENY 1")).to_be_visible()  # 450
    assert_accessible(page)
    page.locator("#report-heading").evaluate("heading => heading.scrollIntoView()")
    save_screenshot(page, _shot_name("policy-replay", scheme))
    page.get_by_label("Since").fill("abc")
    page.get_by_role("button", name="Replay", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("Since 'abc' is neither a duration")
    assert_accessible(page)


def test_a_rollback_needs_the_box_ticked(console: ConsoleServer, versions: int, new_page: NewPage) -> None:
    page = new_page()
    sign_in(page, console, console.keys.admin)
    _open(page, console, "/console/policies/versions/1", "Policy version 1")
    page.get_by_role("button", name="Roll back to version 1").click()
    # The browser keeps the form (the box is required): nothing was sent.
    expect(page.get_by_role("heading", level=1)).to_contain_text("Policy version 1")
    assert page.evaluate("() => document.querySelector('#understand').validity.valueMissing")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_rolling_back(console: ConsoleServer, versions: int, new_page: NewPage, scheme: str) -> None:
    """Light rolls back to version 1 (refund-cap removed); dark then rolls forward to `versions` again."""
    target = 1 if scheme == "light" else versions
    page = new_page(scheme)
    sign_in(page, console, console.keys.admin)
    _open(page, console, f"/console/policies/versions/{target}", f"Policy version {target}")
    assert_accessible(page)
    page.get_by_label("I understand").check()
    page.get_by_role("button", name=f"Roll back to version {target}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Rolled back to version {target}")
    verb = "Removed" if scheme == "light" else "Restored"
    expect(page.get_by_text("refund-cap").first).to_be_visible()
    expect(page.locator("dt", has_text=f"{verb} policies")).to_be_visible()
    assert_accessible(page)
    if scheme == "light":
        save_screenshot(page, "policy-rollback")
