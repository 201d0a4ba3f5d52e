"""The bodies of webhook deliveries, built from the outbox event alone (its data and its time), so every
attempt of one delivery sends the same bytes.

- `standard`: `{"type", "timestamp", "data": {...the event's data, "console_url"}}`, the Standard Webhooks
  shape.
- `slack`: a Slack incoming-webhook message: `text` (the summary, also the notification's text) and
  `blocks` (the summary, the details and a button to the console). Text that users or agents chose (the
  reason, the capability, the actor, the reviewer's note) has Slack's `&`, `<` and `>` escaped, so it
  cannot forge links or mentions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aegis_server.store.outbox import DECISION_DENIED, DECISION_ESCALATED, REVIEW_EXPIRED, REVIEW_RESOLVED
from aegis_server.store.rows import format_timestamp
from aegis_server.store.webhooks import WEBHOOK_TEST

__all__ = ["build_body", "console_url", "slack_escape", "slack_message", "standard_body"]

_MAX_TEXT = 400


def console_url(public_url: str, event_type: str, data: Mapping[str, Any]) -> str:
    """Where a person looks at the event: the decision's console page (the webhooks page for a test)."""
    base = public_url.rstrip("/")
    decision_id = data.get("decision_id")
    if event_type == WEBHOOK_TEST or not isinstance(decision_id, str) or not decision_id:
        return f"{base}/console/webhooks"
    return f"{base}/console/decisions/{quote(decision_id, safe='')}"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def standard_body(event_type: str, created_at: datetime, data: Mapping[str, Any], public_url: str) -> bytes:
    return _json(
        {
            "type": event_type,
            "timestamp": format_timestamp(created_at),
            "data": {**data, "console_url": console_url(public_url, event_type, data)},
        }
    )


def slack_escape(text: str) -> str:
    """Text for a Slack message: `&`, `<`, `>` escaped (Slack's control characters in mrkdwn)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _actor(data: Mapping[str, Any]) -> str:
    actor = data.get("actor") or {}
    actor_id = str(actor.get("id") or "?")
    actor_type = actor.get("type")
    return f"{actor_type}:{actor_id}" if actor_type else actor_id


def _risk(data: Mapping[str, Any]) -> str:
    risk = data.get("risk_score")
    return f"{float(risk):.2f}" if isinstance(risk, int | float) else "?"


def _shortened(text: str) -> str:
    """At most `_MAX_TEXT` characters: a Slack section holds 3,000 (escaping lengthens the text)."""
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _reason(data: Mapping[str, Any]) -> str:
    return _shortened(str(data.get("reason") or ""))


def _summary(event_type: str, data: Mapping[str, Any]) -> tuple[str, str]:
    """The message's first line (escaped, without the link) and the button's label."""
    capability = slack_escape(_shortened(str(data.get("capability") or "")))
    what = f"{capability} by {slack_escape(_shortened(_actor(data)))} (risk {_risk(data)})"
    reason = slack_escape(_reason(data))
    review = data.get("review") or {}
    if event_type == DECISION_ESCALATED:
        return f":warning: ESCALATE {what}: {reason}", "Review"
    if event_type == DECISION_DENIED:
        return f":no_entry: DENY {what}: {reason}", "View"
    if event_type == REVIEW_RESOLVED:
        status = str(review.get("status") or "resolved")
        reviewer = slack_escape(str(review.get("reviewer") or "a reviewer"))
        icon = ":white_check_mark:" if status == "approved" else ":x:"
        note = review.get("note")
        noted = f" — note: {slack_escape(_shortened(str(note)))}" if note else ""
        return f"{icon} {status.upper()} by {reviewer}: {what}{noted}", "View"
    if event_type == REVIEW_EXPIRED:
        return f":hourglass: EXPIRED (final DENY, no reviewer decided in time): {what}", "View"
    if event_type == WEBHOOK_TEST:
        return ":wave: A test message from AEGIS: this webhook endpoint is reachable.", "Open webhooks"
    return f"{slack_escape(event_type)}: {what}", "View"


def slack_message(event_type: str, data: Mapping[str, Any], public_url: str) -> dict[str, Any]:
    """The incoming-webhook message of an event (see the module docstring)."""
    link = console_url(public_url, event_type, data)
    summary, label = _summary(event_type, data)
    text = f"{summary} — <{link}|{label}>"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    decision_id = data.get("decision_id")
    if isinstance(decision_id, str) and decision_id:
        details = [f"decision `{slack_escape(decision_id)}`"]
        if data.get("session_id"):
            details.append(f"session `{slack_escape(str(data['session_id']))}`")
        policies = data.get("policy_ids") or []
        if policies:
            details.append("policies " + ", ".join(slack_escape(str(p)) for p in policies))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(details)}]})
    blocks.append(
        {
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": label}, "url": link}],
        }
    )
    return {"text": text, "blocks": blocks}


def build_body(
    body_format: str, event_type: str, created_at: datetime, data: Mapping[str, Any], public_url: str
) -> bytes:
    """The bytes to POST for an event in the endpoint's `body_format` ("standard" or "slack")."""
    if body_format == "slack":
        return _json(slack_message(event_type, data, public_url))
    return standard_body(event_type, created_at, data, public_url)
