"""The bodies, built from an event alone: the same bytes every time, links to the console, Slack's
control characters escaped in what users and agents wrote."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from aegis_server.notifications.bodies import build_body, slack_escape

WHEN = datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
DATA = {
    "decision_id": "dec_1",
    "outcome": "APPROVED",
    "reason": "<@U123> & <!here> wanted it",
    "risk_score": 0.86,
    "capability": "refunds.issue",
    "actor": {"id": "support-bot-1", "type": "ai-agent"},
    "session_id": "sess-1",
    "policy_ids": ["refunds"],
    "review": {"status": "approved", "reviewer": "rita <admin>", "note": "ok & <https://evil.example|click>"},
}


def test_standard_body_is_stable_and_links_to_the_decision() -> None:
    first = build_body("standard", "review.resolved", WHEN, DATA, "https://aegis.example.test/")
    assert first == build_body("standard", "review.resolved", WHEN, DATA, "https://aegis.example.test/")
    body = json.loads(first)
    assert body["type"] == "review.resolved"
    assert body["timestamp"] == "2030-01-02T03:04:05.000006Z"
    assert body["data"]["console_url"] == "https://aegis.example.test/console/decisions/dec_1"
    assert body["data"]["reason"] == DATA["reason"]  # JSON carries it as is


def test_slack_review_resolved_escapes_user_text() -> None:
    message = json.loads(build_body("slack", "review.resolved", WHEN, DATA, "https://aegis.example.test"))
    text = message["text"]
    assert text.startswith(":white_check_mark: APPROVED by rita &lt;admin&gt;: refunds.issue by ai-agent:support-bot-1")
    assert "note: ok &amp; &lt;https://evil.example|click&gt;" in text
    assert text.endswith("— <https://aegis.example.test/console/decisions/dec_1|View>")
    assert text.count("<") == 1  # the console link is the only one


def test_slack_escalation_escapes_the_reason() -> None:
    message = json.loads(build_body("slack", "decision.escalated", WHEN, DATA, "https://aegis.example.test"))
    assert "&lt;@U123&gt; &amp; &lt;!here&gt; wanted it" in message["text"]
    assert "(risk 0.86)" in message["text"]


def test_slack_escape() -> None:
    assert slack_escape("a & b < c > d") == "a &amp; b &lt; c &gt; d"
