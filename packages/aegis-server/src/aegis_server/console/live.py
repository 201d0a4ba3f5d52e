"""The inbox's live updates: Server-Sent Events at `/console/inbox/stream`.

The stream sends the rendered list (event `inbox`) whenever the set of pending reviews changes. It wakes
when this process commits webhook events (`Database.add_event_listener`: an escalation, a review, an
expiry) and re-reads every `long_poll_recheck_seconds` anyway (other replicas write too); a comment line
every 15 s keeps proxies from closing an idle stream. It ends (event `signed-out`) when the session
expires, is signed out or its key loses access, and stops at once when the client goes away (Starlette
cancels the generator; the listener is removed in `finally`, so nothing leaks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from aegis_server.console.inbox import InboxView, inbox_view, render_inbox_list
from aegis_server.console.sessions import COOKIE_NAME, ConsoleUser, now_of, session_hash, signed_in
from aegis_server.security import SCOPE_ADMIN, SCOPE_READ, SCOPE_REVIEW
from aegis_server.settings import Settings
from aegis_server.store import Store

__all__ = ["HEARTBEAT_SECONDS", "LiveStreams", "router", "sse_event", "wake_streams"]

logger = logging.getLogger("aegis_server.console")
router = APIRouter()

HEARTBEAT_SECONDS = 15.0
_VIEW_SCOPES = frozenset({SCOPE_READ, SCOPE_REVIEW, SCOPE_ADMIN})


class LiveStreams:
    """The wake-up events of this process's open streams (a sign-out wakes them to end at once)."""

    def __init__(self) -> None:
        self.events: set[asyncio.Event] = set()

    def wake(self) -> None:
        for event in list(self.events):
            event.set()


def streams_of(app: FastAPI) -> LiveStreams:
    streams = getattr(app.state, "console_streams", None)
    if not isinstance(streams, LiveStreams):
        streams = app.state.console_streams = LiveStreams()
    return streams


def wake_streams(app: FastAPI) -> None:
    """Make every open stream re-check its session and the inbox now."""
    streams_of(app).wake()


def sse_event(event: str, data: str) -> str:
    """One event in the text/event-stream format (each line of `data` its own `data:` line)."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n"


def _fingerprint(view: InboxView) -> tuple[int, tuple[str, ...]]:
    return view.total, tuple(item.decision.decision_id for item in view.items)


async def _still_allowed(request: Request, digest: str) -> bool:
    store: Store = request.app.state.store
    session = await store.console_sessions.find_session(digest)
    if session is None or session.api_key is None or session.expires_at <= now_of(request):
        return False
    return bool(_VIEW_SCOPES & set(session.api_key.scopes))


async def _events(request: Request, user: ConsoleUser, digest: str) -> AsyncIterator[str]:
    store: Store = request.app.state.store
    settings: Settings = request.app.state.settings
    recheck = settings.long_poll_recheck_seconds
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    streams = streams_of(request.app)
    streams.events.add(wake)
    store.database.add_event_listener(wake.set)
    try:
        yield f"retry: {int(max(recheck, 1.0) * 2000)}\n\n"
        sent: tuple[int, tuple[str, ...]] | None = None
        last_write = loop.time()
        while True:
            if not await _still_allowed(request, digest):
                yield sse_event("signed-out", "Your session ended. Sign in again.")
                return
            view = await inbox_view(request)
            fingerprint = _fingerprint(view)
            if fingerprint != sent:
                yield sse_event("inbox", render_inbox_list(request, view, user))
                sent, last_write = fingerprint, loop.time()
            elif loop.time() - last_write >= HEARTBEAT_SECONDS:
                yield ": heartbeat\n\n"
                last_write = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=recheck)
            wake.clear()
    finally:
        store.database.remove_event_listener(wake.set)
        streams.events.discard(wake)


@router.get("/inbox/stream")
async def inbox_stream(
    request: Request, user: Annotated[ConsoleUser, Depends(signed_in(SCOPE_READ, SCOPE_REVIEW))]
) -> StreamingResponse:
    digest = session_hash(request.cookies.get(COOKIE_NAME, ""))
    return StreamingResponse(
        _events(request, user, digest),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"},
    )
