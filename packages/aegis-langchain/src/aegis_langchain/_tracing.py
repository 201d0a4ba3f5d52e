"""The span of one governed tool call: `aegis.govern` around the flow (`_flow.governed_run`), driven sync or
async. It covers the governance and the tool's run, so the tool's own spans and the SDK's sit under it (the
execution report is only queued here: the client's reporter sends it later, in a trace of its own). A refusal
or a LangGraph pause is an answer (status UNSET); a governance failure or an error raised by the tool ends it
with ERROR and `error.type`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aegis_langchain._call import GovernedCall
from aegis_langchain._drivers import run_async, run_sync
from aegis_langchain._execution import is_graph_bubble_up
from aegis_langchain._flow import Ran, Refused, governed_run
from aegis_sdk import AegisClient, AsyncAegisClient
from aegis_sdk._govern_tracing import GovernSpan
from aegis_sdk._version import installed_version

_VERSION = installed_version("aegisgov-langchain")  # the tracer's version


def _span(call: GovernedCall) -> GovernSpan:
    attributes: dict[str, Any] = {"aegis.capability": call.capability, "aegis.tool.name": call.tool_name}
    return GovernSpan("aegis_langchain", _VERSION, "langchain", attributes)


def _record(govern: GovernSpan, outcome: Ran | Refused) -> None:
    if isinstance(outcome, Refused):
        govern.refused(outcome.refusal, outcome.refusal.decision)
    else:
        govern.decided(outcome.decision)


def govern_sync(call: GovernedCall, client: AegisClient, run: Callable[[Any], Any]) -> Ran | Refused:
    """Govern `call` and run it with `run` (the flow driven by the sync client), in its span."""
    with _span(call) as govern:
        try:
            outcome = run_sync(governed_run(call), client, run)
        except BaseException as exc:
            if is_graph_bubble_up(exc):
                govern.decided(None)  # a pause (interrupt) is an answer, not a failure
            raise
        _record(govern, outcome)
        return outcome


async def govern_async(
    call: GovernedCall, client: AsyncAegisClient, run: Callable[[Any], Awaitable[Any]]
) -> Ran | Refused:
    """The async twin of `govern_sync`."""
    with _span(call) as govern:
        try:
            outcome = await run_async(governed_run(call), client, run)
        except BaseException as exc:
            if is_graph_bubble_up(exc):
                govern.decided(None)
            raise
        _record(govern, outcome)
        return outcome


__all__ = ["govern_async", "govern_sync"]
