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
from aegis_server.edge.http_server import EVENT_STREAM
from aegis_server.security import SCOPE_ADMIN, SCOPE_READ, SCOPE_REVIEW
from aegis_server.settings import Settings
from aegis_server.store import Store

__all__ = ["HEARTBEAT_SECONDS", "LiveStreams", "router", "sse_event", "wake_streams"]

logger = logging.getLogger("aegis_server.console")
router = APIRouter()

HEARTBEAT_SECONDS = 15.0
_VIEW_SCOPES = frozenset({SCOPE_READ, SCOPE_REVIEW, SCOPE_ADMIN})


class LiveStreams:
    """This process's open streams: their wake-up events (a sign-out wakes them to end at once), and one
    read of the inbox that every stream woken together shares, rather than one read per open stream."""

    def __init__(self) -> None:
        self.events: set[asyncio.Event] = set()
        self._generation = 0  # moves on at every commit of events and every wake: a shared read is stale then
        self._read: asyncio.Future[InboxView] | None = None
        self._read_generation = -1
        self._read_at = 0.0

    def wake(self) -> None:
        self.changed()
        for event in list(self.events):
            event.set()

    def changed(self) -> None:
        self._generation += 1

    async def inbox(self, request: Request, max_age: float) -> InboxView:
        """The inbox as read at most `max_age` seconds ago and after the last change this process saw."""
        loop = asyncio.get_running_loop()
        read = self._read
        if read is None or self._read_generation != self._generation or loop.time() - self._read_at > max_age:
            read = self._read = asyncio.ensure_future(inbox_view(request))
            read.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved even if unused
            self._read_generation, self._read_at = self._generation, loop.time()
        return await asyncio.shield(read)


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

    def committed() -> None:
        streams.changed()
        wake.set()

    streams.events.add(wake)
    store.database.add_event_listener(committed)
    try:
        yield f"retry: {int(max(recheck, 1.0) * 2000)}\n\n"
        sent: tuple[int, tuple[str, ...]] | None = None
        last_write = loop.time()
        while True:
            if not await _still_allowed(request, digest):
                yield sse_event("signed-out", "Your session ended. Sign in again.")
                return
            view = await streams.inbox(request, max_age=recheck / 2)
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
        store.database.remove_event_listener(committed)
        streams.events.discard(wake)


@router.get("/inbox/stream")
async def inbox_stream(
    request: Request, user: Annotated[ConsoleUser, Depends(signed_in(SCOPE_READ, SCOPE_REVIEW))]
) -> StreamingResponse:
    digest = session_hash(request.cookies.get(COOKIE_NAME, ""))
    setattr(request.state, EVENT_STREAM, True)  # `serve` ends it at shutdown instead of waiting for it
    return StreamingResponse(
        _events(request, user, digest),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"},
    )
