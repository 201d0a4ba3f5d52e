"""The decision page: the decision, its review, its token state (never the token), its execution report
and its audit trail (for audit:read keys); a 404 page for an unknown id; scopes."""

from __future__ import annotations

import httpx
from console_support import browser, csrf_of, escalate, messages, proposal, sign_in

from aegis_server.inprocess import InProcessServer


async def _approve_and_run(server: InProcessServer, reviewer_key: str, decision_id: str) -> tuple[str, str]:
    """Approve `decision_id` through the API, confirm it as the agent and report its execution: (token, child)."""
    async with server.async_http_client(reviewer_key) as api:
        approved = await api.post(f"/api/v1/governance/decisions/{decision_id}/review", json={"approve": True})
    assert approved.status_code == 200, approved.text
    async with server.async_http_client() as agent:
        token = (await agent.get(f"/api/v1/governance/decisions/{decision_id}")).json()["confirmation_token"]
        child = await agent.post(
            "/api/v1/governance/propose", json={**proposal(card_number="4111111111111111"), "confirmation_token": token}
        )
        assert child.status_code == 200 and child.json()["outcome"] == "ALLOW", child.text
        child_id = child.json()["decision_id"]
        report = await agent.post(
            f"/api/v1/governance/decisions/{child_id}/execution",
            json={"status": "SUCCESS", "result": {"secret_output": "s3cr3t"}, "duration_ms": 12.5},
        )
        assert report.status_code in (200, 201), report.text
    return token, child_id


async def test_a_pending_decision(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    decision_id = await escalate(server, card_number="4111111111111111")
    page = await reviewer.get(f"/console/decisions/{decision_id}")
    assert page.status_code == 200
    text = page.text
    assert f"Decision <code>{decision_id}</code>" in text
    assert "Outcome: ESCALATE" in text and "baseline/big-transfer" in text
    assert "<dt>Status</dt><dd>pending</dd>" in text
    assert '<time datetime="2030-01-01T12:10:00Z">10 min left</time>' in text
    assert ">Approve</button>" in text and 'value="/console/decisions/' in text
    assert "4111111111111111" not in text and "redacted (sensitive)" in text
    assert "No confirmation or approval token was issued" in text
    # rita-reviewer has no audit:read: the trail is withheld, as the API withholds it
    assert "lacks the scope 'audit:read' that the audit trail needs" in text


async def test_review_from_the_decision_page_comes_back_to_it(
    server: InProcessServer, reviewer: httpx.AsyncClient
) -> None:
    decision_id = await escalate(server)
    csrf = await csrf_of(reviewer, f"/console/decisions/{decision_id}")
    response = await reviewer.post(
        f"/console/decisions/{decision_id}/review",
        data={"csrf_token": csrf, "decision": "deny", "note": "no", "return_to": f"/console/decisions/{decision_id}"},
    )
    assert response.headers["location"] == f"/console/decisions/{decision_id}"
    page = (await reviewer.get(f"/console/decisions/{decision_id}")).text
    assert messages(page)[0] == ("status", f"Denied {decision_id}.")
    assert "<dt>Status</dt><dd>denied</dd>" in page and "<dt>Note</dt><dd>no</dd>" in page
    assert ">Approve</button>" not in page


async def test_token_state_execution_and_trail(server: InProcessServer, reviewer_key: str) -> None:
    decision_id = await escalate(server, card_number="4111111111111111")
    token, child_id = await _approve_and_run(server, reviewer_key, decision_id)
    auditor_key = await server.acreate_key("ada-auditor", ["governance:read", "audit:read"])
    async with browser(server) as auditor:
        await sign_in(auditor, auditor_key)
        parent = (await auditor.get(f"/console/decisions/{decision_id}")).text
        child = (await auditor.get(f"/console/decisions/{child_id}")).text
    for page in (parent, child):
        assert token not in page
        assert "4111111111111111" not in page
        assert "s3cr3t" not in page  # the execution's result stays out of the page
    assert "<dt>Issued</dt><dd>yes" in parent
    assert f'<dt>Used</dt><dd>yes, by <a href="/console/decisions/{child_id}">' in parent
    assert "<td>proposal</td>" in parent and "<td>decision</td>" in parent and "<td>review</td>" in parent
    assert '<th scope="col">Event</th>' in parent
    assert f'<a href="/console/decisions/{decision_id}"><code>{decision_id}</code></a>' in child  # it confirms
    assert "<dt>Status</dt><dd>SUCCESS</dd>" in child and "12.5 ms" in child
    assert "recorded (not shown here" in child
    assert "<td>execution</td>" in child


async def test_unknown_decision_is_a_404_page(server: InProcessServer, reviewer: httpx.AsyncClient) -> None:
    for decision_id in ("dec_unknown", "x" * 300, "<script>"):
        page = await reviewer.get(f"/console/decisions/{decision_id}")
        assert page.status_code == 404
        assert messages(page.text)[0][0] == "alert" and "There is no decision" in page.text
        assert "<script>" not in page.text.split("<main", 1)[1]


async def test_decision_page_needs_a_read_scope(server: InProcessServer) -> None:
    decision_id = await escalate(server)
    key = await server.acreate_key("auditor-only", ["audit:read"])
    async with browser(server) as client:
        await sign_in(client, key)
        page = await client.get(f"/console/decisions/{decision_id}")
    assert page.status_code == 403
    assert "&#39;governance:read&#39; or &#39;governance:review&#39;" in page.text
