"""Notifications: webhook deliveries of the outbox's events (`store/outbox.py`).

- `dispatcher`: `WebhookDispatcher`, the loop that fans events out to endpoints and delivers them;
- `bodies`: the standard JSON body and the Slack message of an event;
- `signing`: the Standard Webhooks headers of an attempt.
"""

from aegis_server.notifications.bodies import build_body, slack_escape
from aegis_server.notifications.dispatcher import DEFAULT_PUBLIC_URL, WebhookDispatcher
from aegis_server.notifications.signing import USER_AGENT, signed_headers

__all__ = ["DEFAULT_PUBLIC_URL", "USER_AGENT", "WebhookDispatcher", "build_body", "signed_headers", "slack_escape"]
