"""Why a governed request may not run, as an `AegisRefusal`: the one builder of a refusal (the dependency
flow and the middleware both use it), the refusal for each decision outcome and for each SDK error, and
the degraded ALLOW a fail-open app gets when the platform cannot be reached."""

from __future__ import annotations

import logging

import pydantic

from aegis_fastapi._errors import AegisErrorDetail, AegisRefusal, RefusalCode
from aegis_sdk import (
    AegisError,
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    ConfirmationError,
    ConfirmationExpiredError,
    ConfirmationMismatchError,
    ConfirmationUsedError,
    Decision,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    ParameterValidationError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from aegis_sdk._degraded import degraded_allow as degraded_allow_decision
from aegis_sdk._validation import describe_validation

logger = logging.getLogger("aegis_fastapi")

# An outcome that waits for someone: (status, code, whose consent, when to repeat the request).
_AWAITING: dict[str, tuple[int, RefusalCode, str, str]] = {
    "REQUIRE_CONFIRMATION": (428, "confirmation_required", "the user's confirmation", "Once the user consented"),
    "ESCALATE": (403, "review_pending", "a reviewer's approval", "Once approved"),
}


def refusal(
    status_code: int,
    code: RefusalCode,
    message: str,
    request_id: str,
    decision: Decision | None = None,
    *,
    confirmation_header: str | None = None,
    show_reason: bool = True,
    retry_after: int | None = None,
    status_url: str | None = None,
) -> AegisRefusal:
    """The refusal of one request. `confirmation_header` is named in the body when repeating the request
    with it can proceed; `show_reason=False` keeps the decision's reason out of the body; `status_url` (a
    pending review's status route) goes in the body and in a `Link` header."""
    detail = AegisErrorDetail(
        code=code,
        message=message,
        decision_id=decision.decision_id if decision else None,
        outcome=decision.outcome if decision else None,
        reason=decision.reason if decision and show_reason else None,
        review_status=decision.review.status if decision and decision.review else None,
        expires_at=decision.expires_at if decision else None,
        confirmation_header=confirmation_header,
        status_url=status_url,
        request_id=request_id,
    )
    return AegisRefusal(status_code, detail, decision=decision, retry_after=retry_after)


def verdict(
    decision: Decision,
    request_id: str,
    header: str,
    *,
    status_url: str | None = None,
    review_retry_after: int | None = None,
) -> Decision:
    """The decision itself when it is an ALLOW; else raise the refusal of its outcome. A pending review's
    refusal carries `Retry-After: review_retry_after` and, when the app mounts the status route, its
    `status_url`."""
    if decision.outcome == "ALLOW":
        return decision
    awaiting = _AWAITING.get(decision.outcome)
    if awaiting is not None:
        status_code, code, consent, once = awaiting
        reviewed = decision.outcome == "ESCALATE"
        raise refusal(
            status_code,
            code,
            f"This action needs {consent}: {decision.reason}. {once}, repeat the same request with the header "
            f"{header}: {decision.decision_id}"
            + (f" before {decision.expires_at}." if decision.expires_at else ".")
            + (f" Poll {status_url} (?wait=N long-polls) to learn of the review." if reviewed and status_url else ""),
            request_id,
            decision,
            confirmation_header=header,
            retry_after=review_retry_after if reviewed else None,
            status_url=status_url if reviewed else None,
        )
    raise refusal(403, "governance_denied", f"AEGIS denied this action: {decision.reason}", request_id, decision)


def review_still_pending(
    original: Decision, request_id: str, header: str, *, status_url: str | None, review_retry_after: int
) -> AegisRefusal:
    """The refusal of a repeat naming a decision whose review is still pending."""
    named = original.decision_id
    poll = f" Poll {status_url} (?wait=N long-polls) to learn of the review." if status_url else ""
    return refusal(
        403,
        "review_pending",
        f"Decision {named} is still waiting for a reviewer. Repeat the request with {header} once it is approved."
        + poll,
        request_id,
        original,
        show_reason=False,
        retry_after=review_retry_after,
        status_url=status_url,
    )


def confirmation_rejected(exc: ConfirmationError, original: Decision, request_id: str, header: str) -> AegisRefusal:
    """The refusal of a confirmation the platform did not accept (mismatch, used, expired, invalid)."""
    again = f"Repeat the request without {header} to propose it again."
    if isinstance(exc, ConfirmationMismatchError):
        what = ", ".join(exc.details.get("mismatched", [])) or "actor or parameters"
        return refusal(
            409,
            "confirmation_mismatch",
            f"Decision {original.decision_id} was made for a different {what}; it cannot confirm this "
            f"request. Send exactly the request that was confirmed, or {again[0].lower()}{again[1:]}",
            request_id,
            original,
            show_reason=False,
        )
    code: RefusalCode
    if isinstance(exc, ConfirmationUsedError):
        code, why = "confirmation_used", "was already used; a confirmation lets one request through"
    elif isinstance(exc, ConfirmationExpiredError):
        code, why = "confirmation_expired", "has expired"
    else:
        code, why = "confirmation_invalid", "was not accepted by the platform"
    return refusal(
        409,
        code,
        f"The confirmation of decision {original.decision_id} {why}. {again}",
        request_id,
        original,
        show_reason=False,
    )


def refusal_of_error(
    exc: AegisError, capability: str, request_id: str, *, fail_open: bool, retry_after: int
) -> Decision:
    """Map an SDK error to a refusal (raised), or to a degraded ALLOW (returned) when fail-open applies."""
    if isinstance(exc, ParameterValidationError):
        raise refusal(
            422,
            "invalid_parameters",
            f"The request's parameters do not fit capability {capability!r}: {exc.message}",
            request_id,
        ) from None
    if isinstance(exc, InvalidRequestError):
        raise refusal(
            422, "invalid_parameters", f"The proposal built from this request is invalid: {exc.message}", request_id
        ) from None
    if fail_open and may_fail_open(exc):
        return degraded_allow(exc, capability, request_id)
    raise platform_refusal(
        exc,
        request_id,
        retry_after=retry_after,
        subject=f"capability={capability}",
        setup=f"that capability {capability!r} is registered",
        consequence="so nothing was run",
    ) from None


def is_unavailable(exc: AegisError) -> bool:
    """True when the platform could not answer (unreachable, overloaded, failing), as opposed to refusing
    the adapter's own request (wrong key, missing scope, unknown capability)."""
    return isinstance(exc, (APIConnectionError, RateLimitError, ServerError, MalformedResponseError)) or (
        isinstance(exc, APIStatusError)
        and not isinstance(exc, (AuthenticationError, PermissionDeniedError, NotFoundError))
    )


def may_fail_open(exc: AegisError) -> bool:
    """True when `fail_open` may let the request through: the platform could not answer. Not a rate limit
    (429): the platform answered, and a caller could exhaust its own key's limit to get past governance."""
    return is_unavailable(exc) and not isinstance(exc, RateLimitError)


def app_misconfigured(what: str, problem: Exception, request_id: str, *, retry_after: int) -> AegisRefusal:
    """The 503 of a request the app's own set-up cannot govern (its actor or context source returned
    something invalid): logged for the operator, fail closed."""
    logger.error(
        "AEGIS: the app's %s returned something invalid, request refused (fail closed): request_id=%s error=%s",
        what,
        request_id,
        _described(problem),
    )
    return refusal(
        503,
        "governance_misconfigured",
        "Governance is not set up correctly for this route, so nothing was run. The operator was told.",
        request_id,
        retry_after=retry_after,
    )


def invalid_proposal(problem: Exception, request_id: str) -> AegisRefusal:
    """The 422 of a request whose proposal cannot be built (e.g. a capability name made of a path parameter
    that is not one)."""
    return refusal(
        422,
        "invalid_parameters",
        f"The proposal built from this request is invalid: {_described(problem)}",
        request_id,
    )


def _described(problem: Exception) -> str:
    """What was wrong: a validation error's fields and messages (never its values), else the first line."""
    if isinstance(problem, pydantic.ValidationError):
        return describe_validation(problem)[0]
    return str(problem).splitlines()[0] if str(problem) else type(problem).__name__


def platform_refusal(
    exc: AegisError, request_id: str, *, retry_after: int, subject: str, setup: str, consequence: str
) -> AegisRefusal:
    """The 503 (fail closed, with `Retry-After`: the platform's hint or `retry_after`) of a platform that
    could not answer (`governance_unavailable`) or refused the adapter's own request
    (`governance_misconfigured`, logged as an error for the operator with `setup` to check). `subject`
    names what was being done in the log; `consequence` tells the caller what did not happen."""
    hinted = getattr(exc, "retry_after", None)
    if isinstance(hinted, (int, float)) and hinted > 0:
        retry_after = max(1, int(hinted))
    if is_unavailable(exc):
        logger.error(
            "AEGIS unavailable, request refused (fail closed): %s request_id=%s error=%s code=%s",
            subject,
            request_id,
            type(exc).__name__,
            exc.code,
        )
        return refusal(
            503,
            "governance_unavailable",
            f"The governance platform could not be reached, {consequence}. Try again later.",
            request_id,
            retry_after=retry_after,
        )
    logger.error(
        "AEGIS refused the adapter's request; check the endpoint, the API key and its scopes "
        "(governance:propose and governance:read) and %s: %s request_id=%s error=%s code=%s "
        "platform_request_id=%s",
        setup,
        subject,
        request_id,
        type(exc).__name__,
        exc.code,
        exc.request_id,
    )
    return refusal(
        503,
        "governance_misconfigured",
        f"Governance is not set up correctly for this route, {consequence}. The operator was told.",
        request_id,
        retry_after=retry_after,
    )


def degraded_allow(exc: AegisError, capability: str, request_id: str) -> Decision:
    """The local ALLOW of a fail-open app whose platform is unreachable (`decision.degraded` is true)."""
    decision = degraded_allow_decision(
        f"The AEGIS platform was unreachable ({type(exc).__name__}); allowed without governance because "
        "fail_open is on."
    )
    logger.warning(
        "AEGIS unavailable, request allowed WITHOUT governance (fail_open=True): capability=%s "
        "request_id=%s decision_id=%s error=%s code=%s",
        capability,
        request_id,
        decision.decision_id,
        type(exc).__name__,
        exc.code,
    )
    return decision


__all__ = [
    "app_misconfigured",
    "confirmation_rejected",
    "degraded_allow",
    "invalid_proposal",
    "is_unavailable",
    "may_fail_open",
    "platform_refusal",
    "refusal",
    "refusal_of_error",
    "review_still_pending",
    "verdict",
]
