"""The client's life: injected, or created at the app's startup and closed at its shutdown (after the
queued execution reports were flushed), and `install`'s wiring of an existing app's lifespan and error handler."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.types import Lifespan

from aegis_fastapi._errors import AegisRefusal, ErrorResponse
from aegis_sdk import AsyncAegisClient


class ClientLifecycle:
    """The `AsyncAegisClient` of one `Aegis`: the injected one, or one per running lifespan(s)."""

    def __init__(self, injected: AsyncAegisClient | None, options: dict[str, Any]) -> None:
        self._injected = injected
        self._client = injected
        self._options = options
        self._lifespans = 0

    @property
    def client(self) -> AsyncAegisClient:
        if self._client is None:
            raise RuntimeError(
                "The AEGIS client is not started. Run the app's lifespan (FastAPI(lifespan=aegis.lifespan) or "
                "aegis.install(app); note that httpx.ASGITransport does not run lifespans), or pass "
                "Aegis(client=...), or override the dependency: app.dependency_overrides[aegis.get_client]."
            )
        return self._client

    @contextlib.asynccontextmanager
    async def running(self, drain: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
        """Create the client if none is there; when the last lifespan ends, `drain` (flush the queued execution
        reports) then close the client created here (an injected client is left open, its reports flushed)."""
        if self._client is None:
            self._client = AsyncAegisClient(**self._options)
        self._lifespans += 1
        try:
            yield
        finally:
            self._lifespans -= 1
            if self._lifespans == 0:
                await drain()
                client = self._client
                if client is not None and client is not self._injected:
                    self._client = self._injected
                    await client.aclose()


def wrap_lifespan(app: FastAPI, outer: Callable[[Any], contextlib.AbstractAsyncContextManager[None]]) -> None:
    """Run `outer` around the app's own lifespan (which keeps its state)."""
    inner: Lifespan[Any] = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with outer(app_), inner(app_) as state:
            yield state

    app.router.lifespan_context = lifespan


def handle_refusals(app: FastAPI, render: ErrorResponse) -> None:
    """Answer every `AegisRefusal` of the app with `render`."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AegisRefusal)
        return render(exc)

    app.add_exception_handler(AegisRefusal, handler)


__all__ = ["ClientLifecycle", "handle_refusals", "wrap_lifespan"]
