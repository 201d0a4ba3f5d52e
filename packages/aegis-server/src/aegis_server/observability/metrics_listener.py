"""AEGIS_METRICS_LISTEN: `serve` answers /metrics on an address of its own, and only there.

`MetricsOnly` passes a `GET /metrics` to the application (marked in the scope, so the application's route
answers it: the same registry, request id, access log and, with AEGIS_METRICS_ACCESS=key, the same key
check) and answers every other path 404. `MetricsListener` serves it with uvicorn on a socket bound before
the server starts (a port in use stops `serve` with a message, not a traceback); the main server starts it
once the application is up and stops it before its own shutdown (`AegisServer.companions`). It installs no
signal handlers: SIGTERM/SIGINT belong to the main server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from aegis_server.errors import ApiError, send_error

__all__ = ["METRICS_LISTENER", "MetricsListener", "MetricsOnly", "bind"]

METRICS_LISTENER = "aegis.metrics_listener"
"""Scope key set (True) on a request that came through the separate /metrics listener."""


class MetricsOnly:
    """ASGI: /metrics to the application (marked as coming through the listener), 404 for anything else."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope.get("path") == "/metrics":
            scope[METRICS_LISTENER] = True
            await self.app(scope, receive, send)
            return
        await send_error(
            send,
            ApiError(
                404,
                "not_found",
                "not_found",
                "This address (AEGIS_METRICS_LISTEN) serves only GET /metrics; the API is on the server's main "
                "address.",
            ),
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); OSError (in use, not an address of this machine) as is."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class _QuietServer(uvicorn.Server):
    ready: asyncio.Event

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the main server handles signals and stops this one

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class MetricsListener:
    """The separate /metrics address: `start()` once the application is up, `stop()` before it shuts down."""

    def __init__(self, app: ASGIApp, config: uvicorn.Config, sock: socket.socket) -> None:
        """`app` is served behind `MetricsOnly` with `config`: the main address's (`edge_config`: the same head
        and body timers and head size limit, so this address is no softer a target)."""
        self.sock = sock
        config.app = MetricsOnly(app)
        config.lifespan = "off"  # the main server runs the application's lifespan
        self.server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        self.server.ready = asyncio.Event()
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        ready = asyncio.create_task(self.server.ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            self._task.result()  # its failure, raised here

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
