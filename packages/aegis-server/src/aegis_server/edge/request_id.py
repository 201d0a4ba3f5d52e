"""The request id of the request being served: the context variable, its header, and the log filter.

`RequestContextMiddleware` (`aegis_server.edge.request_context`) sets the id for each request; the error
envelope (`aegis_server.errors`) and every log record of the server's loggers read it from here.
"""

from __future__ import annotations

import contextvars
import logging

REQUEST_ID_HEADER = "X-Request-ID"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("aegis_request_id", default=None)

_SERVER_LOGGERS = ("aegis_server", "aegis_server.policies")


def current_request_id() -> str | None:
    return request_id_var.get()


class RequestIdLogFilter(logging.Filter):
    """Adds `request_id` to every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        return True


def install_request_id_filter() -> None:
    """Every record of the server's loggers carries `request_id` (for any handler's format)."""
    for name in _SERVER_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, RequestIdLogFilter) for f in target.filters):
            target.addFilter(RequestIdLogFilter())


__all__ = [
    "REQUEST_ID_HEADER",
    "RequestIdLogFilter",
    "current_request_id",
    "install_request_id_filter",
    "request_id_var",
]
