"""Console sessions, scopes and CSRF: who is signed in, what they may see, and whether a POST is theirs.

A session is a random 32-byte token in the `aegis_console` cookie (HttpOnly, SameSite=Strict, Path=/console);
the store keeps only its SHA-256, with the API key it came from and its expiry. Every request reads the
session and its key afresh, so a revoked key or a signed-out session stops working at once, and the scopes
are the key's scopes now. The CSRF token is an HMAC of the session token under the server's secret (never
stored); a POST must carry it (form field `csrf_token` or header `X-CSRF-Token`) and must not come from
another origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from aegis_server.security import SCOPE_ADMIN

if TYPE_CHECKING:
    from aegis_server.governance.service import GovernanceService
    from aegis_server.settings import Settings
    from aegis_server.store import Store

__all__ = [
    "COOKIE_NAME",
    "COOKIE_PATH",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "ConsoleInterrupt",
    "ConsoleUser",
    "cached_secret",
    "console_form",
    "console_secret",
    "csrf_protected",
    "csrf_token_for",
    "current_user",
    "end_session",
    "foreign_origin",
    "new_session_token",
    "now_of",
    "safe_next",
    "session_hash",
    "set_session_cookie",
    "sign",
    "signed_in",
    "start_session",
]

COOKIE_NAME = "aegis_console"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
MAX_FORM_BYTES = 64 * 1024
CSRF_REFUSED = "This form expired or came from another site. Reload the page and try again."


@dataclass(frozen=True)
class ConsoleUser:
    """The signed-in reviewer: their API key (never the key itself), its scopes now, the CSRF token of the
    session and when the session expires."""

    key_id: str
    name: str
    scopes: frozenset[str]
    csrf_token: str
    expires_at: datetime

    def has_scope(self, scope: str) -> bool:
        return SCOPE_ADMIN in self.scopes or scope in self.scopes

    def has_any_scope(self, scopes: tuple[str, ...]) -> bool:
        return not scopes or any(self.has_scope(scope) for scope in scopes)


class ConsoleInterrupt(Exception):
    """Ends a console request with a finished response (a redirect to sign in, a refusal page)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def session_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _service(request: Request) -> GovernanceService:
    service: GovernanceService = request.app.state.service
    return service


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def now_of(request: Request) -> datetime:
    """The app's clock (tests move it)."""
    return _service(request).clock()


def cached_secret(request: Request) -> bytes | None:
    """The server's secret if this process has read it already (every signed-in request reads it)."""
    settings: Settings = request.app.state.settings
    secret = settings.token_secret()
    if secret is not None:
        return secret
    cached = getattr(request.app.state, "console_secret", None)
    return cached if isinstance(cached, bytes) else None


async def console_secret(request: Request) -> bytes:
    """The server's secret (`settings.secret`, else the one kept in the store): the key of CSRF tokens."""
    secret = cached_secret(request)
    if secret is None:
        secret = await _store(request).get_or_create_secret()
        request.app.state.console_secret = secret
    return secret


def sign(secret: bytes, purpose: str, value: str) -> str:
    """HMAC-SHA256 of `value` for one `purpose` (csrf, flash), hex."""
    message = purpose.encode("utf-8") + b"\x00" + value.encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


async def csrf_token_for(request: Request, token: str) -> str:
    return sign(await console_secret(request), "aegis-console-csrf", token)


def safe_next(target: str | None) -> str:
    """`target` when it is a path of the console on this site, else the inbox (no open redirect)."""
    default = "/console/inbox"
    if not target or len(target) > 2000:
        return default
    if any(ch in target for ch in "\\\r\n\t") or target.startswith("//"):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not (parts.path == "/console" or parts.path.startswith("/console/")):
        return default
    if "/../" in parts.path or parts.path.endswith("/..") or "//" in parts.path:
        return default
    return target


def _own_origins(request: Request) -> set[str]:
    origins = {f"{request.url.scheme}://{request.url.netloc}".lower()}
    settings: Settings = request.app.state.settings
    if settings.public_url:
        public = urlsplit(settings.public_url)
        origins.add(f"{public.scheme}://{public.netloc}".lower())
    return origins


def foreign_origin(request: Request) -> bool:
    """True when the browser says the request came from another site (`Origin`, or `Sec-Fetch-Site`)."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False  # not a browser, or a same-origin GET; a POST from a browser always sends it
    return origin.lower() not in _own_origins(request)


def _sign_in_redirect(request: Request, *, reason: str | None) -> Response:
    target = "/console/sign-in"
    query: list[str] = []
    if request.method == "GET":
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if safe_next(path) == path and path != "/console/inbox":
            query.append("next=" + quote(path, safe="/"))
    if reason:
        query.append(f"reason={reason}")
    if query:
        target += "?" + "&".join(query)
    response = RedirectResponse(target, status_code=303)
    response.headers["Cache-Control"] = "no-store"
    if reason is not None:
        response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


async def _refusal(request: Request, status_code: int, message: str, user: ConsoleUser | None) -> ConsoleInterrupt:
    from aegis_server.console.rendering import error_page  # rendering imports this module

    return ConsoleInterrupt(error_page(request, status_code, message, user=user))


async def current_user(request: Request) -> ConsoleUser | None:
    """The signed-in user of this request, or None; raises ConsoleInterrupt (back to sign-in) for a session
    that expired or whose key was revoked. Cached on the request."""
    cached = getattr(request.state, "console_user", None)
    if isinstance(cached, ConsoleUser):
        return cached
    token = request.cookies.get(COOKIE_NAME)
    if not token or len(token) > 200:
        return None
    digest = session_hash(token)
    store = _store(request)
    session = await store.console_sessions.find_session(digest)
    if session is None:
        return None
    now = now_of(request)
    if session.expires_at <= now:
        await store.console_sessions.delete_session(digest)
        raise ConsoleInterrupt(_sign_in_redirect(request, reason="expired"))
    if session.api_key is None:
        await store.console_sessions.delete_session(digest)
        raise ConsoleInterrupt(_sign_in_redirect(request, reason="revoked"))
    key = session.api_key
    user = ConsoleUser(
        key_id=key.key_id,
        name=key.name,
        scopes=frozenset(key.scopes),
        csrf_token=await csrf_token_for(request, token),
        expires_at=session.expires_at,
    )
    request.state.console_user = user
    return user


async def _require_user(request: Request, scopes: tuple[str, ...]) -> ConsoleUser:
    user = await current_user(request)
    if user is None:
        raise ConsoleInterrupt(_sign_in_redirect(request, reason=None))
    if not user.has_any_scope(scopes):
        needed = " or ".join(repr(scope) for scope in scopes)
        raise await _refusal(
            request,
            403,
            f"Your API key {user.name!r} lacks the scope {needed} this page needs. Sign in with a key that "
            "has it (or admin).",
            user,
        )
    return user


def signed_in(*any_of_scopes: str) -> Callable[[Request], Awaitable[ConsoleUser]]:
    """A FastAPI dependency: the signed-in ConsoleUser holding one of `any_of_scopes` (none given: any key).
    No session → 303 to the sign-in page (`next` = this page); expired or revoked → the same, with the
    reason; missing scope → the 403 page naming it."""

    async def dependency(request: Request) -> ConsoleUser:
        return await _require_user(request, any_of_scopes)

    return dependency


async def _read_form(request: Request) -> dict[str, str]:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise await _refusal(request, 413, "The form is too large. Send at most 64 KiB.", None)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise await _refusal(request, 413, "The form is too large. Send at most 64 KiB.", None)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, str] = {}
    if body and content_type == "application/x-www-form-urlencoded":
        from urllib.parse import parse_qsl

        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
        except (UnicodeDecodeError, ValueError):
            refusal = await _refusal(request, 400, "The form could not be read. Reload the page and try again.", None)
            raise refusal from None
        for name, value in pairs:
            fields.setdefault(name, value)
    elif body:
        raise await _refusal(request, 415, "Send the form as application/x-www-form-urlencoded.", None)
    return fields


async def console_form(request: Request) -> dict[str, str]:
    """The POSTed form fields (first value of each), read once per request (at most 64 KiB)."""
    cached = getattr(request.state, "console_form", None)
    if isinstance(cached, dict):
        return cached
    fields = await _read_form(request)
    request.state.console_form = fields
    return fields


def csrf_protected(*any_of_scopes: str) -> Callable[[Request], Awaitable[ConsoleUser]]:
    """`signed_in` for POST routes, plus the CSRF check: a request from another origin, or without the
    session's CSRF token (form field `csrf_token` or header `X-CSRF-Token`), gets the 403 page and nothing
    runs. The form is read here; get its fields with `console_form(request)`."""

    async def dependency(request: Request) -> ConsoleUser:
        if foreign_origin(request):
            raise await _refusal(request, 403, CSRF_REFUSED, None)
        user = await current_user(request)
        if user is None:
            raise ConsoleInterrupt(_sign_in_redirect(request, reason=None))
        presented = request.headers.get(CSRF_HEADER)
        if presented is None:
            presented = (await console_form(request)).get(CSRF_FIELD)
        if not presented or not hmac.compare_digest(presented.encode("utf-8"), user.csrf_token.encode("utf-8")):
            raise await _refusal(request, 403, CSRF_REFUSED, user)
        return await _require_user(request, any_of_scopes)

    return dependency


async def start_session(request: Request, key_id: str) -> tuple[str, int]:
    """Store a new session for `key_id`; the cookie's token and its Max-Age (seconds)."""
    settings: Settings = request.app.state.settings
    token = new_session_token()
    now = now_of(request)
    lifetime = settings.console_session_seconds
    await _store(request).console_sessions.create_session(
        session_hash(token), key_id, now=now, expires_at=now + timedelta(seconds=lifetime)
    )
    return token, lifetime


def set_session_cookie(request: Request, response: Response, token: str, max_age: int) -> None:
    settings: Settings = request.app.state.settings
    secure = settings.console_secure_cookie
    if secure is None:
        secure = request.url.scheme == "https"
    response.set_cookie(
        COOKIE_NAME, token, max_age=max_age, path=COOKIE_PATH, secure=secure, httponly=True, samesite="strict"
    )


async def end_session(request: Request) -> None:
    """Delete this request's session server-side (its cookie no longer works, even replayed)."""
    token = request.cookies.get(COOKIE_NAME)
    if token and len(token) <= 200:
        await _store(request).console_sessions.delete_session(session_hash(token))
