"""The decision page's Shadow rules section and the policies page's mode badges pass axe-core (WCAG 2 A/AA)
in the light and the dark color scheme, in a real browser."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from ._support import ConsoleServer, assert_accessible, propose_large_refund, sign_in
from .conftest import NewPage

SCHEMES = ["light", "dark"]
TRIAL = {
    "name": "refund-trial",
    "mode": "shadow",
    "rules": [
        {
            "id": "deny-over-500",
            "capability": "payments.refund",
            "condition": "action.parameters.amount > 500",
            "outcome": "DENY",
            "reason": "Refunds over 500 would be denied",
        },
        {"id": "allow-small", "capability": "payments.refund", "outcome": "ALLOW", "mode": "enforce", "priority": -1},
    ],
}


@pytest.fixture(scope="module")
def console(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """A server of this module's own: the shadow policy below must not reach the other tests' decisions."""
    server = ConsoleServer(tmp_path_factory.mktemp("shadow"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shadow_decision_id(console: ConsoleServer) -> str:
    headers = {"Authorization": f"Bearer {console.keys.admin}"}
    saved = httpx.post(console.url("/api/v1/policies"), headers=headers, json=TRIAL, timeout=10)
    assert saved.status_code == 201, saved.text
    decision = propose_large_refund(console.client(console.keys.agent), "S-0001")
    assert decision.shadow and decision.shadow[0].policy_id == "refund-trial/deny-over-500"
    return decision.decision_id


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_shadow_section_is_accessible(
    console: ConsoleServer, shadow_decision_id: str, new_page: NewPage, scheme: str
) -> None:
    page = new_page(scheme)
    sign_in(page, console, console.keys.admin)
    response = page.goto(console.url(f"/console/decisions/{shadow_decision_id}"))
    assert response is not None and response.status == 200
    expect(page.get_by_role("heading", name="Shadow rules")).to_be_visible()
    expect(page.get_by_text("differs").first).to_be_visible()
    assert_accessible(page)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_mode_badges_are_accessible(
    console: ConsoleServer, shadow_decision_id: str, new_page: NewPage, scheme: str
) -> None:
    page = new_page(scheme)
    sign_in(page, console, console.keys.admin)
    response = page.goto(console.url("/console/policies"))
    assert response is not None and response.status == 200
    expect(page.get_by_role("heading", name="refund-trial shadow")).to_be_visible()
    assert_accessible(page)
