"""A reviewer in the browser and an agent on the SDK: the inbox updates live, and a decision there is the one the
agent's `wait_for_review()` returns. The trust rules of the API hold in the console (no self-review)."""

from __future__ import annotations

import re
import threading

from playwright.sync_api import Page, expect

from aegis_sdk import AegisClient
from aegis_sdk.models import Decision

from ._support import (
    ConsoleServer,
    inbox_item,
    propose_large_refund,
    sign_in,
    unique_order_id,
)
from .conftest import NewPage

WAIT = 30_000  # ms: the longest a live update may take on a loaded CI machine before the test fails


class Waiter:
    """The agent's side: `wait_for_review()` in a thread, started before anyone decides, on the client that
    proposed (it resubmits the proposal it remembers once approved)."""

    def __init__(self, agent: AegisClient, pending: Decision) -> None:
        self.result: Decision | None = None
        self.error: BaseException | None = None

        def wait() -> None:
            try:
                self.result = agent.wait_for_review(pending, timeout=60)
            except BaseException as error:  # reported by final()
                self.error = error

        self._thread = threading.Thread(target=wait, daemon=True)
        self._thread.start()

    def final(self) -> Decision:
        self._thread.join(timeout=90)
        assert not self._thread.is_alive(), "wait_for_review() did not return"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _open_inbox(page: Page, console: ConsoleServer) -> None:
    """The inbox, with its live stream connected (the response's head has arrived)."""
    with page.expect_response(lambda response: "/console/inbox/stream" in response.url, timeout=WAIT):
        page.goto(console.url("/console/inbox"))
    page.evaluate("() => { window.__aegisNotReloaded = true; }")


def _not_reloaded(page: Page) -> bool:
    return bool(page.evaluate("() => window.__aegisNotReloaded === true"))


def _signed_in_inbox(new_page: NewPage, console: ConsoleServer, key: str) -> Page:
    page = new_page()
    sign_in(page, console, key)
    _open_inbox(page, console)
    return page


def _decide(page: Page, order_id: str, button: str, note: str) -> None:
    item = inbox_item(page, order_id)
    item.get_by_label("Note").fill(note)
    item.get_by_role("button", name=button, exact=True).click()


def test_an_escalation_appears_live_and_approving_it_with_a_note_lets_the_agent_proceed(
    console: ConsoleServer, new_page: NewPage
) -> None:
    page = _signed_in_inbox(new_page, console, console.keys.alice)
    order_id = unique_order_id()
    agent = console.client(console.keys.agent)
    pending = propose_large_refund(agent, order_id)
    waiter = Waiter(agent, pending)

    expect(inbox_item(page, order_id)).to_be_visible(timeout=WAIT)
    assert _not_reloaded(page), "the inbox reloaded instead of updating live"
    item = inbox_item(page, order_id)
    for shown in ("payments.refund", "refund-bot-1", "refund-limits/large-refunds", "0.60", "5000", "EUR"):
        expect(item).to_contain_text(shown)  # capability, actor, rule, risk score, parameters
    expect(item).to_contain_text(re.compile(r"\d+ (s|min|h) left"))  # the time left
    expect(item).to_contain_text(re.compile("operator's approval", re.IGNORECASE))  # the reason

    _decide(page, order_id, "Approve", "customer verified by phone")

    final = waiter.final()
    assert final.outcome == "ALLOW" and final.parent_decision_id == pending.decision_id
    reviewed = console.decision(pending.decision_id)
    assert reviewed.review is not None and reviewed.review.status == "approved"
    assert reviewed.review.reviewer == "alice" and reviewed.review.note == "customer verified by phone"
    expect(page.get_by_text(order_id)).to_have_count(0, timeout=WAIT)


def test_denying_in_the_inbox_gives_the_agent_a_final_deny(console: ConsoleServer, new_page: NewPage) -> None:
    page = _signed_in_inbox(new_page, console, console.keys.alice)
    order_id = unique_order_id()
    agent = console.client(console.keys.agent)
    pending = propose_large_refund(agent, order_id)
    waiter = Waiter(agent, pending)
    expect(inbox_item(page, order_id)).to_be_visible(timeout=WAIT)

    _decide(page, order_id, "Deny", "no such order in the ledger")

    final = waiter.final()
    assert final.outcome == "DENY"
    assert final.review is not None and final.review.status == "denied"
    assert final.review.reviewer == "alice" and final.review.note == "no such order in the ledger"


def test_a_second_reviewer_sees_the_item_vanish_when_the_first_decides(
    console: ConsoleServer, new_page: NewPage
) -> None:
    alice = _signed_in_inbox(new_page, console, console.keys.alice)
    bob = _signed_in_inbox(new_page, console, console.keys.bob)
    order_id = unique_order_id()
    pending = propose_large_refund(console.client(console.keys.agent), order_id)
    for page in (alice, bob):
        expect(inbox_item(page, order_id)).to_be_visible(timeout=WAIT)

    _decide(alice, order_id, "Approve", "ok")

    expect(bob.get_by_text(order_id)).to_have_count(0, timeout=WAIT)
    assert _not_reloaded(bob), "bob's inbox reloaded instead of updating live"
    reviewed = console.decision(pending.decision_id)
    assert reviewed.review is not None and reviewed.review.reviewer == "alice"


def test_the_loser_of_a_race_gets_a_clear_message_and_the_winner_stands(
    console: ConsoleServer, new_page: NewPage
) -> None:
    order_id = unique_order_id()
    pending = propose_large_refund(console.client(console.keys.agent), order_id)
    bob = new_page()
    sign_in(bob, console, console.keys.bob)
    bob.goto(console.url(f"/console/decisions/{pending.decision_id}"))
    expect(bob.get_by_role("button", name="Deny", exact=True)).to_be_visible()

    console.client(console.keys.alice).decisions.review(pending.decision_id, approve=True, note="first")
    bob.get_by_label("Note").fill("second")
    bob.get_by_role("button", name="Deny", exact=True).click()

    expect(bob.get_by_role("alert")).to_be_visible(timeout=WAIT)
    reviewed = console.decision(pending.decision_id)
    assert reviewed.review is not None and reviewed.review.status == "approved"
    assert reviewed.review.reviewer == "alice" and reviewed.review.note == "first"


def test_the_key_that_proposed_cannot_approve_its_own_request(console: ConsoleServer, new_page: NewPage) -> None:
    page = _signed_in_inbox(new_page, console, console.keys.self_reviewer)
    order_id = unique_order_id()
    pending = propose_large_refund(console.client(console.keys.self_reviewer), order_id)
    expect(inbox_item(page, order_id)).to_be_visible(timeout=WAIT)

    _decide(page, order_id, "Approve", "looks fine to me")

    expect(page.get_by_role("alert")).to_be_visible(timeout=WAIT)
    still = console.decision(pending.decision_id)
    assert still.review is not None and still.review.status == "pending"


def test_sensitive_parameters_never_reach_the_page(console: ConsoleServer, new_page: NewPage) -> None:
    page = _signed_in_inbox(new_page, console, console.keys.alice)
    order_id = unique_order_id()
    card = "4111111111111111"
    pending = console.client(console.keys.agent).propose(
        actor={"id": "refund-bot-2", "type": "ai-agent"},
        action={
            "capability": "payments.refund",
            "parameters": {"order_id": order_id, "amount": 2500, "currency": "USD", "card_number": card},
        },
    )
    assert pending.outcome == "ESCALATE"
    expect(inbox_item(page, order_id)).to_be_visible(timeout=WAIT)
    assert card not in page.content()
    page.goto(console.url(f"/console/decisions/{pending.decision_id}"))
    expect(page.get_by_text(order_id).first).to_be_visible()
    assert card not in page.content()


def test_without_javascript_a_reviewer_still_signs_in_and_approves(console: ConsoleServer, new_page: NewPage) -> None:
    agent = console.client(console.keys.agent)
    order_id = unique_order_id()
    pending = propose_large_refund(agent, order_id)
    waiter = Waiter(agent, pending)
    page = new_page(javascript=False)
    sign_in(page, console, console.keys.bob)  # plain form posts and redirects from here on

    _decide(page, order_id, "Approve", "approved without scripts")

    expect(page.get_by_role("status").first).to_be_visible()
    final = waiter.final()
    assert final.outcome == "ALLOW" and final.parent_decision_id == pending.decision_id
    reviewed = console.decision(pending.decision_id)
    assert reviewed.review is not None and reviewed.review.note == "approved without scripts"


def _tab_to(page: Page, description: str, is_target: str, *, limit: int = 80) -> None:
    """Press Tab until the focused element satisfies `is_target` (a JS predicate on document.activeElement)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"() => {{ const e = document.activeElement; return !!e && ({is_target}); }}"):
            return
    raise AssertionError(f"{description} cannot be reached with the Tab key ({limit} presses)")


def test_a_reviewer_using_only_the_keyboard_signs_in_and_denies(console: ConsoleServer, new_page: NewPage) -> None:
    agent = console.client(console.keys.agent)
    order_id = unique_order_id()
    pending = propose_large_refund(agent, order_id)
    page = new_page()
    page.goto(console.url(f"/console/decisions/{pending.decision_id}"))  # -> sign-in, then back here

    _tab_to(page, "the API key field", "e.labels && [...e.labels].some(l => l.textContent.trim() === 'API key')")
    page.keyboard.type(console.keys.alice)
    page.keyboard.press("Enter")
    page.wait_for_url(console.url(f"/console/decisions/{pending.decision_id}"))

    _tab_to(page, "the Note field", "e.labels && [...e.labels].some(l => l.textContent.trim() === 'Note')")
    page.keyboard.type("typed, not clicked")
    _tab_to(page, "the Deny button", "e.tagName === 'BUTTON' && e.textContent.trim() === 'Deny'")
    page.keyboard.press("Enter")

    expect(page.get_by_role("status").first).to_be_visible()
    reviewed = console.decision(pending.decision_id)
    assert reviewed.review is not None and reviewed.review.status == "denied"
    assert reviewed.review.note == "typed, not clicked"
