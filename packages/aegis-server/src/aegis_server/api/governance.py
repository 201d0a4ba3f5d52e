"""`/api/v1/governance/...`: propose, decisions (get with long-poll, list), review, execution report."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError

from aegis_sdk.models import (
    ActorType,
    Decision,
    DecisionPage,
    ExecutionRecord,
    ExecutionReport,
    Outcome,
    Proposal,
    ReviewRequest,
    ReviewStatus,
)
from aegis_server.api.common import (
    BODY_ERRORS,
    PageCursor,
    PageLimit,
    Proposer,
    Reader,
    Reviewer,
    ServiceDep,
    errors,
    require_propose,
)
from aegis_server.api.hot_path import HotRoute, PlainRoute
from aegis_server.edge.limits import PARSED_BODY
from aegis_server.governance.service import GovernanceService
from aegis_server.observability.answer import AnswerResponse
from aegis_server.observability.tracing import note_decision, start_answer_span
from aegis_server.security import bearer_credentials
from aegis_server.store import DecisionFilters

router = APIRouter(prefix="/api/v1/governance", tags=["governance"])

PROPOSE_PATH = "/api/v1/governance/propose"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_MAX_IDEMPOTENCY_KEY = 255


# `POST /propose`: one plain endpoint, served by the hot path (api/hot_path.py) and, mounted as a `PlainRoute`,
# documented by FastAPI from `_declared` below: the same body model, header type and scope dependency that
# the endpoint checks, in its order (key, rate limit, scope; then the Idempotency-Key header and the body,
# their problems reported together as one 422, as FastAPI reports them). It skips FastAPI's resolution of
# five dependencies per request and its second validation of the body the guard already parsed, and
# answers with the decision serialised once. Every error is raised, so the application's handlers render it.
IdempotencyKey = Annotated[str, Field(max_length=_MAX_IDEMPOTENCY_KEY)]
_idempotency_key = TypeAdapter(IdempotencyKey)
_IDEMPOTENCY_HEADER_KEY = IDEMPOTENCY_HEADER.lower().encode("latin-1")  # as ASGI gives header names
_decision_json = TypeAdapter(Decision)


def _declared(
    proposal: Proposal,
    principal: Proposer,
    idempotency_key: Annotated[IdempotencyKey | None, Header(alias=IDEMPOTENCY_HEADER)] = None,
) -> None:
    """What `propose` reads, declared for OpenAPI (never called: `propose` reads the request itself)."""


async def propose(request: Request) -> Response:
    authorization = idempotency_key = None
    for name, value in request.scope["headers"]:  # one pass over the raw headers (the first of each wins)
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == _IDEMPOTENCY_HEADER_KEY and idempotency_key is None:
            idempotency_key = value.decode("latin-1")
    principal = await require_propose.authorize(request, bearer_credentials(authorization))
    problems: list[dict[str, object]] = []
    if idempotency_key is not None:
        try:
            _idempotency_key.validate_python(idempotency_key)
        except ValidationError as exc:
            problems.extend({**e, "loc": ("header", IDEMPOTENCY_HEADER)} for e in exc.errors(include_url=False))
    body = getattr(request.state, PARSED_BODY, None)
    proposal: Proposal | None = None
    if body is None:
        problems.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
    else:
        try:
            proposal = Proposal.model_validate(body, from_attributes=True)  # as FastAPI validates a body
        except ValidationError as exc:
            problems.extend({**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False))
    if problems or proposal is None:
        raise RequestValidationError(problems)
    service: GovernanceService = request.app.state.service
    decision, replayed = await service.propose(proposal, principal=principal, idempotency_key=idempotency_key)
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    answer = start_answer_span()
    if answer is None:  # tracing off: nothing more than the response
        return Response(_decision_json.dump_json(decision), media_type="application/json", headers=headers)
    note_decision(request.scope["state"], decision, proposal.action.capability)
    return AnswerResponse(_decision_json.dump_json(decision), answer, headers)


router.add_api_route(
    "/propose",
    propose,
    methods=["POST"],
    route_class_override=PlainRoute,
    dependencies=[Depends(_declared)],
    response_model=Decision,
    summary="Propose an action and get a decision",
    description=(
        "Every outcome (ALLOW, DENY, ESCALATE, REQUIRE_CONFIRMATION) is a 200. Send `Idempotency-Key` to make "
        "retries safe: the same key from the same API key with the same body returns the stored decision. "
        "Resubmit the same proposal with `confirmation_token` to turn a REQUIRE_CONFIRMATION (or an approved "
        "ESCALATE) into an ALLOW."
    ),
    responses=errors(403, 404, 409, *BODY_ERRORS),
)


def hot_routes() -> list[HotRoute]:
    """Routes the hot path serves in front of FastAPI's router (the same endpoints the router mounts)."""
    return [HotRoute("POST", PROPOSE_PATH, propose)]


@router.get(
    "/decisions/{decision_id}",
    response_model=Decision,
    summary="Get one decision (optionally wait for its review)",
    description=(
        "`wait=N` holds the answer until a pending review resolves or N seconds elapse (N is capped by the "
        "`max_wait_seconds` setting, 60 by default)."
    ),
    responses=errors(404),
)
async def get_decision(
    decision_id: str,
    service: ServiceDep,
    _: Reader,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            allow_inf_nan=False,
            description="Seconds to wait for a pending review (capped at 60 by default).",
        ),
    ] = None,
) -> Decision:
    return await service.get_decision(decision_id, wait=wait)


@router.get(
    "/decisions",
    response_model=DecisionPage,
    summary="List decisions, newest first",
    responses=errors(422),
)
async def list_decisions(
    service: ServiceDep,
    _: Reader,
    actor_id: str | None = None,
    capability: str | None = None,
    outcome: Outcome | None = None,
    session_id: str | None = None,
    review_status: ReviewStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
    actor_type: ActorType | None = None,
    decision_id: str | None = None,
) -> DecisionPage:
    filters = DecisionFilters(
        actor_id=actor_id,
        actor_type=actor_type,
        decision_id=decision_id,
        capability=capability,
        outcome=outcome,
        session_id=session_id,
        review_status=review_status,
        since=since,
        until=until,
    )
    return await service.list_decisions(filters, limit=limit, cursor=cursor)


@router.post(
    "/decisions/{decision_id}/review",
    response_model=Decision,
    summary="Approve or deny a pending ESCALATE",
    description=(
        "The reviewer recorded is the API key's name. An approval issues the confirmation token. The key that "
        "proposed the decision, or a key named like the decision's actor, gets 403 `self_review` (unless the "
        "server allows self-review for development)."
    ),
    responses=errors(403, 404, 409, *BODY_ERRORS),
)
async def review_decision(
    decision_id: str,
    review: ReviewRequest,
    service: ServiceDep,
    principal: Reviewer,
) -> Decision:
    return await service.review(decision_id, review, reviewer=principal.name, reviewer_key_id=principal.key_id)


@router.post(
    "/decisions/{decision_id}/execution",
    response_model=ExecutionRecord,
    status_code=201,
    summary="Report how an allowed action ran (AGP-1 EXECUTION_RESULT)",
    description=(
        "Only for an ALLOW decision, only once, and only with the API key that proposed it (another key gets "
        "403 `not_proposer`)."
    ),
    responses=errors(403, 404, 409, *BODY_ERRORS),
)
async def report_execution(
    decision_id: str,
    report: ExecutionReport,
    service: ServiceDep,
    principal: Proposer,
) -> ExecutionRecord:
    return await service.report_execution(decision_id, report, api_key_id=principal.key_id)


__all__ = ["IDEMPOTENCY_HEADER", "PROPOSE_PATH", "IdempotencyKey", "hot_routes", "propose", "router"]
