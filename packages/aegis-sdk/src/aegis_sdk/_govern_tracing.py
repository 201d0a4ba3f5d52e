"""The adapters' span: one INTERNAL `aegis.govern` per governed call (aegis-fastapi, aegis-langchain, aegis-mcp).

It is a child of the application's current span and the parent of the SDK spans the governance causes. A
refusal (DENY, a declined confirmation, a review denied) is a correct answer: status stays UNSET and the
outcome is an attribute. Status ERROR (with `error.type`) only when governance itself failed: the platform
could not be reached or refused the adapter's own request. A fail-open decision sets `aegis.degraded`; the
failure it hides is on the SDK's child span. Nothing at all happens while no TracerProvider is set.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from aegis_sdk._tracing import error_type, tracing_on
from aegis_sdk.errors import AegisError, ConfirmationError, InvalidRequestError, ParameterValidationError
from aegis_sdk.models import Decision

# Errors that are the platform's answer about the call itself, not a failure of governance.
_ANSWERS = (ConfirmationError, ParameterValidationError, InvalidRequestError)


class GovernSpan:
    """`with GovernSpan("aegis_fastapi", __version__, "fastapi", {...}) as govern:` around one governed call;
    the adapter tells it the decision (`decided`) or the refusal (`refused`). Any other exception leaving the
    block ends the span with ERROR and the exception's class name."""

    __slots__ = ("_adapter", "_attributes", "_scope", "_settled", "_span", "_use", "_version")

    def __init__(self, scope: str, version: str, adapter: str, attributes: dict[str, AttributeValue]) -> None:
        # Only stored: with tracing off, nothing else happens.
        self._scope = scope
        self._version = version
        self._adapter = adapter
        self._attributes = attributes
        self._span: Span | None = None
        self._use: Any = None
        self._settled = False

    def __enter__(self) -> GovernSpan:
        if tracing_on():
            tracer = trace.get_tracer(self._scope, self._version)
            self._use = tracer.start_as_current_span(
                "aegis.govern",
                kind=SpanKind.INTERNAL,
                attributes={"aegis.adapter": self._adapter, **self._attributes},
                record_exception=False,
                set_status_on_exception=False,
            )
            self._span = self._use.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._use is None:
            return
        if exc is not None and self._span is not None and not self._settled:
            self._span.set_attribute("error.type", error_type(exc))
            self._span.set_status(Status(StatusCode.ERROR))
        self._use.__exit__(exc_type, exc, tb)

    def set(self, key: str, value: AttributeValue) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)

    def decided(self, decision: Decision | None) -> None:
        """The governance answered: its decision (None: refused before any decision)."""
        self._settled = True
        if self._span is None or decision is None:
            return
        self._span.set_attribute("aegis.decision.id", decision.decision_id)
        self._span.set_attribute("aegis.decision.outcome", decision.outcome)
        if decision.degraded:
            self._span.set_attribute("aegis.degraded", True)

    def failed(self, exc: BaseException) -> None:
        """Governance itself failed (e.g. the adapter's set-up): ERROR with the exception's class name."""
        self._settled = True
        if self._span is not None:
            self._span.set_attribute("error.type", error_type(exc))
            self._span.set_status(Status(StatusCode.ERROR))

    def refused(self, refusal: BaseException, decision: Decision | None) -> None:
        """The call was refused; ERROR when the refusal stands for a governance failure (its cause or context
        is an SDK error other than the platform's answer about the call)."""
        self.decided(decision)
        cause = refusal.__cause__ or refusal.__context__
        if self._span is not None and isinstance(cause, AegisError) and not isinstance(cause, _ANSWERS):
            self._span.set_attribute("error.type", error_type(cause))
            self._span.set_status(Status(StatusCode.ERROR))


__all__ = ["GovernSpan"]
