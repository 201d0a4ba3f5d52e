"""Rendering console pages: one Jinja2 environment (autoescape on, templates read from the installed
package), the filters every page uses, and the security headers of every page.

Templates extend `base.html` and fill the blocks `title` and `content`; each gets `request`, `user`
(a ConsoleUser or None), `csrf_token`, `now` (the app's clock), `flash` (the one-shot message, if any)
and `nav` besides its own context.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context

from aegis_server.console.flash import FLASH_COOKIE, read_flash
from aegis_server.console.headers import CONTENT_SECURITY_POLICY, with_security_headers
from aegis_server.console.sessions import COOKIE_PATH, ConsoleUser, now_of
from aegis_server.security import SCOPE_ADMIN

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "environment",
    "error_page",
    "json_pretty",
    "render",
    "time_left",
    "timeago",
    "utc_text",
]

_NAV: tuple[tuple[str, str, str | None], ...] = (
    ("Inbox", "/console/inbox", None),
    ("Overview", "/console/overview", None),
    ("Audit", "/console/audit", None),
    ("Policies", "/console/policies", None),
    ("Webhooks", "/console/webhooks", SCOPE_ADMIN),
)


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        hours, rest = divmod(seconds, 3600)
        return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
    days, rest = divmod(seconds, 86400)
    return f"{days} d {rest // 3600} h" if rest >= 3600 else f"{days} d"


def timeago(value: Any, now: datetime) -> str:
    """ "3 min ago" (or "in 3 min" for a moment still ahead); "" for no time."""
    moment = _moment(value)
    if moment is None:
        return ""
    delta = (now - moment).total_seconds()
    if abs(delta) < 1:
        return "just now"
    return f"{_span(delta)} ago" if delta > 0 else f"in {_span(-delta)}"


def time_left(value: Any, now: datetime) -> str:
    """ "12 min left" until a deadline, "expired" once it passed, "" for no deadline."""
    moment = _moment(value)
    if moment is None:
        return ""
    remaining = (moment - now).total_seconds()
    return f"{_span(remaining)} left" if remaining >= 1 else "expired"


def json_pretty(value: Any) -> str:
    """JSON indented for reading (escaped by the template like any text)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def iso(value: Any) -> str:
    """The moment as ISO 8601 UTC (for `<time datetime>`), "" for none."""
    moment = _moment(value)
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if moment is not None else ""


def utc_text(value: Any) -> str:
    """The moment to the second, for reading: `2026-12-06 23:33:50 UTC` ("" for none)."""
    moment = _moment(value)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else ""


@pass_context
def _timeago(context: Context, value: Any) -> str:
    return timeago(value, context["now"])


@pass_context
def _time_left(context: Context, value: Any) -> str:
    return time_left(value, context["now"])


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("aegis_server.console", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "svg"), default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["timeago"] = _timeago
    env.filters["time_left"] = _time_left
    env.filters["json_pretty"] = json_pretty
    env.filters["iso"] = iso
    env.filters["utc_text"] = utc_text
    return env


environment = _environment()


def page_context(request: Request, user: ConsoleUser | None) -> dict[str, Any]:
    """What every template gets (also for fragments rendered without `base.html`)."""
    nav = [
        {"label": label, "href": href, "current": request.url.path.startswith(href)}
        for label, href, scope in _NAV
        if user is not None and (scope is None or user.has_scope(scope))
    ]
    return {
        "request": request,
        "user": user,
        "csrf_token": user.csrf_token if user is not None else "",
        "now": now_of(request),
        "nav": nav,
    }


def render_fragment(
    request: Request, template_name: str, context: Mapping[str, Any], *, user: ConsoleUser | None
) -> str:
    """A template rendered to a string, with the same context as a page."""
    return environment.get_template(template_name).render({**page_context(request, user), **context})


def render(
    request: Request,
    template_name: str,
    context: Mapping[str, Any],
    *,
    user: ConsoleUser | None,
    status_code: int = 200,
) -> HTMLResponse:
    """The page `template_name` as an HTML response with the console's security headers. Shows (and
    drops) the one-shot message waiting for this browser, if any."""
    flash = read_flash(request)
    html = render_fragment(request, template_name, {"flash": flash, **context}, user=user)
    response = HTMLResponse(html, status_code=status_code)
    with_security_headers(response)
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


def error_page(request: Request, status_code: int, message: str, *, user: ConsoleUser | None) -> HTMLResponse:
    """The error page: `message` in a `role="alert"` box, with the status."""
    titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 413: "Too large", 415: "Not accepted"}
    title = titles.get(status_code, "Something went wrong")
    return render(request, "error.html", {"title": title, "message": message}, user=user, status_code=status_code)
