"""The outermost middleware: the request id in and out, the access log, the request metrics, and the last
net that turns any unexpected exception into a 500 envelope (logged with the request id and traceback).
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aegis_server.edge.request_id import request_id_var
from aegis_server.errors import internal_error, send_error
from aegis_server.ids import new_request_id

if TYPE_CHECKING:
    from aegis_server.metrics import Metrics

logger = logging.getLogger("aegis_server")

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContextMiddleware:
    """Outermost middleware: request id in and out, access log, request metrics, and the last net that
    turns any unexpected exception into a 500 envelope (logged with the request id and traceback)."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = None
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                presented = value.decode("latin-1")
                break
        rid = presented if presented and _REQUEST_ID_OK.match(presented) else new_request_id()
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode("latin-1"))
        status_holder = [0]
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                headers.append(rid_header)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if status_holder[0] == 0:
                await send_error(send_with_id, internal_error())
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            if self.metrics is not None:
                self.metrics.observe_request(str(scope.get("method", "")), template, status_holder[0], elapsed)
            logger.info(
                "%s %s -> %d in %.1f ms",
                scope.get("method"),
                scope.get("path"),
                status_holder[0],
                elapsed * 1000.0,
            )
            request_id_var.reset(token)


__all__ = ["RequestContextMiddleware"]
