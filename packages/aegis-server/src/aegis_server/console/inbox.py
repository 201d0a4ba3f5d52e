"""The inbox: pending escalations, soonest deadline first, each with what a reviewer needs to decide and
an Approve / Deny form. Reviews go through `GovernanceService.review`, so separation of duties, scopes and
expiry hold exactly as in the API; the outcome comes back as a one-shot message (Post/Redirect/Get).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from aegis_sdk.models import ReviewRequest
from aegis_server.console.flash import set_flash
from aegis_server.console.rendering import render, render_fragment
from aegis_server.console.sessions import ConsoleUser, console_form, csrf_protected, now_of, safe_next, signed_in
from aegis_server.engine import SENSITIVE_PREFIX
from aegis_server.governance.errors import Conflict, GovernanceError, NotFound, SelfReview
from aegis_server.governance.service import GovernanceService
from aegis_server.security import SCOPE_READ, SCOPE_REVIEW
from aegis_server.store import Store
from aegis_server.store.review_queue import PendingReview

__all__ = ["INBOX_LIMIT", "InboxView", "Parameter", "inbox_view", "render_inbox_list", "review_outcome", "router"]

logger = logging.getLogger("aegis_server.console")
router = APIRouter()

INBOX_LIMIT = 100
"""How many pending reviews the inbox shows (the soonest deadlines); it says when more are waiting."""


@dataclass(frozen=True)
class Parameter:
    """One parameter as the audit keeps it: `redacted` when it is the digest of a sensitive value."""

    name: str
    text: str
    redacted: bool


@dataclass(frozen=True)
class InboxView:
    items: list[PendingReview]
    total: int

    @property
    def more(self) -> int:
        return max(0, self.total - len(self.items))


def parameters_of(proposal: Mapping[str, Any] | None) -> list[Parameter] | None:
    """The parameters of the "proposal" audit record (sensitive ones already digests); None when the record
    holds none (a confirmed resubmission keeps only their hash)."""
    if proposal is None:
        return None
    action = proposal.get("action")
    parameters = action.get("parameters") if isinstance(action, Mapping) else None
    if not isinstance(parameters, Mapping):
        return None
    shown: list[Parameter] = []
    for name, value in parameters.items():
        redacted = isinstance(value, str) and value.startswith(SENSITIVE_PREFIX)
        if redacted:
            text = "redacted (sensitive)"
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, indent=2 if isinstance(value, dict) else None)
        shown.append(Parameter(name=str(name), text=text, redacted=redacted))
    return shown


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def inbox_view(request: Request) -> InboxView:
    items, total = await _store(request).review_queue.pending_reviews(now_of(request), INBOX_LIMIT)
    return InboxView(items=items, total=total)


def _context(view: InboxView) -> dict[str, Any]:
    return {"view": view, "parameters_of": parameters_of}


def render_inbox_list(request: Request, view: InboxView, user: ConsoleUser) -> str:
    """The list of the inbox alone (what the live stream sends)."""
    return render_fragment(request, "inbox_list.html", _context(view), user=user)


@router.get("/inbox")
async def inbox(
    request: Request, user: Annotated[ConsoleUser, Depends(signed_in(SCOPE_READ, SCOPE_REVIEW))]
) -> Response:
    view = await inbox_view(request)
    return render(request, "inbox.html", _context(view), user=user)


def review_outcome(decision_id: str, approve: bool, error: GovernanceError | None) -> tuple[str, str]:
    """The message kind ("status" / "alert") and text for a review's outcome."""
    if error is None:
        if approve:
            return "status", f"Approved {decision_id} — the agent may now proceed."
        return "status", f"Denied {decision_id}."
    if isinstance(error, SelfReview):
        return "alert", f"You may not review this request: {error.message}"
    if isinstance(error, Conflict) and error.code == "not_pending":
        status = error.details.get("status", "decided")
        if status == "not_escalated":
            return "alert", f"{decision_id} does not need a review (it was not escalated)."
        if status == "expired":
            return "alert", f"{decision_id} is no longer pending (status: expired): its review deadline passed."
        return "alert", f"Already decided by another reviewer (status: {status})."
    if isinstance(error, NotFound):
        return "alert", f"There is no decision {decision_id}."
    return "alert", f"The review was not recorded: {error.message}"


def _first_error(exc: ValidationError) -> str:
    errors: Sequence[Any] = exc.errors(include_url=False)
    if not errors:
        return "the form is invalid"
    first = errors[0]
    field = ".".join(str(part) for part in first.get("loc", ())) or "form"
    return f"{field}: {first.get('msg', 'invalid')}"


@router.post("/decisions/{decision_id}/review")
async def review(
    request: Request,
    decision_id: str,
    user: Annotated[ConsoleUser, Depends(csrf_protected(SCOPE_REVIEW))],
) -> Response:
    form = await console_form(request)
    back = safe_next(form.get("return_to"))
    response = RedirectResponse(back, status_code=303)
    choice = form.get("decision")
    if choice not in ("approve", "deny"):
        await set_flash(request, response, "alert", "Choose Approve or Deny.")
        return response
    approve = choice == "approve"
    note = form.get("note", "").strip() or None
    try:
        review_request = ReviewRequest(approve=approve, note=note)
    except ValidationError as exc:
        await set_flash(request, response, "alert", f"The review was not recorded — {_first_error(exc)}.")
        return response
    service: GovernanceService = request.app.state.service
    error: GovernanceError | None = None
    try:
        await service.review(decision_id, review_request, reviewer=user.name, reviewer_key_id=user.key_id)
    except GovernanceError as exc:
        error = exc
    kind, text = review_outcome(decision_id, approve, error)
    logger.info(
        "console review of %s by key %s: %s", decision_id, user.key_id, "recorded" if error is None else error.code
    )
    await set_flash(request, response, "status" if kind == "status" else "alert", text)
    return response
