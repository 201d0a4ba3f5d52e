"""The decide/confirm flow of one governed request: who acts, which capability and parameters, the proposal,
and the confirmation of a decision named in the confirmation header. Returns an ALLOW decision or raises
`AegisRefusal`; the dependency and the middleware both run it."""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry.util.types import AttributeValue
from starlette.requests import Request
from starlette.routing import NoMatchFound

from aegis_fastapi._errors import AegisRefusal
from aegis_fastapi._inputs import ParameterConflict, RouteInputs
from aegis_fastapi._refusals import (
    app_misconfigured,
    confirmation_rejected,
    invalid_proposal,
    refusal,
    refusal_of_error,
    review_still_pending,
    verdict,
)
from aegis_sdk import (
    Action,
    Actor,
    AegisError,
    AsyncAegisClient,
    ConfirmationError,
    Context,
    Decision,
    NotFoundError,
)
from aegis_sdk._govern_tracing import GovernSpan
from aegis_sdk._version import installed_version

ActorLike = Actor | Mapping[str, Any] | str
"""An actor: the SDK's `Actor`, a mapping such as `{"id": "u-1", "type": "human"}`, or just an id."""
ContextLike = Context | Mapping[str, Any] | None
CapabilitySource = str | Callable[[RouteInputs], str | Awaitable[str]]
ParametersSource = Callable[[RouteInputs], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]

_VERSION = installed_version("aegisgov-fastapi")  # the tracer's version

DECISION_ID = re.compile(r"^dec_[A-Za-z0-9]{1,64}$")
"""What a decision id named by a caller (confirmation header, status route) must look like."""
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


async def maybe_await(value: Any) -> Any:
    """The value, awaited when it is awaitable (user callbacks may be sync or async)."""
    return await value if inspect.isawaitable(value) else value


def request_id_of(headers: Mapping[str, str]) -> str:
    """The caller's `X-Request-ID` when it is a sane token, else a new `req_<hex>`."""
    given = headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return "req_" + uuid.uuid4().hex


def to_actor(value: object) -> Actor | None:
    """The `Actor` of what an actor source returned (None: nobody is authenticated)."""
    if value is None:
        return None
    if isinstance(value, Actor):
        return value
    if isinstance(value, str):
        return Actor(id=value) if value else None
    if isinstance(value, Mapping):
        return Actor.model_validate(dict(value))
    raise TypeError(
        f"The actor source returned a {type(value).__name__}; return an aegis_sdk.Actor, a mapping with 'id' "
        "(and optionally 'type'), an id string, or None when nobody is authenticated."
    )


def _to_context(value: object) -> Context:
    if value is None:
        return Context()
    if isinstance(value, Context):
        return value
    if isinstance(value, Mapping):
        return Context.model_validate(dict(value))
    raise TypeError(
        f"The context source returned a {type(value).__name__}; return an aegis_sdk.Context, a mapping "
        "with 'session_id' and/or 'metadata', or None."
    )


class DecisionFlow:
    """The flow as a part of `Aegis`, which sets these attributes (users may change them later)."""

    confirmation_header: str
    fail_open: bool
    retry_after: int
    review_retry_after: int
    status_route: str | None  # the route name of `Aegis.status_router()`, once one was made

    def status_url(self, request: Request, decision_id: str) -> str | None:
        """The absolute URL of `decision_id`'s status route in the app serving `request`, or None when that
        app mounts none."""
        if self.status_route is None:
            return None
        router = request.scope.get("router") or getattr(request.scope.get("app"), "router", None)
        if router is None:
            return None
        try:
            # Through the app's router rather than `request.url_for`: ahead of routing (in AegisMiddleware)
            # the Starlette of older FastAPI has no scope["router"] yet, and `url_for` needs it.
            path = router.url_path_for(self.status_route, decision_id=decision_id)
        except NoMatchFound:
            return None
        return str(path.make_absolute_url(base_url=request.base_url))

    def _verdict(self, decision: Decision, request: Request, request_id: str) -> Decision:
        link = self.status_url(request, decision.decision_id) if decision.outcome == "ESCALATE" else None
        return verdict(
            decision,
            request_id,
            self.confirmation_header,
            status_url=link,
            review_retry_after=self.review_retry_after,
        )

    async def decide(
        self,
        client: AsyncAegisClient,
        *,
        inputs: RouteInputs,
        capability: CapabilitySource,
        parameters: ParametersSource | None,
        actor: object,
        context: object,
        confirmation: str | None,
        request_id: str,
    ) -> Decision:
        """The whole flow for one request, in its span `aegis.govern`; returns an ALLOW decision or raises
        `AegisRefusal`. The span covers the decision only (the endpoint runs after it)."""
        attributes: dict[str, AttributeValue] = {}
        if isinstance(capability, str):
            attributes["aegis.capability"] = capability
        if inputs.route != inputs.request.url.path or not inputs.path_params:  # a template, not a raw path
            attributes["http.route"] = inputs.route
        with GovernSpan("aegis_fastapi", _VERSION, "fastapi", attributes) as govern:
            try:
                decision = await self._decide(
                    client, inputs, capability, parameters, actor, context, confirmation, request_id, govern
                )
            except AegisRefusal as refused:
                govern.refused(refused, refused.decision)
                raise
            govern.decided(decision)
            return decision

    async def _decide(
        self,
        client: AsyncAegisClient,
        inputs: RouteInputs,
        capability: CapabilitySource,
        parameters: ParametersSource | None,
        actor: object,
        context: object,
        confirmation: str | None,
        request_id: str,
        govern: GovernSpan,
    ) -> Decision:
        try:
            who = to_actor(actor)
            ctx = _to_context(context)
        except (TypeError, ValueError) as exc:  # the app's auth or context source: its set-up, not the caller
            raise app_misconfigured("actor or context source", exc, request_id, retry_after=self.retry_after) from None
        if who is None:
            raise refusal(
                401,
                "actor_required",
                "This route is governed and needs an authenticated caller; the app's actor dependency found "
                "none. Authenticate and try again.",
                request_id,
            )
        name = capability if isinstance(capability, str) else await maybe_await(capability(inputs))
        govern.set("aegis.capability", name)
        try:
            values = dict(await maybe_await(parameters(inputs))) if parameters else inputs.default_parameters()
        except ParameterConflict as exc:
            raise refusal(422, "invalid_parameters", str(exc), request_id) from None
        metadata = {"route": inputs.route, "method": inputs.request.method, "request_id": request_id}
        metadata.update(ctx.metadata)
        try:
            ctx = Context(session_id=ctx.session_id, metadata=metadata)
            action = Action(capability=name, parameters=values)
        except ValueError as exc:  # e.g. a capability name made of a path parameter that cannot be one
            raise invalid_proposal(exc, request_id) from None
        if confirmation is None:
            try:
                decision = await client.propose(who, action, ctx)
            except AegisError as exc:
                return self._on_error(exc, name, request_id)
            return self._verdict(decision, inputs.request, request_id)
        return await self._confirm(client, who, action, ctx, confirmation.strip(), inputs.request, request_id)

    def _on_error(self, exc: AegisError, capability: str, request_id: str) -> Decision:
        return refusal_of_error(exc, capability, request_id, fail_open=self.fail_open, retry_after=self.retry_after)

    async def _confirm(
        self,
        client: AsyncAegisClient,
        actor: Actor,
        action: Action,
        context: Context,
        named: str,
        request: Request,
        request_id: str,
    ) -> Decision:
        header = self.confirmation_header
        if not DECISION_ID.match(named):
            raise refusal(
                409,
                "confirmation_invalid",
                f"{header} must be the decision_id of the answer that asked for confirmation (dec_...).",
                request_id,
            )
        try:
            original = await client.decisions.get(named)
        except NotFoundError:
            raise refusal(
                409,
                "confirmation_invalid",
                f"No decision {named} exists. Repeat the request without {header} to propose it again.",
                request_id,
            ) from None
        except AegisError as exc:
            return self._on_error(exc, action.capability, request_id)
        status = original.review.status if original.review is not None else None
        awaiting = original.outcome == "REQUIRE_CONFIRMATION" or (
            original.outcome == "ESCALATE" and status == "approved"
        )
        if awaiting:
            if not original.confirmation_token:
                raise refusal(
                    409,
                    "confirmation_invalid",
                    f"Decision {named} carries no confirmation token. Repeat the request without {header}.",
                    request_id,
                    original,
                )
            try:
                decision = await client.propose(actor, action, context, confirmation_token=original.confirmation_token)
            except ConfirmationError as exc:
                raise confirmation_rejected(exc, original, request_id, header) from None
            except AegisError as exc:
                return self._on_error(exc, action.capability, request_id)
            return self._verdict(decision, request, request_id)
        if original.outcome == "ESCALATE" and status == "pending":
            raise review_still_pending(
                original,
                request_id,
                header,
                status_url=self.status_url(request, named),
                review_retry_after=self.review_retry_after,
            )
        if status in ("denied", "expired"):
            raise refusal(
                403,
                "review_denied" if status == "denied" else "review_expired",
                f"The review of decision {named} was {status}; the action will not run. Propose again by "
                f"repeating the request without {header}.",
                request_id,
                original,
                show_reason=False,
            )
        if original.outcome == "DENY":
            raise refusal(
                403,
                "governance_denied",
                f"Decision {named} denied this action.",
                request_id,
                original,
                show_reason=False,
            )
        raise refusal(
            409,
            "confirmation_invalid",
            f"Decision {named} is not awaiting confirmation (outcome {original.outcome}). Repeat the request "
            f"without {header} to propose it again.",
            request_id,
            original,
            show_reason=False,
        )


__all__ = [
    "DECISION_ID",
    "ActorLike",
    "CapabilitySource",
    "ContextLike",
    "DecisionFlow",
    "ParametersSource",
    "maybe_await",
    "request_id_of",
    "to_actor",
]
