"""One-shot messages after an action (Post/Redirect/Get): the POST sets a short-lived signed cookie, the
next page shows the message once and drops it. Signed with the server secret, so nobody can plant a
message; the text is escaped like everything else a template shows."""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass
from typing import Literal

from fastapi import Request
from fastapi.responses import Response

from aegis_server.console.sessions import COOKIE_PATH, cached_secret, console_secret, sign

__all__ = ["FLASH_COOKIE", "Flash", "read_flash", "set_flash"]

FLASH_COOKIE = "aegis_console_flash"
_PURPOSE = "aegis-console-flash"
_MAX_TEXT = 1000


@dataclass(frozen=True)
class Flash:
    """A message: `kind` "status" (success, role=status) or "alert" (a refusal, role=alert)."""

    kind: Literal["status", "alert"]
    text: str


async def set_flash(request: Request, response: Response, kind: Literal["status", "alert"], text: str) -> None:
    """Show `text` on the next console page this browser opens (within 60 s)."""
    payload = base64.urlsafe_b64encode(json.dumps({"k": kind, "t": text[:_MAX_TEXT]}).encode("utf-8")).decode()
    value = f"{payload}.{sign(await console_secret(request), _PURPOSE, payload)}"
    response.set_cookie(FLASH_COOKIE, value, max_age=60, path=COOKIE_PATH, httponly=True, samesite="strict")


def read_flash(request: Request) -> Flash | None:
    """The message waiting for this request, if its signature holds (the renderer drops the cookie)."""
    value = request.cookies.get(FLASH_COOKIE)
    secret = cached_secret(request)
    if not value or "." not in value or len(value) > 4096 or secret is None:
        return None
    payload, signature = value.rsplit(".", 1)
    if not hmac.compare_digest(signature.encode(), sign(secret, _PURPOSE, payload).encode()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (ValueError, UnicodeDecodeError):
        return None
    kind, text = data.get("k"), data.get("t")
    if kind not in ("status", "alert") or not isinstance(text, str):
        return None
    return Flash(kind=kind, text=text)
