"""Signing in and out: an API key exchanged for a session cookie, and the session deleted again.

Login CSRF: the sign-in POST is refused when the browser says it came from another site (`Origin`,
`Sec-Fetch-Site`), and the session cookie is SameSite=Strict, so another site can neither sign a
browser in with its own key nor ride an existing session. An unknown and a revoked key get the same
answer, and failed sign-ins from one address are limited (`SignInThrottle`).
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from aegis_server.console.live import wake_streams
from aegis_server.console.rendering import error_page, render
from aegis_server.console.sessions import (
    COOKIE_NAME,
    COOKIE_PATH,
    CSRF_REFUSED,
    ConsoleInterrupt,
    ConsoleUser,
    console_form,
    csrf_protected,
    current_user,
    end_session,
    foreign_origin,
    safe_next,
    set_session_cookie,
    start_session,
)
from aegis_server.settings import Settings
from aegis_server.store import Store

__all__ = ["BAD_KEY", "SignInThrottle", "console_home", "router"]

logger = logging.getLogger("aegis_server.console")
router = APIRouter()

BAD_KEY = "That API key is not valid (unknown or revoked)."
_NOTICES = {
    "expired": "Your session expired. Sign in again.",
    "signed_out": "You signed out.",
    "revoked": "Your API key was revoked or changed. Sign in again with a valid key.",
}


class SignInThrottle:
    """At most `limit` failed sign-ins per client address in `window` seconds (per process)."""

    def __init__(self, limit: int = 20, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, list[float]] = {}

    def _recent(self, client: str, now: float) -> list[float]:
        recent = [moment for moment in self._failures.get(client, ()) if now - moment < self.window]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return recent

    def blocked(self, client: str) -> bool:
        return len(self._recent(client, time.monotonic())) >= self.limit

    def failed(self, client: str) -> None:
        if len(self._failures) > 10_000:
            self._failures.clear()
        now = time.monotonic()
        self._failures[client] = [*self._recent(client, now), now]


def _throttle(request: Request) -> SignInThrottle:
    throttle = getattr(request.app.state, "console_sign_in_throttle", None)
    if not isinstance(throttle, SignInThrottle):
        throttle = request.app.state.console_sign_in_throttle = SignInThrottle()
    return throttle


def _session_length(settings: Settings) -> str:
    seconds = settings.console_session_seconds
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = max(1, seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _form_page(request: Request, *, next_path: str, problem: str | None, notice: str | None, status: int) -> Response:
    settings: Settings = request.app.state.settings
    context = {
        "next": next_path,
        "problem": problem,
        "notice": notice,
        "session_hours": _session_length(settings),
    }
    return render(request, "sign_in.html", context, user=None, status_code=status)


async def console_home() -> Response:
    """`/console` itself: the inbox."""
    return RedirectResponse("/console/inbox", status_code=303)


@router.get("/sign-in", include_in_schema=False)
async def sign_in_form(request: Request, next: str | None = None, reason: str | None = None) -> Response:
    return _form_page(request, next_path=safe_next(next), problem=None, notice=_NOTICES.get(reason or ""), status=200)


@router.post("/sign-in", include_in_schema=False)
async def sign_in(request: Request) -> Response:
    if foreign_origin(request):
        return error_page(request, 403, CSRF_REFUSED, user=None)
    client = request.client.host if request.client is not None else "unknown"
    throttle = _throttle(request)
    form = await console_form(request)
    next_path = safe_next(form.get("next"))
    if throttle.blocked(client):
        problem = "Too many failed sign-ins from this address. Wait a few minutes and try again."
        return _form_page(request, next_path=next_path, problem=problem, notice=None, status=429)
    presented = form.get("api_key", "").strip()
    store: Store = request.app.state.store
    api_key = await store.authenticate(presented) if presented else None
    if api_key is None:
        throttle.failed(client)
        logger.info("console sign-in refused: unknown or revoked key")
        return _form_page(request, next_path=next_path, problem=BAD_KEY, notice=None, status=401)
    token, max_age = await start_session(request, api_key.key_id)
    logger.info("console sign-in: key %s", api_key.key_id)
    response = RedirectResponse(next_path, status_code=303)
    set_session_cookie(request, response, token, max_age)
    return response


@router.post("/sign-out", include_in_schema=False)
async def sign_out(request: Request) -> Response:
    # Signing out needs the session's CSRF token too (else another site could sign a reviewer out); a
    # session that is already gone just lands on the sign-in page.
    try:
        user: ConsoleUser | None = await current_user(request)
    except ConsoleInterrupt:  # expired or revoked: the session is gone already
        user = None
    if user is not None:
        await csrf_protected()(request)
        await end_session(request)
        wake_streams(request.app)  # its live streams end now, not at their next re-check
        logger.info("console sign-out: key %s", user.key_id)
    response = RedirectResponse("/console/sign-in?reason=signed_out", status_code=303)
    response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response
