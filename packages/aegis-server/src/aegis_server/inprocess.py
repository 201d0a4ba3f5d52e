"""Run the AEGIS platform inside your process — no socket, no port — for tests, notebooks and demos.

```python
from aegis_server.inprocess import InProcessServer

with InProcessServer(policy_paths=["examples/policies"]) as server:      # sync: a private loop thread
    client = server.client()                      # aegis_sdk.AegisClient wired to the app
    decision = client.propose(actor={"id": "a1"}, action={"capability": "database.query"})

async with InProcessServer(policy_paths=["examples/policies"]) as server:  # async: the current loop
    client = server.async_client()                # aegis_sdk.AsyncAegisClient wired to the app
```

`with` runs the app (its lifespan, the store, the expiry task) on a private event-loop thread; both
`client()` and `async_client()` work there (the async transport forwards each request to that loop).
`async with` runs the app on the caller's loop; use `async_client()` there (a sync client would block the
very loop that must answer it, so `client()` raises and says so). The store is SQLite in a temporary
folder (deleted on exit) unless `db_url` is given, and an `admin` API key bound to any actor (`*`) is
created (`server.api_key`). That key may not review what it proposed (separation of duties): make a
reviewer key with `create_key`, or pass `allow_self_review=True` for a quick experiment.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from fastapi import FastAPI

from aegis_server.app import AegisAPI, create_app
from aegis_server.settings import Settings

if TYPE_CHECKING:
    from aegis_sdk import AegisClient, AsyncAegisClient
    from aegis_server.governance.service import GovernanceService
    from aegis_server.store import Store

T = TypeVar("T")
_NO_TIMEOUT = httpx.Timeout(None)  # in-process calls cannot hang on a network; the SDK's own timeout still applies

ENDPOINT = "http://aegis.inprocess"
"""The endpoint the in-process clients use; no name is resolved, nothing leaves the process."""


class _ForwardingAsyncTransport(httpx.AsyncBaseTransport):
    """Runs each request on the server's loop (another thread) and awaits the answer on the caller's."""

    def __init__(self, app: FastAPI, loop: asyncio.AbstractEventLoop) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._loop = loop

    async def _on_server_loop(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
        request = httpx.Request(method, url, headers=headers, content=body)
        response = await self._asgi.handle_async_request(request)
        content = await response.aread()
        return response.status_code, response.headers.raw, content

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        future = asyncio.run_coroutine_threadsafe(
            self._on_server_loop(request.method, str(request.url), request.headers.raw, body), self._loop
        )
        status, headers, content = await asyncio.wrap_future(future)
        return httpx.Response(status, headers=headers, content=content, request=request)


class _SyncTransport(httpx.BaseTransport):
    """A sync httpx transport that runs the ASGI app on the server's private loop thread."""

    def __init__(self, app: FastAPI, loop: asyncio.AbstractEventLoop) -> None:
        self._forward = _ForwardingAsyncTransport(app, loop)
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        future = asyncio.run_coroutine_threadsafe(
            self._forward._on_server_loop(request.method, str(request.url), request.headers.raw, body), self._loop
        )
        status, headers, content = future.result()
        return httpx.Response(status, headers=headers, content=content, request=request)


class InProcessServer:
    """The AEGIS app served to httpx / SDK clients without a socket. See the module docstring."""

    def __init__(
        self,
        policy_paths: Sequence[str | PathLike[str]] | None = None,
        *,
        db_url: str | None = None,
        settings: Settings | None = None,
        admin_scopes: Sequence[str] = ("admin",),
        clock: Callable[[], datetime] | None = None,
        run_background_tasks: bool = True,
        **setting_overrides: Any,
    ) -> None:
        """`policy_paths` (None: no policy files), `db_url` (None: SQLite in a temporary folder), `settings`
        (a base to start from; `policy_paths`, `db_url` and keyword overrides replace its fields)."""
        self._base_settings = settings if settings is not None else Settings(policy_paths=())
        self._policy_paths = None if policy_paths is None else tuple(Path(p) for p in policy_paths)
        self._db_url = db_url
        self._admin_scopes = tuple(admin_scopes)
        self._clock = clock
        self._run_background_tasks = run_background_tasks
        self._overrides = setting_overrides
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._app: AegisAPI | None = None
        self._api_key: str | None = None
        self._lifespan: contextlib.AbstractAsyncContextManager[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._owns_loop = False
        self._http_clients: list[httpx.Client] = []
        self._async_http_clients: list[httpx.AsyncClient] = []
        self.endpoint = ENDPOINT

    # -- lifecycle --------------------------------------------------------------------------------

    def _build_settings(self) -> Settings:
        updates: dict[str, Any] = dict(self._overrides)
        if self._policy_paths is not None or self._base_settings.policy_paths is None:
            updates["policy_paths"] = self._policy_paths or ()
        if self._db_url is not None:
            updates["db_url"] = self._db_url
        elif "db_url" not in self._overrides:
            self._tempdir = tempfile.TemporaryDirectory(prefix="aegis-inprocess-")
            updates["db_url"] = f"sqlite+aiosqlite:///{Path(self._tempdir.name) / 'aegis.db'}"
        return Settings.model_validate({**self._base_settings.model_dump(), **updates})

    async def _start(self) -> None:
        settings = self._build_settings()
        app = create_app(settings, clock=self._clock, run_background_tasks=self._run_background_tasks)
        lifespan: contextlib.AbstractAsyncContextManager[Any] = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        self._lifespan = lifespan
        self._app = app
        try:
            key, _ = await self.store.create_api_key("inprocess-admin", list(self._admin_scopes), ["*"])
        except BaseException:
            await self._stop()
            raise
        self._api_key = key

    async def _stop(self) -> None:
        for client in self._async_http_clients:
            await client.aclose()
        self._async_http_clients.clear()
        lifespan, self._lifespan = self._lifespan, None
        try:
            if lifespan is not None:
                await lifespan.__aexit__(None, None, None)
        finally:
            if self._tempdir is not None:
                self._tempdir.cleanup()
                self._tempdir = None

    def __enter__(self) -> InProcessServer:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="aegis-inprocess", daemon=True)
        thread.start()
        self._loop, self._thread, self._owns_loop = loop, thread, True
        try:
            self._run(self._start())
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for client in self._http_clients:
            client.close()
        self._http_clients.clear()
        try:
            self._run(self._stop())
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
        self._loop, self._thread, self._owns_loop = None, None, False

    async def __aenter__(self) -> InProcessServer:
        self._loop = asyncio.get_running_loop()
        self._owns_loop = False
        await self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for client in self._http_clients:
            client.close()
        self._http_clients.clear()
        await self._stop()
        self._loop = None

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop from a sync caller (`with` mode only)."""
        if self._loop is None or not self._owns_loop:
            coroutine.close()
            raise RuntimeError("the in-process server runs on your event loop; await the async API instead")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # -- what it serves ---------------------------------------------------------------------------

    @property
    def app(self) -> AegisAPI:
        if self._app is None:
            raise RuntimeError("the in-process server is not running; use `with InProcessServer(...) as server:`")
        return self._app

    @property
    def api_key(self) -> str:
        """The API key created at start (scopes: `admin_scopes`, default `admin`)."""
        if self._api_key is None:
            raise RuntimeError("the in-process server is not running; use `with InProcessServer(...) as server:`")
        return self._api_key

    @property
    def store(self) -> Store:
        store: Store = self.app.state.store
        return store

    @property
    def service(self) -> GovernanceService:
        service: GovernanceService = self.app.state.service
        return service

    def _loop_or_fail(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the in-process server is not running; use `with InProcessServer(...) as server:`")
        return self._loop

    def transport(self) -> httpx.BaseTransport:
        """A sync httpx transport to the app (`with` mode only)."""
        if not self._owns_loop:
            raise RuntimeError(
                "a sync client cannot be served from `async with InProcessServer()`: it would block the event "
                "loop that must answer it. Use server.async_client(), or `with InProcessServer()` for sync code."
            )
        return _SyncTransport(self.app, self._loop_or_fail())

    def async_transport(self) -> httpx.AsyncBaseTransport:
        """An async httpx transport to the app (either mode)."""
        if self._owns_loop:
            return _ForwardingAsyncTransport(self.app, self._loop_or_fail())
        return httpx.ASGITransport(app=self.app)

    def http_client(self, api_key: str | None = None) -> httpx.Client:
        """A raw `httpx.Client` with base URL and `Authorization` set (closed when the server stops)."""
        client = httpx.Client(
            transport=self.transport(), base_url=self.endpoint, headers=self._auth(api_key), timeout=_NO_TIMEOUT
        )
        self._http_clients.append(client)
        return client

    def async_http_client(self, api_key: str | None = None) -> httpx.AsyncClient:
        """A raw `httpx.AsyncClient` with base URL and `Authorization` set (closed when the server stops)."""
        client = httpx.AsyncClient(
            transport=self.async_transport(), base_url=self.endpoint, headers=self._auth(api_key), timeout=_NO_TIMEOUT
        )
        self._async_http_clients.append(client)
        return client

    def _auth(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key or self.api_key}"}

    def client(self, api_key: str | None = None, **kwargs: Any) -> AegisClient:
        """An `aegis_sdk.AegisClient` served by this app (`with` mode). kwargs go to the client."""
        from aegis_sdk import AegisClient

        http = httpx.Client(transport=self.transport(), timeout=_NO_TIMEOUT)
        self._http_clients.append(http)
        return AegisClient(endpoint=self.endpoint, api_key=api_key or self.api_key, http_client=http, **kwargs)

    def async_client(self, api_key: str | None = None, **kwargs: Any) -> AsyncAegisClient:
        """An `aegis_sdk.AsyncAegisClient` served by this app (either mode). kwargs go to the client."""
        from aegis_sdk import AsyncAegisClient

        http = httpx.AsyncClient(transport=self.async_transport(), timeout=_NO_TIMEOUT)
        self._async_http_clients.append(http)
        return AsyncAegisClient(endpoint=self.endpoint, api_key=api_key or self.api_key, http_client=http, **kwargs)

    def create_key(
        self,
        name: str,
        scopes: Sequence[str],
        actors: Sequence[str] | None = ("*",),
        *,
        rate_limit_per_minute: int | None = None,
    ) -> str:
        """Create another API key (`with` mode); returns the key. In `async with` mode use `acreate_key`.
        `actors`: the actor patterns it may propose for (default `*`: any actor; None: bound to none);
        `rate_limit_per_minute`: its own limit (None: the server-wide one)."""
        key, _ = self._run(
            self.store.create_api_key(name, list(scopes), actors, rate_limit_per_minute=rate_limit_per_minute)
        )
        return key

    async def acreate_key(
        self,
        name: str,
        scopes: Sequence[str],
        actors: Sequence[str] | None = ("*",),
        *,
        rate_limit_per_minute: int | None = None,
    ) -> str:
        """Create another API key from async code (either mode); arguments as for `create_key`."""
        coroutine = self.store.create_api_key(name, list(scopes), actors, rate_limit_per_minute=rate_limit_per_minute)
        if self._owns_loop:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop_or_fail())
            key, _ = await asyncio.wrap_future(future)
        else:
            key, _ = await coroutine
        return key


__all__ = ["ENDPOINT", "InProcessServer"]
