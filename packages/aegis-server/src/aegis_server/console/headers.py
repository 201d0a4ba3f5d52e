"""The headers every console response carries (pages, error pages and redirects alike)."""

from __future__ import annotations

from fastapi.responses import RedirectResponse, Response

__all__ = ["CONTENT_SECURITY_POLICY", "see_other", "with_security_headers"]

# Scripts only from the console's own files; inline styles are allowed (a page's <style> block, the style
# attributes of server-rendered SVG charts): every value a template writes is escaped, and a style cannot run code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def with_security_headers(response: Response) -> Response:
    """`response` with the console's headers: its CSP, no caching, no framing, no sniffing."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def see_other(location: str) -> RedirectResponse:
    """A 303 to `location` (a path of the console) with the console's headers."""
    response = RedirectResponse(location, status_code=303)
    with_security_headers(response)
    return response
