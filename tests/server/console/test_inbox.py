"""The inbox and reviews through it: what each item shows (redacted parameters, escaped hostile text),
the order and the paging, Approve / Deny with a Note, the trust rules (CSRF, scopes, self-review) and two
reviewers racing."""

from __future__ import annotations

import re

import httpx
import pytest
from console_support import Clock, browser, csrf_of, escalate, messages, sign_in

from aegis_server.console import inbox as inbox_module
from aegis_server.inprocess import InProcessServer

CSRF_REFUSED = "This form expired or came from another site. Reload the page and try again."


async def _status(server: InProcessServer, decision_id: str) -> str:
    decision = await server.service.get_decision(decision_id)
    assert decision.review is not None
    return decision.review.status


def _article(html: str, decision_id: str) -> str:
    match = re.search(rf'<article id="decision-{decision_id}".*?</article>', html, re.S)
    assert match is not None, f"no item for {decision_id}"
    return match.group(0)


async def test_an_item_shows_what_a_reviewer_needs(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    decision_id = await escalate(server, amount=5000, memo="rent", card_number="4111111111111111")
    page = await reviewer.get("/console/inbox")
    assert page.status_code == 200
    item = _article(page.text, decision_id)
    assert "agent-1" in item and "(ai-agent)" in item
    assert "payments.transfer" in item
    assert "<code>sess-1</code>" in item
    assert '<span class="risk">' in item
    assert "baseline/big-transfer" in item  # the rule that fired
    assert "ESCALATE by baseline/big-transfer" in item  # the reason, with the risk explanation
    assert "<code>5000</code>" in item and "<code>rent</code>" in item
    assert "4111111111111111" not in page.text  # the sensitive value never reaches the page
    assert "redacted (sensitive)" in item
    assert '<time datetime="2030-01-01T12:10:00Z">10 min left</time>' in item
    assert f'href="/console/decisions/{decision_id}"' in item
    assert '<label for="note-' in item and ">Note</label>" in item
    assert ">Approve</button>" in item and ">Deny</button>" in item
    assert f'action="/console/decisions/{decision_id}/review"' in item
    assert "1 pending review." in page.text


async def test_hostile_text_is_shown_as_text(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    decision_id = await escalate(server, actor=hostile[:60], amount=5000, memo=hostile)
    page = (await reviewer.get("/console/inbox")).text
    item = _article(page, decision_id)
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in item
    decision_page = (await reviewer.get(f"/console/decisions/{decision_id}")).text
    assert "<script>alert" not in decision_page and "<img" not in decision_page


async def test_soonest_deadline_first_and_overdue_left_out(
    server: InProcessServer, reviewer: httpx.AsyncClient, clock: Clock
) -> None:
    later = await escalate(server, amount=5000)  # 600 s to review
    clock.advance(1)
    sooner = await escalate(server, amount=500_000)  # 60 s to review
    page = (await reviewer.get("/console/inbox")).text
    assert page.index(f'id="decision-{sooner}"') < page.index(f'id="decision-{later}"')
    clock.advance(61)
    page = (await reviewer.get("/console/inbox")).text
    assert f'id="decision-{sooner}"' not in page and f'id="decision-{later}"' in page


async def test_paging_says_when_more_are_waiting(
    server: InProcessServer, reviewer: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "INBOX_LIMIT", 2)
    for _ in range(3):
        await escalate(server)
    page = (await reviewer.get("/console/inbox")).text
    assert page.count('<article id="decision-') == 2
    assert "3 pending reviews; showing the 2 with the soonest deadlines — 1 more waiting." in page


async def test_approve_with_a_note(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    decision_id = await escalate(server)
    csrf = await csrf_of(reviewer)
    response = await reviewer.post(
        f"/console/decisions/{decision_id}/review",
        data={
            "csrf_token": csrf,
            "decision": "approve",
            "note": "checked <b>by phone</b>",
            "return_to": "/console/inbox",
        },
    )
    assert response.status_code == 303 and response.headers["location"] == "/console/inbox"
    page = await reviewer.get("/console/inbox")
    assert messages(page.text) == [("status", f"Approved {decision_id} — the agent may now proceed.")]
    assert f'id="decision-{decision_id}"' not in page.text
    decision = await server.service.get_decision(decision_id)
    assert decision.review is not None
    assert (decision.review.status, decision.review.reviewer, decision.review.note) == (
        "approved",
        "rita-reviewer",
        "checked <b>by phone</b>",
    )
    assert messages((await reviewer.get("/console/inbox")).text) == []  # the message is shown once


async def test_deny(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    decision_id = await escalate(server)
    csrf = await csrf_of(reviewer)
    await reviewer.post(f"/console/decisions/{decision_id}/review", data={"csrf_token": csrf, "decision": "deny"})
    assert messages((await reviewer.get("/console/inbox")).text) == [("status", f"Denied {decision_id}.")]
    assert await _status(server, decision_id) == "denied"


async def test_a_note_too_long_or_no_choice_changes_nothing(
    server: InProcessServer, reviewer: httpx.AsyncClient
) -> None:
    decision_id = await escalate(server)
    csrf = await csrf_of(reviewer)
    path = f"/console/decisions/{decision_id}/review"
    await reviewer.post(path, data={"csrf_token": csrf, "decision": "approve", "note": "x" * 2001})
    ((kind, text),) = messages((await reviewer.get("/console/inbox")).text)
    assert kind == "alert" and "note" in text
    await reviewer.post(path, data={"csrf_token": csrf, "decision": "maybe"})
    assert messages((await reviewer.get("/console/inbox")).text) == [("alert", "Choose Approve or Deny.")]
    assert await _status(server, decision_id) == "pending"


@pytest.mark.parametrize(
    ("fields", "headers"),
    [
        ({}, {}),  # no token
        ({"csrf_token": "0" * 64}, {}),  # a wrong one
        ({"csrf_token": "CSRF"}, {"Origin": "https://evil.example"}),  # the right one, from another site
        ({"csrf_token": "CSRF"}, {"Sec-Fetch-Site": "cross-site"}),
        ({}, {"X-CSRF-Token": "0" * 64}),  # a wrong header
    ],
)
async def test_csrf_refusals_change_nothing(
    server: InProcessServer, reviewer: httpx.AsyncClient, fields: dict[str, str], headers: dict[str, str]
) -> None:
    decision_id = await escalate(server)
    csrf = await csrf_of(reviewer)
    data = {key: csrf if value == "CSRF" else value for key, value in fields.items()}
    response = await reviewer.post(
        f"/console/decisions/{decision_id}/review", data={**data, "decision": "approve"}, headers=headers
    )
    assert response.status_code == 403
    assert messages(response.text) == [("alert", CSRF_REFUSED)]
    assert await _status(server, decision_id) == "pending"


async def test_the_csrf_token_of_another_session_is_refused(
    server: InProcessServer, reviewer: httpx.AsyncClient, reviewer_key: str
) -> None:
    decision_id = await escalate(server)
    async with browser(server) as other:
        await sign_in(other, reviewer_key)
        foreign = await csrf_of(other)
    assert foreign != await csrf_of(reviewer)
    response = await reviewer.post(
        f"/console/decisions/{decision_id}/review", data={"csrf_token": foreign, "decision": "approve"}
    )
    assert response.status_code == 403
    assert await _status(server, decision_id) == "pending"


async def test_the_csrf_header_works_for_scripts(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    decision_id = await escalate(server)
    csrf = await csrf_of(reviewer)
    response = await reviewer.post(
        f"/console/decisions/{decision_id}/review",
        data={"decision": "deny"},
        headers={"X-CSRF-Token": csrf, "Origin": "http://testserver"},
    )
    assert response.status_code == 303
    assert await _status(server, decision_id) == "denied"


async def test_a_post_without_a_session_changes_nothing(server: InProcessServer) -> None:
    decision_id = await escalate(server)
    async with browser(server) as anonymous:
        response = await anonymous.post(
            f"/console/decisions/{decision_id}/review", data={"csrf_token": "0" * 64, "decision": "approve"}
        )
    assert response.status_code == 303 and response.headers["location"] == "/console/sign-in"
    assert await _status(server, decision_id) == "pending"


async def test_a_read_only_key_sees_but_cannot_review(server: InProcessServer) -> None:
    decision_id = await escalate(server)
    key = await server.acreate_key("reader", ["governance:read"])
    async with browser(server) as reader:
        await sign_in(reader, key)
        page = await reader.get("/console/inbox")
        assert page.status_code == 200
        item = _article(page.text, decision_id)
        assert ">Approve</button>" not in item and "lacks governance:review" in item
        csrf = await csrf_of(reader, "/console/inbox")
        refused = await reader.post(
            f"/console/decisions/{decision_id}/review", data={"csrf_token": csrf, "decision": "approve"}
        )
    assert refused.status_code == 403
    assert "'governance:review'" in messages(refused.text)[0][1]
    assert await _status(server, decision_id) == "pending"


async def test_self_review_is_refused(server: InProcessServer) -> None:
    decision_id = await escalate(server)  # proposed with the server's admin key
    async with browser(server) as proposer:
        await sign_in(proposer, server.api_key)
        csrf = await csrf_of(proposer)
        await proposer.post(
            f"/console/decisions/{decision_id}/review", data={"csrf_token": csrf, "decision": "approve"}
        )
        ((kind, text),) = messages((await proposer.get("/console/inbox")).text)
    assert kind == "alert"
    assert text.startswith(f"You may not review this request: Decision {decision_id} was proposed with this API key")
    assert await _status(server, decision_id) == "pending"


async def test_a_reviewer_named_like_the_actor_is_refused(server: InProcessServer) -> None:
    decision_id = await escalate(server, actor="Agent-1")
    key = await server.acreate_key("agent-1", ["governance:review"])
    async with browser(server) as actor:
        await sign_in(actor, key)
        csrf = await csrf_of(actor)
        await actor.post(f"/console/decisions/{decision_id}/review", data={"csrf_token": csrf, "decision": "approve"})
        ((kind, text),) = messages((await actor.get("/console/inbox")).text)
    assert kind == "alert" and text.startswith("You may not review this request: The reviewer 'agent-1' is the actor")
    assert await _status(server, decision_id) == "pending"


async def test_two_reviewers_racing_get_one_winner(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    decision_id = await escalate(server)
    second_key = await server.acreate_key("sam-reviewer", ["governance:review"])
    async with browser(server) as second:
        await sign_in(second, second_key)
        first_csrf, second_csrf = await csrf_of(reviewer), await csrf_of(second)  # both pages show the item
        await reviewer.post(
            f"/console/decisions/{decision_id}/review", data={"csrf_token": first_csrf, "decision": "approve"}
        )
        await second.post(
            f"/console/decisions/{decision_id}/review", data={"csrf_token": second_csrf, "decision": "deny"}
        )
        loser = messages((await second.get("/console/inbox")).text)
    assert messages((await reviewer.get("/console/inbox")).text)[0][0] == "status"
    assert loser == [("alert", "Already decided by another reviewer (status: approved).")]
    decision = await server.service.get_decision(decision_id)
    assert decision.review is not None and decision.review.reviewer == "rita-reviewer"


async def test_an_expired_request_says_so(server: InProcessServer, reviewer: httpx.AsyncClient, clock: Clock) -> None:
    decision_id = await escalate(server)
    csrf = await csrf_of(reviewer)
    clock.advance(601)
    await reviewer.post(f"/console/decisions/{decision_id}/review", data={"csrf_token": csrf, "decision": "approve"})
    ((kind, text),) = messages((await reviewer.get("/console/inbox")).text)
    assert kind == "alert" and "(status: expired)" in text


async def test_review_of_an_unknown_decision(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    csrf = await csrf_of(reviewer)
    response = await reviewer.post("/console/decisions/dec_nope/review", data={"csrf_token": csrf, "decision": "deny"})
    assert response.status_code == 303
    assert messages((await reviewer.get("/console/inbox")).text) == [("alert", "There is no decision dec_nope.")]


async def test_a_planted_message_cookie_is_ignored(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    import base64
    import json

    payload = base64.urlsafe_b64encode(json.dumps({"k": "status", "t": "Approved everything"}).encode()).decode()
    reviewer.cookies.set("aegis_console_flash", f"{payload}.{'0' * 64}", domain="testserver", path="/console")
    assert messages((await reviewer.get("/console/inbox")).text) == []


async def test_oversized_or_odd_forms_are_refused(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    decision_id = await escalate(server)
    path = f"/console/decisions/{decision_id}/review"
    big = await reviewer.post(
        path, content=b"a=" + b"x" * 70_000, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert big.status_code == 413
    odd = await reviewer.post(path, json={"decision": "approve"})
    assert odd.status_code in (403, 415)
    assert await _status(server, decision_id) == "pending"
