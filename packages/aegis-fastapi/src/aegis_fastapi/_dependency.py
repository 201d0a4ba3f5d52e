"""The dependency `Aegis.require` returns: it resolves the actor, context and client through FastAPI,
validates the route's inputs, runs the flow, hands the ALLOW decision to the endpoint, and reports how
the endpoint went."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Depends, Header, Request, Response

from aegis_fastapi._errors import DECISION_HEADER
from aegis_fastapi._flow import CapabilitySource, ParametersSource, request_id_of
from aegis_fastapi._inputs import endpoint_inputs
from aegis_fastapi._openapi import mark_governed
from aegis_fastapi._routes import serving_route
from aegis_sdk import AsyncAegisClient, Decision

if TYPE_CHECKING:
    from aegis_fastapi._aegis import Aegis

_HEADER_DOC = (
    "The decision id of a REQUIRE_CONFIRMATION (after the user consented) or of an approved ESCALATE: "
    "repeat the same request with it to proceed."
)


async def _no_context() -> None:
    return None


def governed_dependency(
    aegis: Aegis,
    capability: CapabilitySource,
    *,
    actor_dependency: Callable[..., Any],
    context_dependency: Callable[..., Any] | None,
    parameters: ParametersSource | None,
    report: bool,
) -> Callable[..., AsyncIterator[Decision]]:
    """The dependency governing a route with `capability` (see `Aegis.require`); the inputs of the actor
    and context dependencies are credentials and plumbing, never the action's parameters."""
    context_dependency = context_dependency or _no_context
    skip = (actor_dependency, context_dependency)

    async def governed(
        request: Request,
        response: Response,
        actor: Any = Depends(actor_dependency),  # noqa: B008 - FastAPI dependency declarations
        context: Any = Depends(context_dependency),  # noqa: B008 - FastAPI dependency declarations
        client: AsyncAegisClient = Depends(aegis.get_client),  # noqa: B008 - FastAPI dependency declarations
        confirmation: str | None = Header(default=None, alias=aegis.confirmation_header, description=_HEADER_DOC),
    ) -> AsyncIterator[Decision]:
        request_id = request_id_of(request.headers)
        inputs = await endpoint_inputs(request, skip, serving_route(request.scope))
        decision = await aegis.decide(
            client,
            inputs=inputs,
            capability=capability,
            parameters=parameters,
            actor=actor,
            context=context,
            confirmation=confirmation,
            request_id=request_id,
        )
        response.headers[DECISION_HEADER] = decision.decision_id
        started = time.perf_counter()
        try:
            yield decision
        except BaseException as exc:
            if report:
                await aegis.schedule_report(client, decision, started, exc)
            raise
        else:
            if report:
                await aegis.schedule_report(client, decision, started, None)

    mark_governed(governed, aegis)
    governed.__name__ = f"aegis_require_{capability if isinstance(capability, str) else 'dynamic'}"
    return governed


__all__ = ["governed_dependency"]
