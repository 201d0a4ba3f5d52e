"""The reviewer console: server-rendered pages under `/console` for the people who review escalations.

`console_router(settings)` is the router of every console page; `install_console(app, settings)` adds it
to the app with the static files and the handler that turns `ConsoleInterrupt` (a redirect to sign in, a
refusal page) into its response. Page modules expose `router = APIRouter()` without a prefix.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from aegis_server.console import audit_page, decision_page, inbox, live, overview, policies_page, sign_in
from aegis_server.console.sessions import ConsoleInterrupt, ConsoleUser, csrf_protected, signed_in
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
    return router


async def _interrupted(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleInterrupt)
    return exc.response


def install_console(app: FastAPI, settings: Settings) -> None:
    """Serve the console on `app`: its pages, `/console/static/...` and its redirect/refusal handler."""
    app.add_exception_handler(ConsoleInterrupt, _interrupted)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(console_router(settings))
