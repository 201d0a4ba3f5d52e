"""Shadow mode and policy versions in the console: the decision page shows the version a decision was made
under and what the rules in shadow mode would have decided (only when there is something to show); the
policies page badges what is in shadow mode and shows the active version. Escaped, without inline code."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import httpx
import pytest
from console_pages_support import NOW, Browser, text_of

from aegis_sdk.models import Decision, ShadowOutcome
from aegis_server.console.headers import CONTENT_SECURITY_POLICY
from aegis_server.inprocess import InProcessServer
from aegis_server.store import NewDecision, format_timestamp

TRIAL = {
    "name": "trial",
    "mode": "shadow",
    "rules": [
        {"id": "no-reads", "capability": "database.query", "outcome": "DENY", "reason": "reads <b>off</b>"},
        {"id": "reads-ok", "capability": "database.query", "outcome": "ALLOW", "mode": "enforce", "priority": 1},
    ],
}
MIXED = {
    "name": "mixed",
    "rules": [
        {"id": "try-escalate", "capability": "files.delete", "outcome": "ESCALATE", "mode": "shadow"},
        {"id": "plain", "capability": "files.delete", "outcome": "DENY"},
    ],
}


def no_inline_code(response: httpx.Response) -> None:
    """The page keeps the CSP: no inline script or style, and the header is there."""
    html = response.text
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert " style=" not in html and "<style" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert " onclick=" not in html and "javascript:" not in html


async def add_policies(server: InProcessServer, *bodies: dict[str, Any]) -> None:
    admin = server.async_http_client()
    for body in bodies:
        response = await admin.post("/api/v1/policies", json=body)
        assert response.status_code == 201, response.text


async def propose(server: InProcessServer, capability: str, **parameters: Any) -> dict[str, Any]:
    body = {
        "actor": {"id": "agent-1", "type": "ai-agent"},
        "action": {"capability": capability, "parameters": parameters},
    }
    response = await server.async_http_client().post("/api/v1/governance/propose", json=body)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


def section(html: str, heading_id: str) -> str:
    found = re.search(rf'<section aria-labelledby="{heading_id}"[^>]*>(.*?)</section>', html, re.S)
    assert found is not None, f"no section {heading_id}"
    return found.group(1)


async def test_the_decision_page_shows_the_shadow_outcomes(server: InProcessServer, browser: Browser) -> None:
    await add_policies(server, TRIAL)
    decision = await propose(server, "database.query", query="SELECT 1")
    assert decision["outcome"] == "ALLOW" and decision["shadow"][0]["outcome"] == "DENY"
    page = await (await browser(["governance:read"])).get(f"/console/decisions/{decision['decision_id']}")
    assert page.status_code == 200
    no_inline_code(page)
    shadow = section(page.text, "shadow-heading")
    assert "never enforced" in text_of(shadow)
    row = re.search(r'<th scope="row"><code>trial/no-reads</code></th>(.*?)</tr>', shadow, re.S)
    assert row is not None
    cells = text_of(row.group(1))
    assert cells.startswith("DENY differs DENY by trial/no-reads: reads &lt;b&gt;off&lt;/b&gt;")
    assert "<b>off</b>" not in page.text  # the reason is text, not markup
    assert "Outcome: ALLOW" in page.text  # the enforced outcome is the one at the top


async def test_a_shadow_outcome_that_agrees_is_marked_the_same(server: InProcessServer, browser: Browser) -> None:
    await add_policies(server, MIXED)
    decision = await propose(server, "files.delete")
    assert decision["outcome"] == "DENY"
    page = (await (await browser(["governance:read"])).get(f"/console/decisions/{decision['decision_id']}")).text
    row = re.search(r"<code>mixed/try-escalate</code></th>(.*?)</tr>", section(page, "shadow-heading"), re.S)
    assert row is not None
    assert text_of(row.group(1)).startswith("DENY (same)")
    assert "differs" not in row.group(1)


async def test_no_shadow_section_when_there_is_none(server: InProcessServer, browser: Browser) -> None:
    decision = await propose(server, "database.query", query="SELECT 1")
    assert "shadow" not in decision and decision["policy_version"] == server.service.policies.active.version
    page = (await (await browser(["governance:read"])).get(f"/console/decisions/{decision['decision_id']}")).text
    assert "shadow-heading" not in page and "Shadow rules" not in page


async def test_no_version_line_for_a_decision_made_before_versions(
    server: InProcessServer, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = server.service.policies  # as a server before versions were recorded decided:
    monkeypatch.setattr(manager, "_active", dataclasses.replace(manager.active, version=None))
    decision = await propose(server, "database.query", query="SELECT 1")
    assert decision["policy_version"] is None
    page = (await (await browser(["governance:read"])).get(f"/console/decisions/{decision['decision_id']}")).text
    assert "Policy version" not in page


async def test_the_decision_page_shows_the_policy_version(server: InProcessServer, browser: Browser) -> None:
    at = format_timestamp(NOW)
    recorded = await server.store.record_decision(
        NewDecision(
            decision=Decision(
                decision_id="dec_versioned",
                outcome="ALLOW",
                reason="allowed",
                risk_score=0.1,
                constraints={},
                timestamp=at,
                audit_ref="",
                policy_ids=["baseline/read"],
                policy_version=7,
                shadow=[ShadowOutcome(policy_id="trial/x", outcome="ESCALATE", reason="<i>would</i> escalate")],
            ),
            actor_id="agent-1",
            capability="database.query",
            params_hash="ab" * 32,
            proposal_audit={"actor": {"id": "agent-1"}, "action": {"capability": "database.query"}},
        )
    )
    assert recorded.policy_version == 7
    page = await (await browser(["governance:read", "audit:read"])).get("/console/decisions/dec_versioned")
    assert page.status_code == 200
    no_inline_code(page)
    assert '<dt>Policy version</dt><dd><a href="/console/policies/versions/7">7</a></dd>' in page.text  # its page
    assert "&lt;i&gt;would&lt;/i&gt; escalate" in page.text and "<i>would</i>" not in page.text
    # The audit trail keeps both (the decision record's payload).
    trail = section(page.text, "trail-heading") if 'aria-labelledby="trail-heading"' in page.text else page.text
    assert "&#34;policy_version&#34;: 7" in trail and "trial/x" in trail


async def test_the_policies_page_badges_shadow_policies_and_rules(server: InProcessServer, browser: Browser) -> None:
    await add_policies(server, TRIAL, MIXED)
    page = await (await browser(["governance:read"])).get("/console/policies")
    assert page.status_code == 200
    no_inline_code(page)
    html = page.text
    trial = re.search(r"<h3[^>]*><code>trial</code>(.*?)</h3>", html, re.S)
    mixed = re.search(r"<h3[^>]*><code>mixed</code>(.*?)</h3>", html, re.S)
    baseline = re.search(r"<h3[^>]*><code>baseline</code>(.*?)</h3>", html, re.S)
    assert trial is not None and mixed is not None and baseline is not None
    assert text_of(trial.group(1)) == "shadow"
    assert "badge" not in mixed.group(1) and "badge" not in baseline.group(1)

    def rule_badge(rule_id: str) -> str:
        found = re.search(rf'<th scope="row"><code>{rule_id}</code>(.*?)</th>', html, re.S)
        assert found is not None, rule_id
        return text_of(found.group(1))

    assert rule_badge("no-reads") == "shadow"  # by its policy's mode
    assert rule_badge("reads-ok") == "enforce"  # an explicit enforce inside a shadow policy
    assert rule_badge("try-escalate") == "shadow"  # an explicit shadow rule in an enforced policy
    assert rule_badge("plain") == "" and rule_badge("big-refund") == ""
    active = server.service.policies.active
    assert active.shadow_rule_count == 2
    assert f"({active.rule_count} rules in enabled policies, 2 of them in shadow mode)" in text_of(html)


async def test_the_policies_page_shows_the_active_version(
    server: InProcessServer, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await browser(["governance:read"])
    manager = server.service.policies
    monkeypatch.setattr(manager, "_active", dataclasses.replace(manager.active, version=None))
    assert "Active version none recorded" in text_of((await client.get("/console/policies")).text)
    # The server numbers the set it activates (`dataclasses.replace(set, version=n)`); the page shows the number.
    monkeypatch.setattr(manager, "_active", dataclasses.replace(manager.active, version=12))
    text = text_of((await client.get("/console/policies")).text)
    assert "Active version 12" in text
    assert "in shadow mode" not in text  # no shadow rules: nothing said about them


async def test_a_rule_id_with_markup_is_text_on_both_pages(server: InProcessServer, browser: Browser) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    body = {
        "name": "evil",
        "mode": "shadow",
        "rules": [{"id": hostile, "capability": "files.delete", "outcome": "ALLOW"}],
    }
    await add_policies(server, body)
    decision = await propose(server, "files.delete")
    assert decision["shadow"][0]["policy_id"] == f"evil/{hostile}"
    client = await browser(["governance:read"])
    for path in (f"/console/decisions/{decision['decision_id']}", "/console/policies"):
        page = await client.get(path)
        assert page.status_code == 200
        assert hostile not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
        no_inline_code(page)
