"""`AnswerResponse`: a response whose `aegis.answer` span (building and sending it) ends once it is sent."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.trace import Span
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from aegis_server.observability.tracing import mark_failed

__all__ = ["AnswerResponse"]


class AnswerResponse(Response):
    """A JSON response that ends `span` when it has been sent (or failed to be)."""

    def __init__(self, content: bytes, span: Span, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(content, media_type="application/json", headers=headers)
        self.span = span

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except BaseException as exc:
            mark_failed(self.span, exc)
            raise
        finally:
            self.span.end()
