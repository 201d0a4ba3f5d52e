"""The reviewer console: server-rendered pages under `/console` for the people who review escalations.

`console_router(settings)` is the router of every console page; `install_console(app, settings)` adds it
to the app with the static files and the handler that turns `ConsoleInterrupt` (a redirect to sign in, a
refusal page) into its response. Page modules expose `router = APIRouter()` without a prefix:

```python
@router.get("/audit")
async def audit_page(request: Request, user: Annotated[ConsoleUser, Depends(signed_in(SCOPE_AUDIT))]) -> Response:
    return render(request, "audit.html", {"records": ...}, user=user)  # extends base.html: blocks title, content


@router.post("/audit/verify")
async def verify(request: Request, user: Annotated[ConsoleUser, Depends(csrf_protected(SCOPE_AUDIT))]) -> Response:
    fields = await console_form(request)  # the posted form, read once by the CSRF check
    response = see_other("/console/audit")
    await set_flash(request, response, "status", "The audit chain is intact.")  # shown once on the next page
    return response
```
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from aegis_server.console import (
    audit_page,
    decision_page,
    inbox,
    live,
    overview,
    policies_page,
    policy_history_page,
    policy_rollback_page,
    replay_page,
    sign_in,
    webhooks_page,
)
from aegis_server.console.rendering import error_page
from aegis_server.console.sessions import ConsoleInterrupt, ConsoleUser, csrf_protected, current_user, signed_in
from aegis_server.settings import Settings

__all__ = ["ConsoleInterrupt", "ConsoleUser", "console_router", "csrf_protected", "install_console", "signed_in"]

STATIC_DIR = Path(__file__).with_name("static")


def console_router(settings: Settings) -> APIRouter:
    """Every console page, under `/console` (kept out of the OpenAPI document)."""
    router = APIRouter(prefix="/console", include_in_schema=False)
    router.add_api_route("", sign_in.console_home, methods=["GET"])
    router.include_router(sign_in.router)
    router.include_router(inbox.router)
    router.include_router(live.router)
    router.include_router(decision_page.router)
    router.include_router(overview.router)
    router.include_router(audit_page.router)
    router.include_router(policies_page.router)
    router.include_router(policy_history_page.router)
    router.include_router(policy_rollback_page.router)
    router.include_router(replay_page.router)
    router.include_router(webhooks_page.router)
    return router


async def _not_found(request: Request) -> Response:
    try:
        user = await current_user(request)
    except ConsoleInterrupt:
        user = None
    return error_page(request, 404, "There is no such page in the console. Check the address.", user=user)


async def _interrupted(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleInterrupt)
    return exc.response


def install_console(app: FastAPI, settings: Settings) -> None:
    """Serve the console on `app`: its pages, `/console/static/...` and its redirect/refusal handler."""
    app.add_exception_handler(ConsoleInterrupt, _interrupted)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(console_router(settings))
    # After every console page (so a page router added to console_router is never shadowed): any other GET
    # under /console is the console's own 404 page.
    app.add_api_route("/console/{path:path}", _not_found, methods=["GET"], include_in_schema=False)
