"""What a webhook endpoint may be: the checks of its fields (each failure a `WebhookInputError` naming the
field and how to fix it), the event types and body formats, and new signing secrets."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from aegis_server.store.outbox import EVENT_TYPES

__all__ = [
    "ALL_EVENTS",
    "BODY_FORMATS",
    "DELIVERY_STATUSES",
    "WEBHOOK_TEST",
    "WebhookInputError",
    "check_capability_glob",
    "check_description",
    "check_event_types",
    "check_format",
    "check_min_risk",
    "check_url",
    "new_webhook_secret",
]

WEBHOOK_TEST = "webhook.test"
ALL_EVENTS = "*"
BODY_FORMATS: tuple[str, ...] = ("standard", "slack")
DELIVERY_STATUSES: tuple[str, ...] = ("pending", "delivered", "failed")
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret
_MAX_URL = 2000
_MAX_TEXT = 200


class WebhookInputError(ValueError):
    """A webhook endpoint field that cannot be stored; `field` names it, the message says how to fix it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def check_url(url: str) -> str:
    """An http(s) URL with a host and no credentials, or `WebhookInputError`."""
    url = url.strip()
    if not url or len(url) > _MAX_URL:
        raise WebhookInputError("url", f"the URL must be 1 to {_MAX_URL} characters")
    if any(ch.isspace() for ch in url):
        raise WebhookInputError("url", "the URL must not contain spaces; percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError:
        raise WebhookInputError("url", "the URL is malformed (check the host and the port)") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookInputError("url", "the URL must start with http:// or https://")
    if not parts.hostname:
        raise WebhookInputError("url", "the URL needs a host, e.g. https://hooks.example.com/aegis")
    if parts.username is not None or parts.password is not None:
        raise WebhookInputError(
            "url", "the URL must not carry credentials (user:password@); receivers verify the signature instead"
        )
    if parts.fragment:
        raise WebhookInputError("url", "the URL must not have a #fragment (it is never sent)")
    del port
    try:
        httpx.Request("POST", url)  # what the dispatcher will send to: the same encoder must accept it
    except Exception as exc:  # InvalidURL, or the IDNA codec's own error for a malformed A-label
        raise WebhookInputError("url", f"the URL cannot be requested: {exc}") from None
    return url


def check_event_types(event_types: Sequence[str]) -> tuple[str, ...]:
    """A non-empty list of known event types, or `["*"]` for all of them."""
    types = tuple(dict.fromkeys(t.strip() for t in event_types))
    known = ", ".join(EVENT_TYPES)
    if not types:
        raise WebhookInputError("event_types", f'give at least one event type ({known}), or ["*"] for all')
    if ALL_EVENTS in types:
        if len(types) > 1:
            raise WebhookInputError("event_types", '"*" means every event type; send it alone')
        return types
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise WebhookInputError(
            "event_types", f"unknown event type(s) {', '.join(repr(t) for t in unknown)}; choose from {known}, or *"
        )
    return types


def check_capability_glob(glob: str | None) -> str | None:
    if glob is None:
        return None
    glob = glob.strip()
    if not 1 <= len(glob) <= _MAX_TEXT:
        raise WebhookInputError(
            "capability", f"the capability filter must be a glob of 1 to {_MAX_TEXT} characters, e.g. refunds.*"
        )
    return glob


def check_min_risk(min_risk: float | None) -> float | None:
    if min_risk is None:
        return None
    if not 0.0 <= min_risk <= 1.0:
        raise WebhookInputError("min_risk", "min_risk must be between 0 and 1 (a decision's risk score)")
    return float(min_risk)


def check_format(body_format: str) -> str:
    if body_format not in BODY_FORMATS:
        raise WebhookInputError("format", f"format must be one of {', '.join(BODY_FORMATS)}")
    return body_format


def check_description(description: str) -> str:
    description = description.strip()
    if len(description) > _MAX_TEXT:
        raise WebhookInputError("description", f"the description must be at most {_MAX_TEXT} characters")
    return description
