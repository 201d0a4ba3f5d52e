"""The status route: where a client whose request waits for a reviewer learns how the review went, without
AEGIS credentials of its own. `app.include_router(aegis.status_router(prefix="/aegis"))` mounts
`GET /aegis/decisions/{decision_id}`, and the `review_pending` refusals of that app link to it.

The caller is resolved by the app's own actor dependency, and the route answers only for a decision the
platform recorded for that actor: anyone else gets the same 404 as for an id that does not exist. The answer
is a small view (`DecisionStatus`): no reason, policy, reviewer or token."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from aegis_fastapi._errors import AegisErrorDetail, AegisRefusal
from aegis_fastapi._flow import DECISION_ID, request_id_of, to_actor
from aegis_fastapi._refusals import platform_refusal, refusal
from aegis_sdk import Actor, AegisError, AsyncAegisClient, Decision

if TYPE_CHECKING:
    from aegis_fastapi._aegis import Aegis

STATUS_ROUTE_NAME = "aegis_decision_status"
"""The name of the status route (`request.url_for(STATUS_ROUTE_NAME, decision_id=...)`)."""
MAX_WAIT_SECONDS = 60
"""The longest `?wait=` the route accepts (the platform's own cap, 60 s by default)."""

NextStep = Literal["wait", "repeat", "stop"]


class DecisionStatus(BaseModel):
    """The caller's view of one of its decisions, as the status route answers it."""

    decision_id: str = Field(description="The decision.")
    outcome: str = Field(description="ALLOW, DENY, ESCALATE or REQUIRE_CONFIRMATION.")
    review_status: str | None = Field(
        default=None, description="ESCALATE: pending, approved, denied or expired; null for other outcomes."
    )
    expires_at: str | None = Field(
        default=None,
        description="Pending: the review deadline. Approved or awaiting confirmation: the deadline "
        "to repeat the request.",
    )
    next_step: NextStep = Field(
        description="`wait`: nobody decided yet, poll again (after `Retry-After`, or with `?wait=N`). `repeat`: "
        "repeat the same request with `confirmation_header: decision_id`. `stop`: final, this decision will "
        "not let the request run."
    )
    confirmation_header: str | None = Field(
        default=None, description="With `next_step` `repeat`: the header to repeat the request with."
    )
    message: str = Field(description="What to do next; for people.")


def status_of(decision: Decision, header: str, now: datetime) -> DecisionStatus:
    """The view of `decision` at `now`, with the next step of a client waiting on it."""
    review = decision.review.status if decision.review is not None else None
    named = decision.decision_id
    repeat = f"repeat the same request with the header {header}: {named}" + (
        f" before {decision.expires_at}." if decision.expires_at else "."
    )
    step: NextStep
    if review == "pending":
        step = "wait"
        message = "A reviewer has not decided yet. Poll again (?wait=N holds the answer until the review resolves)."
    elif review in ("denied", "expired"):
        step, message = "stop", f"The review was {review}; this decision will not let the action run."
    elif decision.outcome == "REQUIRE_CONFIRMATION" or (decision.outcome == "ESCALATE" and review == "approved"):
        if _passed(decision.expires_at, now):
            step = "stop"
            message = f"The time to repeat the request has passed; repeat it without {header} to propose it again."
        else:
            step = "repeat"
            once = "Approved: " if review == "approved" else "Once the user consented, "
            message = once + repeat
    elif decision.outcome == "ALLOW":
        step, message = "stop", "This decision allowed the action; there is nothing to wait for."
    else:
        step, message = "stop", "This decision denied the action; it is final."
    return DecisionStatus(
        decision_id=named,
        outcome=decision.outcome,
        review_status=review,
        expires_at=decision.expires_at,
        next_step=step,
        confirmation_header=header if step == "repeat" else None,
        message=message,
    )


def _passed(moment: str | None, now: datetime) -> bool:
    if not moment:
        return False
    try:
        deadline = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return False
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=timezone.utc)
    return deadline <= now


def not_found(decision_id: str, request_id: str) -> AegisRefusal:
    """The one 404 of the route: for an id that does not exist, is malformed, or is another actor's."""
    return refusal(
        404,
        "decision_not_found",
        f"You have no decision {decision_id}. Use the status link of the answer that asked you to wait.",
        request_id,
    )


async def owned_decision(
    client: AsyncAegisClient, decision_id: str, actor: Actor, request_id: str, retry_after: int
) -> Decision:
    """The decision, when the platform recorded it for `actor` (its id and type); else the route's 404.
    Platform trouble is a 503 (fail closed)."""
    if not DECISION_ID.match(decision_id):
        raise not_found(decision_id, request_id)
    try:
        # One exact question to the platform's listing (`governance:read`): is this decision the actor's?
        # An unknown id and someone else's take the same call and get the same answer.
        listing = client.decisions.list(decision_id=decision_id, actor_id=actor.id, actor_type=actor.type, limit=1)
        owned = [decision async for decision in listing]
    except AegisError as exc:
        raise _unavailable(exc, decision_id, request_id, retry_after) from None
    if not owned:
        raise not_found(decision_id, request_id)
    return owned[0]


def _unavailable(exc: AegisError, decision_id: str, request_id: str, retry_after: int) -> AegisRefusal:
    return platform_refusal(
        exc,
        request_id,
        retry_after=retry_after,
        subject=f"status of decision={decision_id}",
        setup="that the key may read decisions",
        consequence="so the decision's status is unknown",
    )


def _responses() -> dict[int | str, dict[str, Any]]:
    schema = {
        "title": "AegisError",
        "type": "object",
        "properties": {"detail": AegisErrorDetail.model_json_schema()},
        "required": ["detail"],
    }
    content = {"application/json": {"schema": schema}}
    retry = {"description": "Seconds to wait before polling again.", "schema": {"type": "integer"}}
    return {
        200: {"description": "The decision's status.", "headers": {"Retry-After": retry}},
        401: {"description": "No authenticated caller (`actor_required`).", "content": content},
        404: {
            "description": "No decision of the caller has this id (`decision_not_found`): unknown, malformed or "
            "another actor's, alike.",
            "content": content,
        },
        503: {
            "description": "The platform could not be asked (`governance_unavailable`, `governance_misconfigured`); "
            "try again after `Retry-After` seconds.",
            "headers": {"Retry-After": retry},
            "content": content,
        },
    }


class LongPolls:
    """How many long polls are held through the app's client. They share its connection pool with the
    governed routes' proposals, so past `limit` a poll is answered at once instead: callers with pending
    decisions cannot starve governance. A plain counter, not a semaphore: nothing waits for a slot, and it
    is bound to no event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[bool]:
        """Yields whether this poll may wait; releases the slot afterwards."""
        if self.held >= self.limit:
            yield False
            return
        self.held += 1
        try:
            yield True
        finally:
            self.held -= 1


def status_router(
    aegis: Aegis, *, prefix: str, actor_dependency: Callable[..., Any], tags: Sequence[str], max_waiting: int
) -> APIRouter:
    """The router of `Aegis.status_router`: one route, `GET {prefix}/decisions/{decision_id}`."""
    router = APIRouter(prefix=prefix, tags=list(tags))
    long_polls = LongPolls(max_waiting)

    @router.get(
        "/decisions/{decision_id}",
        name=STATUS_ROUTE_NAME,
        response_model=DecisionStatus,
        summary="How the review of one of your decisions went",
        description=(
            "The status of a decision the caller's request led to: `next_step` says whether to wait, repeat the "
            f"request with `{aegis.confirmation_header}: <decision_id>`, or stop. `wait=N` (0..{MAX_WAIT_SECONDS}) "
            "holds the answer until a pending review resolves or N seconds passed. While the review is pending, "
            "`Retry-After` says when to poll again. Only the decision's own actor gets an answer."
        ),
        responses=_responses(),
    )
    async def decision_status(
        request: Request,
        response: Response,
        decision_id: str = Path(description="The `decision_id` of the refusal."),
        wait: int = Query(
            0,
            ge=0,
            le=MAX_WAIT_SECONDS,
            description=f"Seconds (0..{MAX_WAIT_SECONDS}) to hold the answer while the review is pending.",
        ),
        actor: Any = Depends(actor_dependency),  # noqa: B008 - FastAPI dependency declarations
        client: AsyncAegisClient = Depends(aegis.get_client),  # noqa: B008 - FastAPI dependency declarations
    ) -> DecisionStatus:
        request_id = request_id_of(request.headers)
        who = to_actor(actor)
        if who is None:
            raise refusal(
                401,
                "actor_required",
                "The status of a decision is shown to its actor only, and the app's actor dependency found no "
                "authenticated caller. Authenticate and try again.",
                request_id,
            )
        decision = await owned_decision(client, decision_id, who, request_id, aegis.retry_after)
        waited = False
        if wait and decision.review is not None and decision.review.status == "pending":
            with long_polls.slot() as waited:
                if waited:
                    try:
                        decision = await client.decisions.get(decision_id, wait=wait)
                    except AegisError as exc:
                        raise _unavailable(exc, decision_id, request_id, aegis.retry_after) from None
        view = status_of(decision, aegis.confirmation_header, datetime.now(timezone.utc))
        response.headers["Cache-Control"] = "no-store"
        if view.next_step == "wait":
            # After a long poll the client already waited: it may ask again at once.
            response.headers["Retry-After"] = "1" if waited else str(aegis.review_retry_after)
        return view

    return router


__all__ = [
    "MAX_WAIT_SECONDS",
    "STATUS_ROUTE_NAME",
    "DecisionStatus",
    "LongPolls",
    "NextStep",
    "not_found",
    "owned_decision",
    "status_of",
    "status_router",
]
