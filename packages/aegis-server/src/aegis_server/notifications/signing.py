"""Standard Webhooks signatures (https://www.standardwebhooks.com): the headers of one attempt, signed
with the endpoint's `whsec_` secret by the `standardwebhooks` package, so receivers verify with theirs."""

from __future__ import annotations

from datetime import datetime

from standardwebhooks import Webhook

from aegis_server import __version__

__all__ = ["USER_AGENT", "signed_headers"]

USER_AGENT = f"aegis-server/{__version__}"


def signed_headers(secret: str, event_id: str, body: bytes, sent_at: datetime) -> dict[str, str]:
    """The headers of an attempt to deliver `body`: `webhook-id` (the event's id, the same on every retry),
    `webhook-timestamp` (`sent_at`, whole seconds) and `webhook-signature` over both and the body."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, sent_at, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
